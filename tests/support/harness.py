"""The tests' harness: running async code, waiting on conditions, writing site files.

No pytest-asyncio: a test runs its async body with `run`. A test that needs something to
have happened waits for it with `wait_for` (or `wait_for_async` inside async code), which
fails with what it was waiting for; it never sleeps for a guessed time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from flexedge.config.loader import DEMO_SITE
from flexedge.tools.harness.broker import free_port

T = TypeVar("T")

POLL_S = 0.05


def run(main: Awaitable[T] | Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
    """Run `main` (a coroutine, or a function returning one) on a new event loop.

    `timeout` bounds it where a test wants a tighter bound than its per-test timeout; the
    coroutine is then cancelled, so its `finally` blocks stop what it started.
    """
    awaitable = main() if callable(main) else main

    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, timeout)

    return asyncio.run(bounded())


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def wait_for(
    predicate: Callable[[], T], timeout: float, what: str, *, interval: float = POLL_S
) -> T:
    """Call `predicate` until it returns something truthy, and return that; after `timeout`
    seconds fail, saying `what` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, result)
        time.sleep(interval)


@overload
async def wait_for_async(
    predicate: Callable[[], Awaitable[T]], timeout: float, what: str, *, interval: float = ...
) -> T: ...


@overload
async def wait_for_async(
    predicate: Callable[[], T], timeout: float, what: str, *, interval: float = ...
) -> T: ...


async def wait_for_async(
    predicate: Callable[[], Any], timeout: float, what: str, *, interval: float = POLL_S
) -> Any:
    """`wait_for` inside async code: the event loop runs while it waits, and `predicate`
    may be a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = predicate()
        result = await outcome if inspect.isawaitable(outcome) else outcome
        if result:
            return result
        if loop.time() > deadline:
            raise _timed_out(what, timeout, result)
        await asyncio.sleep(interval)


def write_site_file(folder: Path, site: Mapping[str, Any] | str, name: str = "site.yaml") -> Path:
    """Write a site file into `folder`: a mapping as YAML in its own key order, or text as it
    is (a template the test filled in). Returns its path."""
    path = folder / name
    text = site if isinstance(site, str) else yaml.safe_dump(dict(site), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def demo_site_file(
    folder: Path, *, site: Mapping[str, Any] | None = None, device: Mapping[str, Any] | None = None
) -> Path:
    """The bundled demo site, written into `folder` with its log there and every device on a
    free local port; `site` and `device` (applied to every device) override its fields."""
    raw = yaml.safe_load(DEMO_SITE.read_text(encoding="utf-8"))
    raw["log_db"] = str(folder / "demo.sqlite")
    raw.update(site or {})
    for entry in raw["devices"]:
        entry["port"] = free_port()
        entry.update(device or {})
    return write_site_file(folder, raw)


class FakeClock:
    """A clock for the simulators that moves only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
