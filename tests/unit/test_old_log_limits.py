"""What older flexedge versions let in before the limits: a log with an open commitment in the
year 9999 no longer breaks a restart, `status` or `flexedge report`; a site file whose order
price is beyond the limits is a configuration error naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from flexedge.config.loader import load_site
from flexedge.controller.core.model import Commitment, RefType
from flexedge.controller.daemon.daemon import Daemon
from flexedge.errors import ConfigProblems
from flexedge.tools.scorecard import build_scorecard, open_log
from flexedge.tools.scorecard.render import render_text
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import Clock, fake_site

YEAR_9999 = datetime(9999, 12, 31, 23, 59, tzinfo=UTC).timestamp()


def test_a_far_future_commitment_in_an_old_log_is_dropped_at_start(tmp_path: Path) -> None:
    clock = Clock(T0)
    site = fake_site(tmp_path)
    daemon = Daemon(site, clock, devices={"b1": FakeDevice("b1", clock, soc=0.5)})
    far = Commitment(
        "old",
        "old",
        RefType.BALANCING_CONTROL,
        YEAR_9999,
        YEAR_9999 + 900,
        0.1,
        0.1,
        (("b1", 1.0),),
    )
    with daemon.store.transaction():  # as an older flexedge wrote it
        daemon.store.save_commitment(far, None, T0 - 60)
    try:
        daemon.market.restore()
        run(daemon.control.tick())
        status = daemon.commands.status()
        state = daemon.store.db.execute("SELECT state FROM commitments").fetchone()[0]
        [event] = daemon.store.db.execute(
            "SELECT detail FROM events WHERE kind = 'commitment-dropped'"
        ).fetchall()
    finally:
        daemon.store.close()
    assert status["ok"] and status["open_commitments"] == []
    assert state == "dropped" and "horizon" in event[0]
    with open_log(site.log_db_path) as conn:
        card = build_scorecard(conn, site.log_db_path)
    [line] = card.lines
    assert line.status == "dropped"
    assert "9999-12-31 23:59:00.000" in render_text(card)  # the report renders that log


def test_a_site_file_order_price_beyond_the_limits_is_a_config_error(tmp_path: Path) -> None:
    path = fake_site(tmp_path).path
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["tariffs"][0]["price_per_kwh"] = 1e6
    raw["tariffs"][0]["second_order"] = {"exercise_ratio": -0.5, "price_per_kwh": -50.0}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigProblems) as caught:
        load_site(path)
    said = {p.field: p.problem for p in caught.value.problems}
    assert "beyond limits.max_price_per_kwh (10" in said["tariffs[0] (tariff-1).price_per_kwh"]
    assert "tariffs[0] (tariff-1).second_order.price_per_kwh" in said
