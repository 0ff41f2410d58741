"""The durable outbox: every report, ack, offer and order is written to SQLite first, then
published (QoS 1) and marked sent only when the broker acknowledges it.

paho keeps nothing on disk, so this table is what makes "acknowledged locally is never lost"
hold across a dead uplink, a broker restart or a killed process. A message may go out twice
(published, then the process died before PUBACK); ids are stable, so receivers drop repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flexedge.contract.wire import encode
from flexedge.controller.daemon.store import Store
from flexedge.errors import StoreError
from flexedge.mqtt import MqttLink

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self, store: Store, link: MqttLink, base_topic: str, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._link = link
        self._base = base_topic
        self._clock = clock
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox seq
        link.on_published = self._published

    def put(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        """Queue a message (inside the caller's transaction). `topic` is below the site."""
        self._store.enqueue(
            msg_id=str(payload["id"]),
            topic=f"{self._base}/{topic}",
            payload=encode(payload),
            qos=qos,
            retain=retain,
            ts=self._clock(),
        )

    def clear_retained(self, topic: str) -> None:
        """Queue an empty retained message, which clears what the broker keeps on `topic`
        (inside the caller's transaction)."""
        self._store.enqueue(
            msg_id=f"clear-{topic}",
            topic=f"{self._base}/{topic}",
            payload=b"",
            qos=1,
            retain=True,
            ts=self._clock(),
        )

    def flush(self) -> int:
        """Publish what is queued and not yet in flight; returns how many went out. A log
        that cannot be read sends nothing now: the rows wait in it for the next flush."""
        if not self._link.connected:
            return 0
        waiting = set(self._in_flight.values())
        sent = 0
        try:
            rows = self._store.unsent()
        except StoreError as exc:
            log.warning("outbox not flushed: %s", exc)
            return 0
        for row in rows:
            if row.seq in waiting:
                continue
            mid = self._link.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
            if mid is None:
                break
            if row.qos == 0:
                self._mark_sent(row.seq)
            else:
                self._in_flight[mid] = row.seq
            sent += 1
        return sent

    def backlog(self) -> int | None:
        """How many messages wait for the broker's acknowledgement (None: the log cannot be
        read now)."""
        try:
            return self._store.unsent_count()
        except StoreError:
            return None

    def reset_in_flight(self) -> None:
        """After a reconnect nothing is in flight any more: everything unsent goes again."""
        self._in_flight.clear()

    def _published(self, mid: int) -> None:
        seq = self._in_flight.pop(mid, None)
        if seq is not None:
            self._mark_sent(seq)

    def _mark_sent(self, seq: int) -> None:
        try:
            self._store.mark_sent([seq], self._clock())
        except StoreError as exc:
            # It stays unsent in the log and goes once more after the next reconnect: a
            # repeat under the same id, which receivers drop.
            log.warning("outbox row %s sent but not marked so: %s", seq, exc)
