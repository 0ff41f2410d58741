"""Site configuration: the pydantic schema, bundled register maps, example sites, systemd unit."""
