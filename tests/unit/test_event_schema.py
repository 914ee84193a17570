"""Events stored by earlier versions of Orca still load: the log is forever.

``stored_events/v1.json`` holds one example of every event type exactly as the store keeps it
(made by the first version that had it). Never edit an example: add a field with a default, or
an upcaster (``class_version`` + ``upcast_vN_vM``), and add examples of the new shape.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import resolve_topic

from orca.application.app import OrcaApplication
from orca.domain import index, job, system, user
from orca.projections.views import HANDLERS

EXAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "stored_events" / "v1.json").read_text()
)


def event_classes() -> dict[str, type[Any]]:
    found = {}
    for module in (index, job, system, user):
        for _, aggregate in inspect.getmembers(module, inspect.isclass):
            if issubclass(aggregate, Aggregate) and aggregate.__module__ == module.__name__:
                for value in vars(aggregate).values():
                    topic = getattr(value, "TOPIC", None)
                    if isinstance(value, type) and topic and topic != aggregate.TOPIC:
                        found[topic] = value
    return found


@pytest.fixture(scope="module")
def app() -> OrcaApplication:
    return OrcaApplication(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}, on_saved=lambda position: None
    )


def test_every_event_type_has_a_stored_example() -> None:
    assert sorted(event_classes()) == sorted(EXAMPLES)


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_a_stored_event_of_every_type_still_loads(app: OrcaApplication, topic: str) -> None:
    stored = StoredEvent(
        originator_id=uuid4(),
        originator_version=1,
        topic=topic,
        state=json.dumps(EXAMPLES[topic]).encode(),
    )
    event = app.mapper.to_domain_event(stored)
    assert isinstance(event, resolve_topic(topic))
    for field in EXAMPLES[topic]:
        if not field.startswith("_"):
            assert hasattr(event, field), field


def test_the_read_models_decide_about_every_event_type() -> None:
    """A new event type must be projected (or explicitly ignored), never silently dropped."""
    assert sorted(c.TOPIC for c in HANDLERS) == sorted(event_classes())
