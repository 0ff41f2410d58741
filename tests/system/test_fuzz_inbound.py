"""A seeded fuzz of every inbound market topic of a live daemon: malformed and edge payloads,
each answered by exactly one ack, no commitment from a rejected message, no setpoint beyond a
device's ratings, and the site still answers `status` afterwards."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexedge.contract.wire import INBOUND_TYPES, ack_id
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.harness import run
from tests.support.site_process import RunningSite, open_market, running_site

SEED = 20261202
PER_TOPIC = 1300  # four inbound topics: 5,200 payloads
SLOT = 20


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts))


def _base(kind: str, rng: random.Random, asset: str, tariff: str) -> dict[str, Any]:
    """A valid-looking message of `kind`, with a fresh id."""
    now = time.time()
    msg: dict[str, Any] = {"v": 1, "type": kind, "id": f"fz-{rng.getrandbits(64):016x}"}
    slot = _iso(now - now % SLOT + SLOT * rng.randint(0, 3))
    if kind == "spot_trade":
        msg |= {"asset": asset, "slot_start": slot, "energy_kwh": rng.uniform(-2, 2)}
        msg |= {"side": rng.choice(["buy", "sell"]), "rate_ct_per_kwh": rng.uniform(0, 40)}
    elif kind == "balancing_trade":
        msg |= {"offer_id": f"off-{rng.getrandbits(32):x}", "asset": asset, "slot_start": slot}
        msg |= {"energy_kwh": rng.uniform(-2, 2), "price_ct": rng.uniform(0, 50)}
    elif kind == "balancing_control":
        msg |= {"tariff_id": tariff, "timeslot_start": slot, "kwh": rng.uniform(-3, 3)}
        msg |= {"payment": rng.uniform(-1, 5)}
    else:
        msg |= {"tariff_id": tariff, "timeslot_start": slot}
        msg |= {"curtailment_ratio": rng.uniform(0, 1.5)}
    return msg


HOSTILE_VALUES: list[Any] = [
    1e308,
    -1e308,
    10**400,
    -(10**400),
    0,
    -1,
    True,
    None,
    "",
    "x" * 300_000,
    [],
    {},
    "NaN",
    "9999-12-31T23:59:59+00:00",
    "3000-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+00:00",
    "1970-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00",
    1.5e9,
    "battery-1\u0000",
    "../../etc",
]
RAW_TOKENS = ["NaN", "Infinity", "-Infinity", '"\\ud800"', '"\\udfff\\ud800"', "1" + "0" * 400]


def _payload(kind: str, rng: random.Random, asset: str, tariff: str) -> bytes:
    base = _base(kind, rng, asset, tariff)
    fields = [k for k in base if k != "type"]
    pick = rng.randrange(12)
    if pick == 0:  # invalid JSON
        text = json.dumps(base)
        return text[: rng.randrange(len(text))].encode() + rng.choice([b"", b"}", b",,", b"'"])
    if pick == 1:  # deep nesting
        depth = rng.choice([1000, 10_000, 100_000])
        opener = rng.choice(["[", '{"a":'])
        return (opener * depth).encode() + rng.choice([b"", b"1" + b"]" * depth])
    if pick == 2:  # raw tokens json.dumps would not write: NaN, Infinity, lone surrogates
        field = rng.choice(fields)
        text = json.dumps({k: v for k, v in base.items() if k != field})
        return f'{text[:-1]}, "{field}": {rng.choice(RAW_TOKENS)}}}'.encode()
    if pick == 3:  # empty payload or binary garbage
        return b"" if rng.random() < 0.05 else rng.randbytes(rng.randrange(1, 400))
    if pick == 4:  # missing fields
        for field in rng.sample(fields, rng.randint(1, len(fields))):
            del base[field]
    elif pick == 5:  # extra fields
        base[f"extra_{rng.randrange(100)}"] = rng.choice(HOSTILE_VALUES)
    elif pick == 6:  # not an object at all
        return json.dumps(rng.choice([[base], "text", 42, None, True])).encode()
    elif pick == 7:  # the message type of another topic
        base["type"] = rng.choice([t for t in INBOUND_TYPES.values() if t != kind] + ["ack"])
    elif pick == 8:  # far-future and far-past times
        time_field = "slot_start" if "slot_start" in base else "timeslot_start"
        base[time_field] = rng.choice(HOSTILE_VALUES[13:19])
    elif pick == 9:  # a huge string in the id or another field
        base[rng.choice(fields)] = rng.choice(["\ud800", "é" * 150_000, "x" * 300_000])
    elif pick == 10:  # plausible shape, hostile values (wrong types, huge numbers)
        for field in rng.sample(fields, rng.randint(1, 3)):
            base[field] = rng.choice(HOSTILE_VALUES)
    # pick 11: the valid-looking message as it is
    return json.dumps(base, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def _status(site: RunningSite) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flexedge.cli.main",
            "status",
            "--config",
            str(site.site_file),
            "--timeout",
            "30",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(240)
def test_fuzzed_inbound_messages_get_one_ack_each_and_change_nothing_unsafe(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    with running_site(tmp_path, broker, slot_seconds=SLOT) as site:
        raw = yaml.safe_load(site.site_file.read_text(encoding="utf-8"))
        device = raw["devices"][0]
        tariff = raw["tariffs"][0]["id"]
        rng = random.Random(SEED)
        sent: dict[str, tuple[str, bytes]] = {}
        for suffix, kind in sorted(INBOUND_TYPES.items()):
            made = 0
            while made < PER_TOPIC:
                payload = _payload(kind, rng, device["name"], tariff)
                topic = f"{site.prefix}/{site.site}/{suffix}"
                key = ack_id(topic, payload)
                if key not in sent:
                    sent[key] = (suffix, payload)
                    made += 1
        assert len(sent) >= 5000
        started = time.monotonic()
        acks = run(_fuzz(site, sent), timeout=150)
        took = time.monotonic() - started
        print(f"fuzz: {len(sent)} payloads, {len(acks)} acks in {took:.1f} s")

        # Exactly one ack per message: one ack id each, none of an unknown message.
        assert set(acks) == set(sent)
        counts = _ack_counts(acks)
        assert counts["total"] == len(sent), counts
        # No commitment from a rejected message: every commitment is one an ack accepted.
        accepted = {
            a["commitment_id"]
            for copies in acks.values()
            for a in copies
            if a["status"] in ("accepted", "clipped")
        }
        committed = {row[0] for row in site.query("SELECT id FROM commitments")}
        assert committed <= accepted, committed - accepted
        # No setpoint beyond the device's ratings.
        low, high = -float(device["max_discharge_kw"]), float(device["max_charge_kw"])
        rows = site.query("SELECT ts, asset, p_kw FROM setpoints")
        assert rows, "the daemon wrote no setpoint at all"
        outside = [r for r in rows if not low - 1e-6 <= r[2] <= high + 1e-6]
        assert not outside, outside[:5]
        # The site still answers.
        # (under the burst's backlog of reports and acks the reply may take a few seconds)
        asked = time.monotonic()
        status = _status(site)
        print(f"fuzz: status answered in {time.monotonic() - asked:.1f} s")
        assert status.returncode == 0, status.stderr
        assert site.site in status.stdout


def _ack_counts(acks: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    counts = {"total": 0}
    for copies in acks.values():
        # A repeat of one ack (same id, same status: QoS 1 may redeliver) is one answer.
        distinct = {json.dumps(a, sort_keys=True) for a in copies}
        assert len(distinct) == 1, copies
        counts["total"] += 1
    return counts


async def _fuzz(
    site: RunningSite, sent: dict[str, tuple[str, bytes]]
) -> dict[str, list[dict[str, Any]]]:
    market = await open_market(site)
    try:
        for suffix, payload in sent.values():
            market.send(suffix, payload)

        def is_ack(m: dict[str, Any]) -> bool:
            return m.get("type") == "ack"

        seen: set[str] = set()

        def all_acked(m: dict[str, Any]) -> bool:
            if is_ack(m):
                seen.add(m["id"])
            return len(seen) >= len(sent)

        await market.wait_for(all_acked, 120)
        by_id: dict[str, list[dict[str, Any]]] = {}
        for message in market.seen:
            if is_ack(message):
                body = {k: v for k, v in message.items() if k != "_topic"}
                by_id.setdefault(message["id"], []).append(body)
        return by_id
    finally:
        await market.stop()
