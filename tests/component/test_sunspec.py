"""The bundled SunSpec storage map, checked against pysunspec2, the SunSpec Alliance's client.

pysunspec2 was not written for flexedge: if it scans the simulator and finds the models and
values, the map is standard; if flexedge's driver then drives the same simulator through the
same map, the map is also usable by flexedge. Real sockets on 127.0.0.1; pysunspec2 is
blocking, so it runs in a thread (asyncio.to_thread) while the simulator serves on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sunspec2 import device as sunspec_device
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from flexedge.config.loader import Site, load_site
from flexedge.config.registermap import decode, load_map, resolve_map_path
from flexedge.drivers.modbus_tcp import ModbusTcpDevice
from flexedge.errors import ConfigError, DeviceUnavailable
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.modbus_server import SiteSimulator, serve_site
from tests.support.harness import FakeClock, run, wait_for_async, write_site_file

T = TypeVar("T")
MAP_PATH = resolve_map_path("sunspec_storage")
WAIT_S = 10.0  # bound on any one blocking pysunspec2 call

SITE = """\
site: sunspec-site
devices:
  - name: b1
    port: 5020
    unit_id: 1
    timeout_s: 0.5
    register_map: sunspec_storage
    capacity_kwh: 10
    soc_min: 0.1
    soc_max: 0.9
    max_charge_kw: 4
    max_discharge_kw: 5
    charge_efficiency: 0.9
    discharge_efficiency: 0.8
    setpoint_timeout_s: 10
    simulator: {initial_soc: 0.6}
"""

# Where each model starts (its ID register) and, for flexedge's points, the SunSpec point each
# one must be: checked against pysunspec2's own model definitions, not against our comments.
MODEL_AT = {1: 40002, 103: 40070, 120: 40122, 124: 40150}
SUNSPEC_POINT = {
    "power": (103, "W"),
    "w_sf": (103, "W_SF"),
    "max_discharge_power": (120, "MaxDisChaRte"),
    "max_discharge_sf": (120, "MaxDisChaRte_SF"),
    "max_charge_power": (124, "WChaMax"),
    "storage_control_mode": (124, "StorCtl_Mod"),
    "soc": (124, "ChaState"),
    "power_setpoint": (124, "OutWRte"),
    "power_setpoint_charge_side": (124, "InWRte"),
    "setpoint_timeout": (124, "InOutWRte_RvrtTms"),
    "grid_charging": (124, "ChaGriSet"),
    "max_charge_sf": (124, "WChaMax_SF"),
    "soc_sf": (124, "ChaState_SF"),
    "rate_sf": (124, "InOutWRte_SF"),
}


def offsets(model_id: int) -> dict[str, int]:
    """SunSpec point name -> register offset from the model's ID register (pysunspec2's defs);
    "end" -> the offset just past the model."""
    found: dict[str, int] = {}
    offset = 0
    for point in sunspec_device.get_model_def(model_id)["group"]["points"]:
        found[point["name"]] = offset
        offset += point["size"]
    return {**found, "end": offset}


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return load_site(write_site_file(tmp_path, SITE))


@contextlib.asynccontextmanager
async def served(
    site: Site, clock: FakeClock
) -> AsyncIterator[tuple[SiteSimulator, ModbusTcpDevice]]:
    sim = await serve_site(site, port=0, clock=clock)
    host, port = sim.address("b1")
    device = ModbusTcpDevice.from_config(
        site.config.device("b1"), site.maps["b1"], host=host, port=port
    )
    try:
        yield sim, device
    finally:
        await device.close()
        await sim.stop()


class Scanner:
    """pysunspec2 on the simulator's port; every call runs in a thread, bounded."""

    def __init__(self, port: int) -> None:
        self.client = SunSpecModbusClientDeviceTCP(
            slave_id=1, ipaddr="127.0.0.1", ipport=port, timeout=2
        )

    async def call(self, blocking: Callable[[], T]) -> T:
        return await asyncio.wait_for(asyncio.to_thread(blocking), WAIT_S)

    async def scan(self) -> None:
        await self.call(self.client.scan)

    async def model(self, model_id: int) -> Any:
        """A scanned model, read again from the device now."""
        model = self.client.models[model_id][0]
        await self.call(model.read)
        return model


# -- the map on its own ---------------------------------------------------------------------


