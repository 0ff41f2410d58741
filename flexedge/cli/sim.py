"""`flexedge sim --config FILE`: serve every device of a site file until stopped.

modbus-tcp devices listen on host:port; modbus-rtu devices answer on simulator.serial_port,
the simulator's end of the serial line whose other end is the device's serial.port. mqtt
devices publish their state on the site broker, or on the `mqtt` broker when one is given
(simulators.mqtt_devices).

Entry points for the CLI wiring:

    def main_sim(site_path: Path, *, host: str | None = None, port: int | None = None,
                 mqtt: tuple[str, int] | None = None) -> None
        Blocking; returns after SIGINT or SIGTERM. Raises flexedge.errors.ConfigError for
        a bad site file or register map, PortUnavailable when a port cannot be bound.

    async def run_sim(site_path: Path, *, host: str | None = None, port: int | None = None,
                      stop: asyncio.Event | None = None,
                      on_started: Callable[[SiteSimulator], None] | None = None,
                      mqtt: tuple[str, int] | None = None) -> None
        The same inside a running loop. Without `stop` it waits for SIGINT/SIGTERM; with
        `stop` it returns once the event is set (tests, embedding).

`host` and `port` override every device's address from the file; port 0 puts each device on
a free port (logged). One log line per device says where it is served. `mqtt` (HOST, PORT)
lets `flexedge fault` switch device faults while running (simulators.fault_mqtt), those of
mqtt devices too, connecting with the site file's mqtt login and TLS; a broker that
cannot be reached raises flexedge.errors.BrokerError, a port that cannot be listened on
flexedge.errors.PortUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from flexedge.config.loader import load_site
from flexedge.simulators.devices.fault_mqtt import FaultControl
from flexedge.simulators.devices.modbus_server import SiteSimulator, serve_site
from flexedge.simulators.devices.mqtt_devices import MqttDeviceSimulator, serve_mqtt_devices

logger = logging.getLogger(__name__)


async def run_sim(
    site_path: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    stop: asyncio.Event | None = None,
    on_started: Callable[[SiteSimulator], None] | None = None,
    mqtt: tuple[str, int] | None = None,
) -> None:
    """Serve the site's simulated devices until `stop` is set or SIGINT/SIGTERM arrives.
    With `mqtt` (HOST, PORT), faults can be switched over MQTT (simulators.fault_mqtt) and
    the mqtt devices use that broker instead of the site's."""
    site = load_site(site_path)
    # mqtt devices are no Modbus servers: the Modbus simulator only gets the others.
    modbus = [d for d in site.config.devices if d.transport != "mqtt"]
    simulator = await serve_site(
        dataclasses.replace(
            site,
            config=site.config.model_copy(update={"devices": modbus}),
            maps={d.name: site.maps[d.name] for d in modbus},
        ),
        host=host,
        port=port,
    )
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows event loops; Ctrl-C then ends asyncio.run instead.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
                handled.append(signum)
    control: FaultControl | None = None
    mqtt_devices: MqttDeviceSimulator | None = None
    try:
        if len(modbus) < len(site.config.devices):
            mqtt_devices = await serve_mqtt_devices(site.config, mqtt=mqtt)
            for name, device in mqtt_devices.devices.items():
                logger.info(
                    "simulating %s on mqtt %s:%s (state %s, commands %s)",
                    name,
                    *mqtt_devices.address(name),
                    device.settings.state_topic,
                    device.settings.command_topic,
                )
        if mqtt is not None:
            # After the mqtt devices: fault control takes every device it will serve.
            # On the site broker's login and TLS: --mqtt moves the broker, not its
            # credentials.
            broker = dataclasses.replace(site.config.mqtt.broker(), host=mqtt[0], port=mqtt[1])
            control = FaultControl(simulator, site.config.site, broker, mqtt_devices=mqtt_devices)
            await control.start()
        for name in simulator.models:
            device_host, device_port = simulator.address(name)
            # Port 0 once started: a serial device, whose "host" is its serial port.
            where = f"{device_host}:{device_port}" if device_port else device_host
            logger.info("simulating %s on %s", name, where)
        if on_started is not None:
            on_started(simulator)
        await stop.wait()
        logger.info("stopping simulator")
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        if mqtt_devices is not None:
            await mqtt_devices.stop()
        if control is not None:
            await control.stop()
        await simulator.stop()


def main_sim(
    site_path: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    mqtt: tuple[str, int] | None = None,
) -> None:
    """Blocking entry for `flexedge sim --config FILE [--mqtt HOST:PORT]`."""
    asyncio.run(run_sim(site_path, host=host, port=port, mqtt=mqtt))
