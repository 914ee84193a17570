"""Events as the read models read them: from the stored JSON straight into msgspec Structs.

Decoding an event the library's way (the JSON into dicts, every tagged value restored in
Python, then a domain event object) took half of a rebuild's time. Here each event class
gets a Struct with the same fields, which msgspec fills from the stored JSON in one pass:
tagged moments are parsed by msgspec, and ids (the originator's too) are given as their
canonical text, the form the read models keep them in. A handler takes an id with
``str(e.job_id)``, which is the same for a ``UUID`` (the mapper's) and for its text.

Whatever this cannot read exactly as the mapper would is read by the mapper instead: a field
type it does not know, a field with a default that is not plain JSON, a value of another
shape or with another tag, JSON that only Python's parser reads (NaN), an event stored by an
older class version (its upcaster runs). The mapper stays the definition of an event.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from datetime import datetime
from functools import cache, lru_cache
from types import UnionType
from typing import Any, Literal, NamedTuple, Union
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper
from eventsourcing.utils import resolve_topic

from orca.application.recorder import Record


# The stored forms of the library's transcodings ``UUIDAsHex`` and ``DatetimeAsISO``; another
# tag (another transcoding registered for the type) is a validation error, hence the mapper.
class _Id(msgspec.Struct, tag_field="_type_", tag="uuid_hex"):
    hex: str = msgspec.field(name="_data_")  # as UUIDAsHex writes it: ``UUID.hex``


class _Moment(msgspec.Struct, tag_field="_type_", tag="datetime_iso"):
    value: datetime = msgspec.field(name="_data_")


# The same few ids come again and again (a job's executions, a fleet's systems): a hit costs
# a tenth of the formatting.
@lru_cache(maxsize=4096)
def _dashed(h: str) -> str:
    """``str(UUID(hex))`` without making the UUID (``UUID.hex`` is 32 lowercase digits)."""
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Types JSON holds as they are: msgspec checks them, nothing needs converting.
_PLAIN = frozenset({str, int, float, bool, type(None)})
# How a tagged value is read, and the expression that turns it (``{}``) into the field's value.
_TAGGED: dict[Any, tuple[Any, str]] = {
    UUID: (_Id, "_dashed({}.hex)"),
    datetime: (_Moment, "{}.value"),
    list[UUID]: (list[_Id], "[_dashed(i.hex) for i in {}]"),
}


def _union_args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, UnionType) else (hint,)


def _plain(hint: Any) -> Any:
    """The type msgspec reads a field of plain JSON as (a float field keeps an int an int, as
    the mapper does), or None if the field is not plain JSON."""
    args = _union_args(hint)
    if not all(a in _PLAIN or typing.get_origin(a) is Literal for a in args):
        return None
    return hint | int if float in args else hint


def _field(hint: Any) -> tuple[Any, str | None] | None:
    """How to read a field of this type: the type msgspec decodes and the expression that
    converts it to the field's value (None: none needed); None if only the mapper reads it."""
    plain = _plain(hint)
    if plain is not None:
        return plain, None
    if hint in _TAGGED:
        return _TAGGED[hint]
    args = _union_args(hint)
    others = [a for a in args if a is not type(None)]
    if len(args) == 2 and len(others) == 1 and others[0] in _TAGGED:
        stored, convert = _TAGGED[others[0]]
        return stored | None, f"None if {{0}} is None else {convert.format('{0}')}"
    return None


# A stored event -> the event as the projections read it.
Read = Callable[[Record], Any]


class _Stored(NamedTuple):
    struct: type[msgspec.Struct]
    converts: list[tuple[str, str]]  # field names and the expressions that convert them
    class_version: int  # stored events of an older version go to the mapper (upcasters)


@cache
def _stored(cls: type[Any]) -> _Stored | None:
    """The Struct that reads events of ``cls``; None if only the mapper can."""
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any, Any]] = [
        ("originator_id", Any, None),  # both from the notification, as the mapper takes them
        ("originator_version", Any, None),
    ]
    converts: list[tuple[str, str]] = []
    for f in dataclasses.fields(cls):
        if f.name in ("originator_id", "originator_version"):
            continue
        found = _field(hints[f.name])
        if found is None or f.default_factory is not dataclasses.MISSING:
            return None
        stored, convert = found
        if f.default is dataclasses.MISSING:
            fields.append((f.name, stored, msgspec.NODEFAULT))
        elif convert is None:
            fields.append((f.name, stored, f.default))
        else:
            return None
        if convert is not None:
            converts.append((f.name, convert))
    class_version = getattr(cls, "class_version", 1)
    if class_version > 1:
        fields.append(("class_version", int, 1))
    struct = msgspec.defstruct(f"Stored{cls.__name__}", fields, kw_only=True)
    return _Stored(struct, converts, class_version)


def _reader(cls: Any, by_mapper: Read, unseal: Callable[[bytes], bytes] | None) -> Read:
    """A function of straight-line code that reads events of ``cls``: it decodes, converts
    the fields and sets the originator's (a loop over the fields with ``getattr`` and
    ``setattr`` took half again as long, and the same steps called one by one through a plan
    ~15% longer). Field names are the event class's own, valid identifiers."""
    stored = _stored(cls)
    if stored is None:
        return by_mapper
    state = "record.state" if unseal is None else "unseal(record.state)"
    lines = [
        "def read(record):",
        "    try:",
        f"        e = decode({state})",
        "    except DecodeError:  # validation errors too",
        "        return by_mapper(record)",
    ]
    if stored.class_version > 1:
        lines += [
            f"    if e.class_version < {stored.class_version}:",
            "        return by_mapper(record)",
        ]
    lines += [f"    e.{name} = {convert.format(f'e.{name}')}" for name, convert in stored.converts]
    lines += [
        "    e.originator_id = record.originator_id",
        "    e.originator_version = record.originator_version",
        "    return e",
    ]
    namespace: dict[str, Any] = {
        "decode": msgspec.json.Decoder(stored.struct).decode,
        "DecodeError": msgspec.DecodeError,
        "by_mapper": by_mapper,
        "unseal": unseal,
        "_dashed": _dashed,
    }
    exec("\n".join(lines), namespace)  # the source is made above, from field names only
    read: Read = namespace["read"]
    return read


class EventReader:
    """Reads stored events for the projections (see the module's docstring)."""

    def __init__(self, mapper: Mapper[UUID]) -> None:
        self._mapper = mapper
        self._readers: dict[str, Read] = {}
        cipher, compressor = mapper.cipher, mapper.compressor
        self._unseal: Callable[[bytes], bytes] | None = None
        if cipher is not None or compressor is not None:

            def unseal(state: bytes) -> bytes:
                if cipher is not None:
                    state = cipher.decrypt(state)
                if compressor is not None:
                    state = compressor.decompress(state)
                return state

            self._unseal = unseal

    def __call__(self, record: Record) -> Any:
        return self.reader(record.topic)(record)

    def reader(self, topic: str) -> Read:
        """What reads the events of this topic (made once)."""
        read = self._readers.get(topic)
        if read is None:
            read = self._readers[topic] = _reader(
                resolve_topic(topic), self._by_mapper, self._unseal
            )
        return read

    def _by_mapper(self, record: Record) -> Any:
        return self._mapper.to_domain_event(record.stored())