def test_map_loads_and_every_register_of_every_model_is_declared_once() -> None:
    loaded = load_map(MAP_PATH)
    spec = loaded.spec
    fixed = spec.fixed_registers()
    assert [fixed[("holding", a)] for a in (40000, 40001)] == [0x5375, 0x6E53]  # "SunS"
    owned = list(fixed)
    for point in spec.points.values():
        assert point.table == "holding"
        owned += [(point.table, a) for a in range(point.address, point.address + point.width)]
    assert sorted(owned) == [("holding", a) for a in range(40000, 40178)]  # no gap, no overlap
    for model_id, address in MODEL_AT.items():
        length = offsets(model_id)["end"] - 2  # SunSpec's L excludes the ID and L registers
        assert (fixed[("holding", address)], fixed[("holding", address + 1)]) == (model_id, length)
    assert (fixed[("holding", 40176)], fixed[("holding", 40177)]) == (0xFFFF, 0)  # end model
    # The device-side lease and the setpoint window are wired as the comments say.
    setpoint = loaded.point("power_setpoint")
    assert setpoint.scale_point == "max_charge_power"
    assert setpoint.write_with == ("power_setpoint_charge_side",)
    assert [(w.point, w.value) for w in spec.init_writes] == [
        ("storage_control_mode", 3.0),
        ("grid_charging", 1.0),
    ]


def test_points_sit_on_the_standard_sunspec_registers() -> None:
    loaded = load_map(MAP_PATH)
    assert set(loaded.spec.points) == set(SUNSPEC_POINT)
    for name, (model_id, sunspec_name) in SUNSPEC_POINT.items():
        assert loaded.point(name).address == MODEL_AT[model_id] + offsets(model_id)[sunspec_name]


def test_percentage_points_are_shares_of_their_scale_point() -> None:
    loaded = load_map(MAP_PATH)
    out, into = loaded.point("power_setpoint"), loaded.point("power_setpoint_charge_side")
    # OutWRte 75.00 % (sf -2) of a 4 kW WChaMax is 3 kW discharge; InWRte -75 % says the same.
    assert decode(out, [7500], -2, base=4.0) == pytest.approx(3.0)
    assert decode(into, [(-7500) & 0xFFFF], -2, base=4.0) == pytest.approx(3.0)


# -- pysunspec2 against the simulator ------------------------------------------------------


def test_pysunspec2_scans_the_simulator_and_sees_the_model(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, device):
            scanner = Scanner(sim.address("b1")[1])
            await scanner.scan()
            found = {
                mid: models[0]
                for mid, models in scanner.client.models.items()
                if isinstance(mid, int)
            }
            assert {mid: m.model_addr for mid, m in found.items()} == MODEL_AT
            assert all(m.error_info == "" for m in found.values())
            common = found[1]
            assert (common.Mn.value, common.Md.value) == ("flexedge", "sim-battery")
            assert common.SN.value == "flexedge-sim"
            assert common.Opt.value is None  # unimplemented string
            inverter, storage = found[103], found[124]
            assert inverter.W.cvalue == 0
            assert inverter.Hz.value is None  # unimplemented uint16
            assert storage.ChaState.cvalue == pytest.approx(60.0)
            assert storage.WChaMax.cvalue == pytest.approx(4000.0)
            assert found[120].MaxDisChaRte.cvalue == pytest.approx(5000.0)
            assert storage.StorCtl_Mod.value == 0  # flexedge has not connected yet

            # Discharge commanded through flexedge's driver: pysunspec2 sees the new power.
            await device.write_setpoint(3.0)
            model = sim.model("b1", BatteryModel)
            assert model.p_kw == 3.0
            inverter = await scanner.model(103)
            assert inverter.W.cvalue == pytest.approx(model.p_kw * 1000)
            storage = await scanner.model(124)
            assert (storage.StorCtl_Mod.value, storage.ChaGriSet.value) == (3, 1)  # init_writes
            assert (storage.OutWRte.cvalue, storage.InWRte.cvalue) == (75.0, -75.0)

            # Then a charge, and time passes: SoC and W still match the simulated battery.
            await device.configure_lease(600)
            await device.write_setpoint(-2.5)
            clock.now += 360.0
            inverter, storage = await scanner.model(103), await scanner.model(124)
            assert inverter.W.cvalue == pytest.approx(-2500.0)
            assert model.soc == pytest.approx(0.6 + 2.5 * 0.9 * 360 / 3600 / 10)
            assert storage.ChaState.cvalue == pytest.approx(model.soc * 100, abs=0.01)

    run(body())


def test_pysunspec2_writes_outwrte_and_the_simulator_follows(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()) as (sim, _):
            scanner = Scanner(sim.address("b1")[1])
            await scanner.scan()
            storage = scanner.client.models[124][0]
            storage.OutWRte.cvalue = 50.0  # 50 % of WChaMax (4 kW): discharge 2 kW
            await scanner.call(storage.write)
            assert sim.model("b1", BatteryModel).setpoint_kw == pytest.approx(2.0)
            storage = await scanner.model(124)
            assert storage.InWRte.cvalue == -50.0  # the simulator mirrors the window
            assert (await scanner.model(103)).W.cvalue == pytest.approx(2000.0)

    run(body())


