"""The `flexedge` command line."""
