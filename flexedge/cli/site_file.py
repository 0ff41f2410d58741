"""The site file as the commands take it: `--config FILE` with the `--mqtt`/`--db` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from flexedge.config.loader import Site, load_site
from flexedge.config.registermap import read_yaml


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def load(path: Path, mqtt: tuple[str, int] | None = None, db: Path | None = None) -> Site:
    """The site file with `--mqtt` (the broker's address; its credentials stay) and `--db`
    applied. Raises ConfigError naming the file for a missing or malformed one."""
    overrides: dict[str, object] = {}
    if mqtt is not None or db is not None:
        raw = read_yaml(path, "site file")
        section = raw.get("mqtt") if isinstance(raw, dict) else None
        if mqtt is not None:
            base = section if isinstance(section, dict) else {}
            overrides["mqtt"] = {**base, "host": mqtt[0], "port": mqtt[1]}
        if db is not None:
            overrides["log_db"] = str(db.resolve())
    return load_site(path, overrides)
