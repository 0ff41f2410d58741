"""`flexedge config check FILE`: validate a site file and its register maps, start nothing."""

from __future__ import annotations

import argparse
import sys

from flexedge.cli.exit_codes import CONFIG, OK
from flexedge.config.loader import load_site
from flexedge.errors import ConfigError, ConfigProblems


def cmd_config_check(args: argparse.Namespace) -> int:
    """Exit 0 with a one-line summary, or CONFIG with every problem, one a line."""
    try:
        site = load_site(args.file)
    except ConfigError as exc:
        problems = exc.problems if isinstance(exc, ConfigProblems) else [exc]
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        return CONFIG
    cfg = site.config
    print(
        f"{args.file}: OK: site {cfg.site}, {len(cfg.devices)} devices, {len(cfg.tariffs)} "
        f"tariffs, broker {cfg.mqtt.host}:{cfg.mqtt.port}, log {site.log_db_path}"
    )
    return OK
