"""The JSON Schema of wire contract v1, generated from the models in `messages`.

`python -m flexedge.contract.schema` rewrites `wire-v1.schema.json` next to this file; with
`--check` it only says whether the file is current (a unit test runs the same comparison).
Inbound messages and command requests are described as the site validates them, outbound ones
and command replies as the site writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from flexedge.contract.messages import (
    CommandRefused,
    SetOrderReply,
    StatusReply,
)
from flexedge.contract.operator import OPERATOR_REPLIES
from flexedge.contract.topics import TOPICS

SCHEMA_PATH = Path(__file__).with_name("wire-v1.schema.json")
SCHEMA_ID = "https://flexedge.invalid/contract/wire-v1.schema.json"

Mode = Literal["validation", "serialization"]


def _mode(inbound: bool) -> Mode:
    return "validation" if inbound else "serialization"


REPLIES: tuple[type[BaseModel], ...] = (
    StatusReply,
    SetOrderReply,
    CommandRefused,
    *dict.fromkeys(OPERATOR_REPLIES.values()),
)


def build_schema() -> dict[str, Any]:
    """One document: every message under `$defs`, and the topic table that names them."""
    models = [(topic.model, _mode(topic.inbound)) for topic in TOPICS]
    models += [(reply, _mode(False)) for reply in REPLIES]
    refs, document = models_json_schema(models, ref_template="#/$defs/{model}")
    topics = [
        {
            "topic": topic.suffix,
            "direction": "in" if topic.inbound else "out",
            "qos": topic.qos,
            "retained": topic.retained,
            "message": refs[(topic.model, _mode(topic.inbound))],
        }
        for topic in TOPICS
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "flexedge wire contract v1",
        "description": (
            "MQTT topics below {prefix}/{site}/, JSON payloads in UTF-8. Generated from "
            "flexedge/contract/messages.py by `python -m flexedge.contract.schema`; "
            "docs/wire-contract.md explains it. Replies to cmd/* requests go to the "
            "request's MQTT v5 response topic."
        ),
        "oneOf": [refs[key] for key in models],
        "x-topics": topics,
        "$defs": document["$defs"],
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flexedge.contract.schema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    args = parser.parse_args(argv)
    text = render()
    current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
    if args.check:
        if current != text:
            print(
                f"{SCHEMA_PATH} is stale: run python -m flexedge.contract.schema", file=sys.stderr
            )
            return 1
        return 0
    if current != text:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
