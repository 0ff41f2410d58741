"""`flexedge prequalify --write`: the measured response figures into the site file, as the
device's `response` block, which dispatch plans with from the daemon's next start.

The file is edited as text, one line, so that its comments and layout stay the operator's:
the device's `response:` line (and any block under it) is replaced, or a new one goes under
its `name:`. The edited file must load, with these figures on this device, before it
replaces the old one (atomically); otherwise nothing is written.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from flexedge.config.loader import load_site
from flexedge.errors import ConfigError, FlexedgeError
from flexedge.tools.prequalify.analysis import ResponseMeasured


class WriteBackRefused(FlexedgeError):
    """The figures could not be put in the site file; the message says why and what to add."""


def response_line(figures: ResponseMeasured, indent: str, note: str) -> str:
    ramp = "" if figures.ramp_kw_per_s is None else f", ramp_kw_per_s: {figures.ramp_kw_per_s:g}"
    return f"{indent}response: {{delay_s: {figures.delay_s:g}{ramp}}}  # {note}\n"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def edited(text: str, device: str, figures: ResponseMeasured, note: str) -> str:
    """`text` with the device's response block set to `figures` (pure: no file touched)."""
    lines = text.splitlines(keepends=True)
    entry = re.compile(rf"^(\s*)-(\s+)name:\s*['\"]?{re.escape(device)}['\"]?\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if entry.match(line.rstrip("\n"))), None)
    if start is None:
        raise WriteBackRefused(
            f"no `- name: {device}` line in the site file (a device written in flow style?); "
            f"add `{response_line(figures, '', note).strip()}` under the device yourself"
        )
    match = entry.match(lines[start].rstrip("\n"))
    assert match is not None
    key_col = len(match.group(1)) + 1 + len(match.group(2))
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) >= key_col):
        end += 1  # the entry's lines: blank, or indented at least as far as its keys
    new = response_line(figures, " " * key_col, note)
    for i in range(start + 1, end):
        if _indent(lines[i]) == key_col and re.match(r"\s*response\s*:", lines[i]):
            block_end = i + 1
            while block_end < end and (
                not lines[block_end].strip() or _indent(lines[block_end]) > key_col
            ):
                block_end += 1
            return "".join([*lines[:i], new, *lines[block_end:]])
    return "".join([*lines[: start + 1], new, *lines[start + 1 :]])


def write_response(path: Path, device: str, figures: ResponseMeasured, note: str) -> str:
    """Put `figures` in the site file at `path`; the line written. WriteBackRefused when the
    edited file would not load or would not say these figures."""
    text = path.read_text(encoding="utf-8")
    new_text = edited(text, device, figures, note)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(new_text)
        try:
            site = load_site(tmp)
        except ConfigError as exc:
            raise WriteBackRefused(f"the edited site file would not load: {exc}") from None
        got = next(d.response for d in site.config.devices if d.name == device)
        if (got.delay_s, got.ramp_kw_per_s) != (figures.delay_s, figures.ramp_kw_per_s):
            raise WriteBackRefused(
                f"the edited site file says {got!r} for {device}, not the figures measured"
            )
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return response_line(figures, "", note).strip()
