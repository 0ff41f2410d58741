"""The wire contract v1 between a site and its market."""
