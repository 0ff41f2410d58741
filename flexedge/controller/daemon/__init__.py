"""The site daemon: the shell around the pure core (devices, market desk, store, outbox)."""
