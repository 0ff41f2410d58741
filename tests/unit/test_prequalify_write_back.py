"""`flexedge prequalify --write`: the measured figures go into the device's `response` block
as one line, leaving the rest of the site file (comments, layout, other devices) as it was,
and an edit that would not load writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexedge.config.loader import DEMO_SITE, load_site
from flexedge.controller.daemon.assets import asset_for
from flexedge.tools.prequalify.analysis import ResponseMeasured, Result, StepResponse, response_of
from flexedge.tools.prequalify.write_back import WriteBackRefused, edited, write_response

SITE = """\
site: s
slot_seconds: 30
devices:
  # the battery, as installed
  - name: b1
    kind: battery
    capacity_kwh: 10
    max_charge_kw: 5
    max_discharge_kw: 5
{extra}
  - name: b2
    kind: battery
    capacity_kwh: 10
    max_charge_kw: 5
    max_discharge_kw: 5
"""
FIGURES = ResponseMeasured(0.6, 4.7)


def test_a_new_response_line_goes_under_the_name() -> None:
    text = SITE.format(extra="")
    new = edited(text, "b1", FIGURES, "measured")
    assert new.splitlines()[5] == "    response: {delay_s: 0.6, ramp_kw_per_s: 4.7}  # measured"
    assert new.replace(new.splitlines()[5] + "\n", "") == text  # nothing else changed


@pytest.mark.parametrize(
    "old",
    [
        "    response: {delay_s: 2}",
        "    response:\n      delay_s: 2\n      ramp_kw_per_s: 1\n",
    ],
)
def test_an_old_response_block_is_replaced(old: str) -> None:
    new = edited(SITE.format(extra=old), "b1", FIGURES, "measured")
    assert "delay_s: 2" not in new and "ramp_kw_per_s: 1\n" not in new
    assert new.count("response:") == 1
    assert "  - name: b2\n    kind: battery" in new


def test_the_file_is_written_only_when_it_loads_with_the_figures(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(extra=""), encoding="utf-8")
    line = write_response(path, "b2", FIGURES, "measured")
    assert line == "response: {delay_s: 0.6, ramp_kw_per_s: 4.7}  # measured"
    device = next(d for d in load_site(path).config.devices if d.name == "b2")
    assert asset_for(device).response.delay_s == 0.6
    assert asset_for(device).response.ramp_kw_per_s == 4.7
    before = path.read_text(encoding="utf-8")
    with pytest.raises(WriteBackRefused, match=r"response\.delay_s"):
        write_response(path, "b1", ResponseMeasured(20.0, None), "measured")  # > half a slot
    assert path.read_text(encoding="utf-8") == before
    assert [p.name for p in tmp_path.iterdir()] == ["site.yaml"]  # no temporary left


def test_a_device_not_found_is_refused_with_the_line_to_add() -> None:
    with pytest.raises(WriteBackRefused, match=r"response: \{delay_s: 0\.6"):
        edited(SITE.format(extra=""), "nope", FIGURES, "measured")


def test_the_demo_site_takes_the_line_and_keeps_its_comments(tmp_path: Path) -> None:
    text = DEMO_SITE.read_text(encoding="utf-8")
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    write_response(path, "genset", ResponseMeasured(0.7, None), "measured")
    new = path.read_text(encoding="utf-8")
    assert len(new.splitlines()) == len(text.splitlines()) + 1
    assert [line for line in new.splitlines() if line.lstrip().startswith("#")] == [
        line for line in text.splitlines() if line.lstrip().startswith("#")
    ]


def step(delay: float | None, to_90: float | None, size: float = 5.0) -> StepResponse:
    return StepResponse(5.0, 0.0, size, delay, to_90, to_90, 0.0)


def test_the_figures_are_the_longest_delay_and_the_slowest_ramp() -> None:
    result = Result((step(0.6, 1.5), step(0.7, 2.4, size=-10.0)), (), (0, 0), (0, 0))
    figures = response_of(result, 0.1)
    assert figures is not None
    assert figures.delay_s == 0.7
    assert figures.ramp_kw_per_s == pytest.approx(0.85 * 5.0 / 0.9, abs=0.01)


def test_a_step_that_covers_its_change_at_once_gives_no_ramp() -> None:
    figures = response_of(Result((step(0.1, 0.1),), (), (0, 0), (0, 0)), 0.1)
    assert figures == ResponseMeasured(0.1, None)


def test_a_step_never_followed_gives_no_figures() -> None:
    assert response_of(Result((step(0.6, None),), (), (0, 0), (0, 0)), 0.1) is None
