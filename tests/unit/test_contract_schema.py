"""The contract kept in the repository matches the models: the generated JSON Schema, the topic
table the daemon subscribes and publishes by, and the prose in docs/wire-contract.md."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from flexedge.contract import messages, operator, schema, wire
from flexedge.contract.topics import TOPICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-contract.md"


def test_schema_file_is_generated_from_the_models() -> None:
    # On failure: python -m flexedge.contract.schema, and commit the file.
    assert schema.SCHEMA_PATH.read_text(encoding="utf-8") == schema.render()
    assert schema.main(["--check"]) == 0


def test_schema_names_every_topic_and_message() -> None:
    document = json.loads(schema.SCHEMA_PATH.read_text(encoding="utf-8"))
    topics = {t["topic"]: t for t in document["x-topics"]}
    assert set(topics) == {t.suffix for t in TOPICS}
    for topic in TOPICS:
        name = topics[topic.suffix]["message"]["$ref"].removeprefix("#/$defs/")
        assert name == topic.model.__name__
        assert name in document["$defs"]
    assert topics["status"]["retained"] and topics["telemetry"]["qos"] == 0


def test_inbound_envelope_is_required_in_the_schema() -> None:
    for topic in TOPICS:
        if topic.inbound and issubclass(topic.model, messages.Inbound):
            required = topic.model.model_json_schema()["required"]
            assert required[:3] == ["v", "type", "id"]


def test_the_daemon_subscribes_to_every_inbound_market_topic() -> None:
    inbound = {t.suffix for t in TOPICS if t.inbound and not t.suffix.startswith("cmd/")}
    assert set(wire.INBOUND_TYPES) == inbound
    assert wire.INBOUND_TYPES["market/balancing-trade"] == "balancing_trade"


def _documented_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for module in (messages, operator):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
                and not value.__name__.startswith("_")
            ):
                found.append(value)
    return found


def test_the_contract_document_names_every_message_type_and_field() -> None:
    text = DOC.read_text(encoding="utf-8")
    models = _documented_models()
    assert len(models) > 15
    for model in models:
        type_field = model.model_fields.get("type")
        if type_field is not None and isinstance(type_field.default, str):
            assert f"`{type_field.default}`" in text, type_field.default
        for field in model.model_fields:
            assert f"`{field}`" in text, f"{model.__name__}.{field} is not in {DOC.name}"
    for topic in TOPICS:
        assert f"`{topic.suffix}`" in text, topic.suffix
