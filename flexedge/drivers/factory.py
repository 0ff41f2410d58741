"""Build the driver for a site-file device from its transport."""

from __future__ import annotations

from flexedge.config.registermap import LoadedMap
from flexedge.config.schema import Device as DeviceConfig
from flexedge.config.schema import MqttSettings
from flexedge.drivers.base import Device
from flexedge.drivers.modbus_rtu import ModbusRtuDevice
from flexedge.drivers.modbus_tcp import ModbusTcpDevice
from flexedge.drivers.mqtt_device import MqttJsonDevice


def build_device(
    device: DeviceConfig, register_map: LoadedMap, *, mqtt: MqttSettings | None = None
) -> Device:
    """`mqtt` is the site broker (SiteConfig.mqtt), which transport mqtt devices use unless
    their mqtt_device section names another; without it they must name one."""
    if device.transport == "mqtt":
        return MqttJsonDevice.from_config(device, mqtt)
    if device.transport == "modbus-tcp":
        return ModbusTcpDevice.from_config(device, register_map)
    if device.transport == "modbus-rtu":
        return ModbusRtuDevice.from_config(device, register_map)
    raise ValueError(f"no driver for transport {device.transport!r}")
