"""The control loop, split by concern behind a thin tick (loop.py):

- device_io: reads and writes with health, back-off, leases, one request in flight per device;
- metering: samples against baselines, per commitment and per slot;
- dispatcher: the core's plan, turned into writes and logged;
- reporting: finished commitments and slots closed into delivery reports and measurements;
- commitments: the open commitments and their metered progress, which all of them share.
"""

from flexedge.controller.daemon.control.loop import ControlLoop

__all__ = ["ControlLoop"]
