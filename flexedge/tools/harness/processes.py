"""Run flexedge commands as child processes (the demo, the benchmarks and the tests)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO


def spawn_flexedge(
    args: list[str], log_path: Path, *, through_pipe: bool = False
) -> subprocess.Popen[bytes]:
    """`flexedge ARGS` with this interpreter, its output appended to `log_path`.

    It runs in the caller's directory, as from a shell: this interpreter finds the package
    wherever it is installed (no source tree needed), and paths in ARGS are taken as given.
    `through_pipe`: the child writes to a pipe that a thread here copies into the file, so
    its log survives a test that stops it writing files (a file-size limit)."""
    command = [sys.executable, "-m", "flexedge", *args]
    if through_pipe:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        threading.Thread(target=_copy, args=(process.stdout, log_path), daemon=True).start()
        return process
    with log_path.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _copy(pipe: IO[bytes], log_path: Path) -> None:
    with pipe, log_path.open("ab", buffering=0) as log:
        shutil.copyfileobj(pipe, log, 1)  # line by line as it comes, not in 64-kB blocks


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM (flexedge puts its devices in their safe state), then SIGKILL after a grace."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
