"""`flexedge report` on a small hand-built log whose scores are known (the log and what it
holds: tests/support/report_log.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from flexedge.cli.main import main
from flexedge.tools.scorecard import build_scorecard, open_log
from tests.support.report_log import G1_BASELINE, build_log


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "site.sqlite"
    build_log(path).close()
    return path


def test_the_scorecard_has_the_known_values(log: Path) -> None:
    with open_log(log) as conn:
        card = build_scorecard(conn, log)
    assert card.control_period_s == pytest.approx(1.0) and card.max_gap_s == pytest.approx(3.0)
    c1, c2, c3, c4 = card.lines
    # c1: exact flat delivery. A flat target has no shape: the score is its precision.
    assert (c1.status, c1.settlement, c1.score.scored) == ("delivered", 0.4, 20)
    assert c1.score.tracking == 1.0 and c1.score.precision == pytest.approx(1.0)
    assert c1.score.correlation is None and c1.score.total == pytest.approx(1.0)
    # c2: two seconds late. 8 of 20 seconds miss (2 after each of the 4 steps); the error
    # is 1+1 at the start and 2+2 after each later step: 14 kWs over 20 s against 2 kW mean.
    assert c2.baselines_kw == {"g1": G1_BASELINE} and c2.status == "partial"
    assert c2.score.tracking == pytest.approx(0.6)
    assert c2.score.correlation == pytest.approx(1.0)
    assert c2.score.delay_s == 2.0 and c2.score.delay == pytest.approx(0.8)
    assert c2.score.precision == pytest.approx(1 - 0.7 / 2)
    assert c2.score.total == pytest.approx((1.0 + 0.8 + 0.65) / 3)
    # c3: still open; coverage from metered progress, 4 of 10 seconds scored.
    assert (c3.status, c3.settlement, c3.delivered_kwh) == ("open", None, 0.0011)
    assert c3.coverage == pytest.approx(0.4)
    assert (c3.score.samples, c3.score.scored, c3.score.tracking) == (10, 4, 1.0)
    # c4: nothing measured, so nothing to score.
    assert c4.status == "failed" and c4.baselines_kw == {"l1": -3.0}
    assert c4.score.scored == 0 and c4.score.total is None


def test_cli_prints_the_scorecard(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(log)]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith("c") and line.split()[0] in {"c1", "c2", "c3", "c4"}
    }
    # columns after the start date and time: length, requested, accepted, delivered, status,
    # cover, track, score, corr, delay, prec
    assert rows["c2"][4:] == [
        "20.0s",
        "+0.0111",
        "+0.0111",
        "+0.0094",
        "partial",
        "100.0%",
        "60.0%",
        "0.817",
        "1.000",
        "0.800",
        "0.650",
    ]
    assert rows["c1"][-4:] == ["1.000", "n/a", "n/a", "1.000"]
    assert rows["c3"][8:11] == ["open", "40.0%", "100.0%"]
    assert rows["c4"][-5:] == ["n/a"] * 5
    assert "totals: 4 commitments (1 delivered, 1 failed, 1 open, 1 partial)" in out
    assert "settlement: balancing_control 0.0012 (event payments); balancing_trade 0.6 ct" in out
    assert "mean performance score: 0.939 over 3 scored" in out


def test_cli_json(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(log), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    c2 = body["commitments"][1]
    assert c2["id"] == "c2" and c2["window_start"] == "2027-01-15T08:00:30.000+00:00"
    assert c2["performance"] == {
        "score": 0.8167,
        "correlation": 1.0,
        "delay": 0.8,
        "delay_s": 2.0,
        "precision": 0.65,
    }
    assert c2["tracking"] == 0.6 and c2["scored_samples"] == 20
    assert body["commitments"][2]["settlement"] is None
    assert body["totals"] == {
        "commitments": 4,
        "by_status": {"delivered": 1, "partial": 1, "open": 1, "failed": 1},
        "requested_kwh": 0.0302,
        "accepted_kwh": 0.03,
        "delivered_kwh": 0.0216,
        "settlement_by_type": {"balancing_control": 0.0012, "balancing_trade": 0.6},
        "mean_score": 0.9389,
        "scored": 3,
    }


def test_cli_plot(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "report.png"
    assert main(["report", "--db", str(log), "--json", "--plot", str(png)]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # the plot's notice goes to stderr: stdout stays JSON
    assert f"plot: {png}" in captured.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_without_matplotlib_names_the_extra(
    log: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["report", "--db", str(log), "--plot", str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert "flexedge[plot]" in captured.err and captured.out == ""


def test_a_missing_log_exits_2_naming_the_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "nope.sqlite"
    assert main(["report", "--db", str(missing)]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    assert not missing.exists()  # read-only: not even an empty database was created


def test_a_file_that_is_not_a_flexedge_log_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a database\n" * 100)
    assert main(["report", "--db", str(text)]) == 2
    assert f"{text}: not a flexedge log" in capsys.readouterr().err
    other = tmp_path / "other.sqlite"
    import sqlite3

    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE commitments (id TEXT)")
    conn.close()
    assert main(["report", "--db", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{other}: not a flexedge log (missing commitments.accepted_kwh" in err
    assert "table setpoints" in err


def test_the_report_reads_a_live_log_and_never_writes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "live.sqlite"
    store = build_log(path)  # still open, as a running daemon's: the rows sit in the WAL
    try:
        # Every WAL reader updates its read marks in the -shm lock memory; the database
        # and its WAL are what must not change.
        files = [path, path.with_name(path.name + "-wal")]
        before = [f.read_bytes() for f in files]
        assert main(["report", "--db", str(path)]) == 0
        assert "totals: 4 commitments" in capsys.readouterr().out
        assert [f.read_bytes() for f in files] == before
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "live.sqlite",
            "live.sqlite-shm",
            "live.sqlite-wal",
        ]
    finally:
        store.close()