# -- flexedge's driver through the same map -------------------------------------------------


def test_flexedge_driver_reads_and_writes_through_the_sunspec_map(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, device):
            # Every point sits inside declared SunSpec blocks: one request reads them all.
            assert len(device.read_plan) == 1
            await device.connect()
            reading = await device.read()
            assert (reading.p_kw, reading.setpoint_kw) == (0.0, 0.0)
            assert reading.soc == pytest.approx(0.6)
            points = await device.read_points()
            assert (points["max_charge_power"], points["max_discharge_power"]) == (4.0, 5.0)
            assert (points["storage_control_mode"], points["grid_charging"]) == (3.0, 1.0)

            assert await device.configure_lease(2) is True
            model = sim.model("b1")
            assert model.timeout_s == 2.0
            await device.write_setpoint(4.5)  # 112.5 % of WChaMax: above the charge rating
            reading = await device.read()
            assert (reading.p_kw, reading.setpoint_kw) == (4.5, 4.5)
            assert model.p_kw == 4.5
            clock.now += 2.1  # the lease (InOutWRte_RvrtTms) runs out
            reading = await device.read()
            assert (reading.p_kw, reading.setpoint_kw) == (0.0, 0.0)
            with pytest.raises(ValueError, match="does not fit"):
                await device.write_setpoint(2000.0)  # beyond an s16 percentage

    run(body())


def test_init_writes_are_repeated_after_the_device_restarts(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()) as (sim, device):
            await device.connect()
            await sim.stop()
            await wait_for_async(
                lambda: not device._client.connected, 5, "the driver to see the server close"
            )
            with pytest.raises(DeviceUnavailable):
                await device.read()
            await sim.start()  # a fresh register image: StorCtl_Mod is 0 again
            points = await device.read_points()  # reconnects, enables the window again
            assert points["storage_control_mode"] == 3.0
            await device.write_setpoint(-1.0)
            assert sim.model("b1").p_kw == -1.0

    run(body())


# -- bad variants of the map ----------------------------------------------------------------


def _variant(change: str) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(yaml.safe_load(MAP_PATH.read_text(encoding="utf-8")))
    points, constants = spec["points"], spec["constants"]
    if change == "constant_over_point":
        constants["stray"] = {"address": 40084, "type": "u16", "value": 7}  # on W
    elif change == "string_too_long":
        constants["manufacturer"]["value"] = "flexedge-" * 4  # 36 bytes in 16 registers
    elif change == "scale_point_missing":
        points["power_setpoint"]["scale_point"] = "w_max"
    elif change == "write_with_not_contiguous":
        points["power_setpoint"]["write_with"] = ["setpoint_timeout"]
    elif change == "init_write_read_only":
        spec["init_writes"][0]["point"] = "soc"
    elif change == "fill_not_whole":
        evt = next(u for u in spec["unimplemented"] if u["address"] == 40110)
        evt["count"] = 3  # Evt1..EvtVnd4 are u32: two registers each
    return spec


@pytest.mark.parametrize(
    ("change", "fields", "mentions"),
    [
        ("constant_over_point", {"constants.stray", "points.power"}, "holding register 40084"),
        ("string_too_long", {"constants.manufacturer"}, "36 bytes"),
        ("scale_point_missing", {"points.power_setpoint.scale_point"}, "w_max"),
        ("write_with_not_contiguous", {"points.power_setpoint.write_with"}, "contiguous"),
        ("init_write_read_only", {"init_writes[0].point"}, "soc"),
        ("fill_not_whole", {"unimplemented[16]"}, "whole number"),
    ],
)
def test_bad_variant_names_file_and_point(
    tmp_path: Path, change: str, fields: set[str], mentions: str
) -> None:
    path = tmp_path / "sunspec.yaml"
    path.write_text(yaml.safe_dump(_variant(change)), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_map(path)
    error = caught.value
    assert error.source == str(path)
    assert error.field in fields
    assert str(error).startswith(f"{path}: {error.field}: ")
    assert mentions in error.problem


def test_constant_overlap_names_the_other_owner(tmp_path: Path) -> None:
    path = tmp_path / "sunspec.yaml"
    path.write_text(yaml.safe_dump(_variant("constant_over_point")), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_map(path)
    blamed, problem = caught.value.field, caught.value.problem
    other = "'power'" if blamed == "constants.stray" else "'stray'"
    assert other in problem
