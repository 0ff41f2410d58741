"""Run flexedge commands as child processes (the demo, the benchmarks and the tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def spawn_flexedge(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`flexedge ARGS` with this interpreter, its output appended to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flexedge.cli.main", *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM (flexedge puts its devices in their safe state), then SIGKILL after a grace."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
