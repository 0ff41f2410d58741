"""The one error hierarchy of flexedge.

Transport libraries raise their own exceptions (pymodbus, paho, sqlite3, pydantic); the edge
that calls them translates them into these, so callers handle one family.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pydantic import ValidationError


class FlexedgeError(Exception):
    """Base of every error flexedge raises on purpose."""


class ConfigError(FlexedgeError):
    """A site file or register map is wrong. The message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class ConfigProblems(ConfigError):
    """Every problem found in a site file and its register maps, not just the first; it
    reads as the first one, `problems` holds them all."""

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.source, first.field, first.problem)
        self.problems = problems
        if len(problems) > 1:
            self.args = (f"{first} (and {len(problems) - 1} more problems)",)


class PortUnavailable(FlexedgeError):
    """A port cannot be listened on; `cause` is the OSError, whose errno tells a busy port
    (transient) from an address this machine does not have (configuration)."""

    def __init__(self, what: str, host: str, port: int, cause: OSError) -> None:
        self.cause = cause
        reason = cause.strerror or str(cause)
        super().__init__(f"{what}: cannot listen on {host}:{port}: {reason}")


class DeviceError(FlexedgeError):
    """A device could not be read or written."""

    def __init__(self, device: str, problem: str) -> None:
        self.device = device
        self.problem = problem
        super().__init__(f"device {device}: {problem}")


class DeviceUnavailable(DeviceError):
    """The device did not answer (connection refused, timeout, dropped)."""


class DeviceProtocolError(DeviceError):
    """The device answered with an error (Modbus exception) or a value that makes no sense."""


class WriteNotConfirmed(DeviceError):
    """The read-back after a write did not show the value written."""


class MessageRejected(FlexedgeError):
    """An inbound market message is invalid; `reason` goes into the rejection ack."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StoreError(FlexedgeError):
    """The local SQLite log could not be read or written (disk full, locked, I/O error).
    Nothing that depended on the write took effect: its transaction was rolled back."""


class BrokerError(FlexedgeError):
    """The MQTT broker could not be reached or refused us."""


class BrokerUnavailable(BrokerError):
    """No Mosquitto binary to start, or it failed to start."""


# -- pydantic validation errors, told the same way everywhere --------------------------------

Loc = tuple[int | str, ...]
EXCERPT_CHARS = 40  # how much of a bad value a message quotes
_NO_INPUT_SHOWN = {"missing", "extra_forbidden"}  # the input is absent or is the field itself


class FieldProblem(NamedTuple):
    """One validation error: where (as the caller names it), pydantic's type, the message."""

    field: str
    kind: str
    message: str


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """`value` as a message may quote it: repr-escaped (a lone surrogate or a control character
    becomes a backslash escape, so the text always encodes to UTF-8) and cut to about `limit`
    characters, so that a 300 kB field is never echoed back."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        text = f"<a very long {type(value).__name__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit + 2 else f"{text[:limit]}..."


def indexed_path(loc: Loc) -> str:
    """`("steps", 0, "asset")` as `steps[0].asset`; "" for the input as a whole."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def field_problems(
    exc: ValidationError,
    *,
    limit: int = 1,
    show_input: bool = True,
    name: Callable[[Loc], str] = indexed_path,
    conceal: Callable[[Loc], bool] = lambda loc: False,
    quote: Callable[[object], str] = repr,
) -> list[FieldProblem]:
    """The first `limit` errors of `exc`, each with its field named by `name`.

    With `show_input`, the message ends with the offending value as `quote` gives it,
    `(got 'lots')`, except where the value is missing, an unknown field, a whole mapping or list,
    or `conceal(loc)` (a password).
    """
    problems = []
    for error in exc.errors()[:limit]:
        loc = tuple(error["loc"])
        message = error["msg"]
        shown = error.get("input")
        if (
            show_input
            and error["type"] not in _NO_INPUT_SHOWN
            and "input" in error
            and not conceal(loc)
            and not isinstance(shown, dict | list)
        ):
            message += f" (got {quote(shown)})"
        problems.append(FieldProblem(name(loc), error["type"], message))
    return problems


def message_reason(exc: ValidationError, *, name_missing: bool, show_input: bool) -> str:
    """Up to three problems of a message as one reason: `field 'kwh' is missing; ...`.

    The market's acks name a missing field in words (`name_missing`); operator command replies
    keep pydantic's own "Field required". A bad value is quoted as a short `excerpt`.
    """
    sentences = []
    for problem in field_problems(exc, limit=3, show_input=show_input, quote=excerpt):
        field = problem.field or "payload"
        if name_missing and problem.kind == "missing":
            sentences.append(f"field {field!r} is missing")
        else:
            sentences.append(f"field {field!r}: {problem.message}")
    return "; ".join(sentences)


# What the OS raises when a serial port refuses its line settings (e.g. parity on a pty):
# pyserial lets termios.error through, which is no OSError, so pymodbus does not catch it
# either. The RTU driver and the serial simulator both open ports and translate it.
if sys.platform == "win32":
    SERIAL_LINE_REFUSED: tuple[type[Exception], ...] = ()
else:
    import termios

    SERIAL_LINE_REFUSED = (termios.error,)
