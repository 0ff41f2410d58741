"""Checks across a whole site file that field types cannot make: names used twice, references
to devices that do not exist, devices that cannot share a serial bus or a state topic."""

from __future__ import annotations

from flexedge.config.device_base import DeviceBase
from flexedge.config.device_kinds import FlexibleLoad
from flexedge.config.schema import SiteConfig


def reference_problems(config: SiteConfig) -> list[tuple[str, str]]:
    """Cross-references the field types cannot check, as (field path, problem)."""
    problems: list[tuple[str, str]] = []
    names = [d.name for d in config.devices]
    for index, name in enumerate(names):
        if name in names[:index]:
            problems.append((f"devices[{index}].name", f"device name {name!r} is used twice"))
    for asset in config.asset_registry:
        if asset not in names:
            problems.append((f"asset_registry.{asset}", f"{asset!r} is not a device"))
    buses: dict[str, tuple[DeviceBase, set[int]]] = {}
    for index, device in enumerate(config.devices):
        if device.serial is None:
            continue
        # One port is one bus: one speed and format, one simulator end, distinct unit ids.
        where = f"devices[{index}] ({device.name})"
        first, units = buses.setdefault(device.serial.port, (device, set()))
        if first.serial != device.serial:
            problems.append(
                (
                    f"{where}.serial",
                    f"line settings differ from {first.name!r} "
                    f"on the same port {device.serial.port}",
                )
            )
        elif first.simulator.serial_port != device.simulator.serial_port:
            problems.append(
                (f"{where}.simulator.serial_port", f"differs from {first.name!r} on the same port")
            )
        elif device.unit_id in units:
            problems.append(
                (f"{where}.unit_id", f"unit {device.unit_id} is used twice on {device.serial.port}")
            )
        units.add(device.unit_id)
    # Two devices reading one state topic would count the same power twice.
    state_topics: dict[tuple[str | None, int | None, str], str] = {}
    for index, device in enumerate(config.devices):
        md = device.mqtt_device
        if md is None or device.transport != "mqtt":
            continue
        first_name = state_topics.setdefault((md.host, md.port, md.state_topic), device.name)
        if first_name != device.name:
            problems.append(
                (
                    f"devices[{index}] ({device.name}).mqtt_device.state_topic",
                    f"{md.state_topic!r} is already {first_name!r}'s state topic",
                )
            )
    for index, device in enumerate(config.devices):
        if device.response.delay_s * 2 > config.slot_seconds:
            problems.append(
                (
                    f"devices[{index}] ({device.name}).response.delay_s",
                    f"{device.response.delay_s:g} s is more than half a slot "
                    f"({config.slot_seconds} s): the device would answer a commitment "
                    "too late to deliver it",
                )
            )
        if not isinstance(device, FlexibleLoad) or device.control != "relay":
            continue
        for name in ("relay_min_on_s", "relay_min_off_s"):
            value: float = getattr(device, name)
            if value > config.slot_seconds:
                problems.append(
                    (
                        f"devices[{index}] ({device.name}).{name}",
                        f"{value:g} s is longer than a slot ({config.slot_seconds} s): "
                        "the relay could not be switched back within a commitment's window",
                    )
                )
    seen: set[str] = set()
    for index, tariff in enumerate(config.tariffs):
        if tariff.id in seen:
            problems.append((f"tariffs[{index}].id", f"tariff id {tariff.id!r} is used twice"))
        seen.add(tariff.id)
        for asset in tariff.assets:
            if asset not in names:
                problems.append(
                    (f"tariffs[{index}] ({tariff.id}).assets", f"{asset!r} is not a device")
                )
        # The same bound `flexedge order` is held to: a price no market pays is a typo.
        most = config.limits.max_price_per_kwh
        prices = [("price_per_kwh", tariff.price_per_kwh)]
        if tariff.second_order is not None:
            prices.append(("second_order.price_per_kwh", tariff.second_order.price_per_kwh))
        for field, price in prices:
            if not abs(price) <= most:
                problems.append(
                    (
                        f"tariffs[{index}] ({tariff.id}).{field}",
                        f"{price:g} is beyond limits.max_price_per_kwh ({most:g}, either sign)",
                    )
                )
    return problems
