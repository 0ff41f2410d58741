"""Run flexedge commands as child processes (the demo, the benchmarks and the tests)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


def spawn_flexedge(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """`flexedge ARGS` with this interpreter, its output appended to `log_path`.

    It runs in the caller's directory, as from a shell: this interpreter finds the package
    wherever it is installed (no source tree needed), and paths in ARGS are taken as given."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flexedge", *args],
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
