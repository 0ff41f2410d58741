"""Device drivers: thin adapters behind one small device interface, one per transport."""
