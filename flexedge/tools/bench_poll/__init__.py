"""`flexedge bench poll`: how many devices one gateway polls at 1 Hz.

For each N, N simulated batteries are served by a separate process (so their CPU is not
counted as the controller's; it is measured and shown on its own) and polled twice in the
same run, one after the other:

* flexedge: the real ControlLoop with a 1-s tick and no commitments. Every tick polls every
  device, meters, dispatches (writes each device's setpoint and the heartbeat, reads it back)
  and logs telemetry and setpoints to SQLite, like `flexedge run` does.
* bare pymodbus: the raw floor. One AsyncModbusTcpClient per device reads the same register
  blocks as the driver's read plan, all devices concurrently, no decoding, no logging.

Per tick: jitter = from the tick's scheduled time until all of its readings were in, and how
many devices were read. Per run: CPU time of this process over wall time (% of one core; the
controller is one asyncio thread, so 100 % is its ceiling even on a 2-core machine).

Modules: simulator_process.py (the simulators' process), schedule.py (the 1 Hz grid and
PollStats), pollers.py (flexedge and bare pymodbus), benchmark.py (the site and the table).
"""

from flexedge.tools.bench_poll.benchmark import (
    DEFAULT_DEVICES,
    DEFAULT_SECONDS,
    bench_poll,
    run_poll_bench,
)
from flexedge.tools.bench_poll.schedule import PollStats

__all__ = ["DEFAULT_DEVICES", "DEFAULT_SECONDS", "PollStats", "bench_poll", "run_poll_bench"]
