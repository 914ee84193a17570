"""The projections' event reader gives what the mapper gives, or lets the mapper read it.

Ids come as canonical text (what the read models keep); every other field is equal.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from orca.application.app import OrcaApplication
from orca.application.recorder import Record
from orca.projections.events import EventReader

EXAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "stored_events" / "v1.json").read_text()
)


@pytest.fixture(scope="module")
def app() -> OrcaApplication:
    return OrcaApplication(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}, on_saved=lambda position: None
    )


def record(topic: str, state: dict[str, Any]) -> Record:
    return Record(
        id=1,
        originator_id=str(uuid4()),
        originator_version=1,
        topic=topic,
        state=json.dumps(state).encode(),
    )


def as_read_models_see_it(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list):
        return [as_read_models_see_it(v) for v in value]
    return value


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_every_stored_example_reads_as_the_mapper_reads_it(
    app: OrcaApplication, topic: str
) -> None:
    stored = record(topic, EXAMPLES[topic])
    expected = app.mapper.to_domain_event(stored.stored())
    event = EventReader(app.mapper)(stored)
    for field in dataclasses.fields(expected):
        wanted = as_read_models_see_it(getattr(expected, field.name))
        assert as_read_models_see_it(getattr(event, field.name)) == wanted, field.name


def test_what_it_cannot_read_exactly_goes_to_the_mapper(app: OrcaApplication) -> None:
    """A value of another shape than its field's type: the mapper's reading wins."""
    topic = "orca.Execution.Cancelled"
    state = EXAMPLES[topic] | {"reason": 42}
    event = EventReader(app.mapper)(record(topic, state))
    assert event.reason == 42
    assert isinstance(event, type(app.mapper.to_domain_event(record(topic, state).stored())))
