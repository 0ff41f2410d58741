"""`flexedge order` prints what the daemon now publishes, and why it differs from what was
asked when it does."""

from __future__ import annotations

from typing import Any

from flexedge.cli.operator import render_order_reply


def reply(asked: float | None, published: float | None) -> dict[str, Any]:
    return {
        "ok": True,
        "tariff_id": "tariff-1",
        "direction": "up",
        "exercise_ratio": asked,
        "price_per_kwh": 0.12 if asked is not None else None,
        "published_ratio": published,
        "orders": []
        if published is None
        else [{"direction": "up", "exercise_ratio": published, "price_per_kwh": 0.12}],
    }


def test_a_cut_order_says_what_is_published_and_why() -> None:
    text = render_order_reply(reply(1.0, 0.5))
    assert "up order of tariff-1: exercise_ratio 1.0, price 0.12 per kWh" in text
    assert "published: exercise_ratio 0.5, not 1.0: cut to what" in text
    assert "in force: up exercise_ratio 0.5" in text


def test_an_order_published_as_asked_says_so_without_a_reason() -> None:
    text = render_order_reply(reply(1.5, 1.5))
    assert "published: exercise_ratio 1.5" in text
    assert "cut to" not in text


def test_an_order_with_nothing_in_force_says_nothing_is_published() -> None:
    assert "published: nothing" in render_order_reply(reply(1.0, None))


def test_a_withdrawal_prints_withdrawn_and_no_published_line() -> None:
    text = render_order_reply(reply(None, None))
    assert "up order of tariff-1: withdrawn" in text
    assert "published:" not in text
