"""Every bundled site file loads, and its maps fit its devices' kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexedge.config.loader import load_site

SITES = sorted(
    (Path(__file__).resolve().parents[2] / "flexedge" / "config" / "sites").glob("*.yaml")
)


@pytest.mark.parametrize("path", SITES, ids=[p.stem for p in SITES])
def test_bundled_site_loads(path: Path) -> None:
    site = load_site(path)
    for device in site.config.devices:
        if device.transport != "mqtt":
            assert site.maps[device.name].spec.kind == device.kind


def test_full_site_has_every_kind_and_transport() -> None:
    site = load_site(Path(__file__).resolve().parents[2] / "flexedge/config/sites/full-site.yaml")
    kinds = {(d.kind, d.transport) for d in site.config.devices}
    assert {"battery", "flexible_load", "generator"} <= {k for k, _ in kinds}
    assert {"modbus-tcp", "mqtt"} <= {t for _, t in kinds}
