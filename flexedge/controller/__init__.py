"""flexedge controller: the daemon, its pure core and the shell around it."""

__version__ = "0.1.0"
