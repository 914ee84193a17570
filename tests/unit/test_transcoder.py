"""The msgspec transcoder reads stored events exactly as the library's JSON transcoder does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)

from orca.application.transcoder import MsgspecJSONTranscoder

EXAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "stored_events" / "v1.json").read_text()
)


def transcoders() -> tuple[JSONTranscoder, MsgspecJSONTranscoder]:
    library, ours = JSONTranscoder(), MsgspecJSONTranscoder()
    for transcoder in (library, ours):
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    return library, ours


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_every_stored_example_reads_the_same(topic: str) -> None:
    library, ours = transcoders()
    stored = json.dumps(EXAMPLES[topic]).encode()
    assert ours.decode(stored) == library.decode(stored)


def test_tagged_values_nested_in_lists_and_dicts_and_look_alikes_read_the_same() -> None:
    library, ours = transcoders()
    state = {
        "ids": [uuid4(), [uuid4()], {"deep": uuid4()}],
        "plain": {"_type_": "not a tag", "other": 1},
        "empty": {},
        "list_of_lists": [[1, 2], []],
        "values": [1.5, None, True, "text"],
    }
    stored = library.encode(state)
    assert ours.decode(stored) == library.decode(stored) == state
    assert ours.decode(b'{"x": NaN}').keys() == library.decode(b'{"x": NaN}').keys()
    with pytest.raises(TranscodingNotRegisteredError):
        ours.decode(b'{"x": {"_type_": "unknown", "_data_": "1"}}')
