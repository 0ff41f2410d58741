"""A ControlLoop in the test's own process, against simulators the test starts itself: no
daemon, and no broker (its outbox's link is never connected)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import yaml

from flexedge.config.loader import Site
from flexedge.config.schema import MqttSettings
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.drivers.factory import build_device
from flexedge.mqtt import MqttLink
from flexedge.tools.harness.broker import free_port


@asynccontextmanager
async def offline_control(
    site: Site, db: Path, mqtt: MqttSettings | None = None
) -> AsyncIterator[ControlLoop]:
    """The site's drivers, a SQLite log at `db` and a control loop on the wall clock; the
    drivers are closed and the log with them on the way out."""
    devices = {d.name: build_device(d, site.maps[d.name], mqtt=mqtt) for d in site.config.devices}
    store = Store(db)
    link = MqttLink(host="127.0.0.1", port=1, client_id="unused")  # never connected
    control = ControlLoop(site, devices, store, Outbox(store, link, "x/y", time.time), time.time)
    try:
        yield control
    finally:
        for device in devices.values():
            await device.close()
        store.close()


def batteries_site(site: str, period_s: float, names: Sequence[str], **device: object) -> str:
    """A site file of 10-kWh, 5-kW batteries on free local ports (each with `device`'s
    extra fields), answering within 0.3 s."""
    return yaml.safe_dump(
        {
            "site": site,
            "control_period_s": period_s,
            "devices": [
                {
                    "name": name,
                    "host": "127.0.0.1",
                    "port": free_port(),
                    "timeout_s": 0.3,
                    "capacity_kwh": 10,
                    "max_charge_kw": 5,
                    "max_discharge_kw": 5,
                    **device,
                }
                for name in names
            ],
        }
    )
