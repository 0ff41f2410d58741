"""`flexedge prequalify`: drive one device through a standard activation profile and measure
how it follows, before it is offered to a market (TSOs ask for such a test for balancing
reserves).

The device is driven through its own driver, sampled 10 times a second. When the site's
daemon answers on the broker, the test refuses while the device carries a commitment, and
otherwise has the daemon hold it out of dispatch (not written at all) for the test, and
releases it after; with `--no-daemon` (or no daemon answering) nothing else may drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flexedge.config.device_kinds import Battery, FlexibleLoad, Generator
from flexedge.config.loader import Site
from flexedge.drivers.factory import build_device
from flexedge.errors import BrokerError, DeviceError, FlexedgeError
from flexedge.mqtt import RequestTimeout, request
from flexedge.tools.prequalify.analysis import Profile, Sample, build_profile, target_at

log = logging.getLogger(__name__)

SAMPLE_S = 0.1
REWRITE_S = 1.0  # the setpoint is written again this often (the device's lease, heartbeat)


class PrequalifyRefused(FlexedgeError):
    """The test cannot run now; the message says why."""


@dataclass(frozen=True)
class Run:
    device: str
    kind: str
    profile_name: str
    profile: Profile
    samples: list[Sample]
    daemon: str  # "held by the daemon", or why no daemon took part


def profile_for(site: Site, name: str, kind: str, hold_s: float, base_kw: float) -> Profile:
    """The profile in site kW: a battery from idle to its full discharge and charge; a
    generator from stopped to its maximum and its minimum; a load from its demand (`base_kw`)
    to its firm part, and to what it may draw more."""
    device = next(d for d in site.config.devices if d.name == name)
    if isinstance(device, Battery):
        return build_profile(kind, device.max_discharge_kw, -device.max_charge_kw, hold_s)
    if isinstance(device, Generator):
        return build_profile(kind, device.max_kw, device.min_kw, hold_s)
    assert isinstance(device, FlexibleLoad)
    shed = -base_kw * device.curtailable_share  # base_kw < 0: it draws
    return build_profile(kind, shed, -device.max_extra_kw, hold_s, base_kw=base_kw)


async def _ask(site: Site, command: str, body: dict[str, Any]) -> dict[str, Any]:
    mqtt = site.config.mqtt
    base = f"{mqtt.prefix}/{site.config.site}"
    reply = await request(
        mqtt.broker(),
        f"{base}/cmd/{command}",
        json.dumps(body).encode(),
        f"{base}/cmd-reply/{uuid.uuid4().hex}",
        timeout=3.0,
    )
    answer: dict[str, Any] = json.loads(reply)
    return answer


async def _take_from_daemon(site: Site, name: str, for_s: float) -> str:
    try:
        open_now = await _ask(site, "commitments", {})
    except (BrokerError, RequestTimeout, OSError) as exc:
        return f"no daemon answered ({exc}): nothing else may drive {name} during the test"
    busy = [c["id"] for c in open_now.get("commitments", []) if name in c["assets"]]
    if busy:
        raise PrequalifyRefused(f"{name} carries commitments {', '.join(busy)}: try after them")
    held = await _ask(site, "hold", {"device": name, "kw": None, "for_s": for_s})
    if not held.get("ok"):
        raise PrequalifyRefused(f"the daemon would not hold {name}: {held.get('error')}")
    return "held out of dispatch by the daemon"


async def run_profile(
    site: Site, name: str, kind: str, hold_s: float, use_daemon: bool = True
) -> Run:
    device_config = next((d for d in site.config.devices if d.name == name), None)
    if device_config is None:
        known = ", ".join(d.name for d in site.config.devices)
        raise PrequalifyRefused(f"unknown device {name!r}; known: {known}")
    device = build_device(device_config, site.maps[name], mqtt=site.config.mqtt)
    try:
        await device.connect()
        first = await device.read()
        if not first.available:
            raise PrequalifyRefused(f"{name} says it is not available")
        profile = profile_for(site, name, kind, hold_s, first.p_kw)
        duration = profile[-1][0]
        how = "not asked (--no-daemon)"
        if use_daemon:
            how = await _take_from_daemon(site, name, duration + 30)
        await device.configure_lease(max(10.0, 5 * REWRITE_S))
        samples = await _drive(
            device, profile, duration, release=isinstance(device_config, FlexibleLoad)
        )
        return Run(name, device_config.kind_name, kind, profile, samples, how)
    except DeviceError as exc:
        raise PrequalifyRefused(str(exc)) from None
    finally:
        try:
            safe = None if isinstance(device_config, FlexibleLoad) else 0.0
            await device.write_setpoint(safe)
        except DeviceError:
            log.warning("%s: could not be set back to its safe state", name)
        await device.close()
        if use_daemon:
            with contextlib.suppress(BrokerError, RequestTimeout, OSError):
                await _ask(site, "release", {"device": name})


async def _drive(device: Any, profile: Profile, duration: float, release: bool) -> list[Sample]:
    """Write the profile's target (again every REWRITE_S) and sample every SAMPLE_S."""
    samples: list[Sample] = []
    start = time.monotonic()
    written: float | None = None
    written_at = -REWRITE_S
    base = profile[0][1]
    tick = 0
    while (t := time.monotonic() - start) <= duration:
        target = target_at(profile, t)
        if target != written or t - written_at >= REWRITE_S:
            # A load at its own demand is released, not capped there.
            await device.write_setpoint(None if release and target == base else target)
            written, written_at = target, t
        reading = await device.read()
        samples.append((time.monotonic() - start, reading.p_kw))
        tick += 1
        # The test's own pace: each sample at its slot of the 10-Hz grid.
        await asyncio.sleep(max(0.0, start + tick * SAMPLE_S - time.monotonic()))
    return samples
