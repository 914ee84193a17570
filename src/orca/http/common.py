"""Helpers every endpoint module uses: JSON out, query parameters in, read-your-writes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from orca.bootstrap import Services
from orca.http.cache import UntilViewsMove
from orca.http.errors import FieldError, ResourceNotFound, Unavailable, ValidationFailed

MAX_PAGE = 500
SETTLE_TIMEOUT_SECONDS = 10.0

_encoder = msgspec.json.Encoder()
T = TypeVar("T")


def json(body: Any, status: int = 200) -> Response:
    return json_bytes(_encoder.encode(body), status)


def json_bytes(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def remembered(
    request: Request, key: Hashable, read: Callable[[], Any], missing: str = "not found"
) -> Response:
    """The JSON of ``read()``, run in the thread pool and then served from memory until the
    read models move on; ``read()`` answers None for "not found" (remembered as well)."""

    def encoded() -> bytes | None:
        value = read()
        return None if value is None else _encoder.encode(value)

    answers: UntilViewsMove[bytes | None] = request.app.state.answers
    body = await answers.get(key, lambda: run_in_threadpool(encoded))
    if body is None:
        raise ResourceNotFound(missing)
    return json_bytes(body)


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"invalid query parameter {name}: {message}", [FieldError(field=name, message=message)]
    )


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, "must be an integer") from None
    if not low <= value <= high:
        raise _invalid(name, f"must be between {low} and {high}")
    return value


def bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = {"true": True, "1": True, "false": False, "0": False}.get(raw.lower())
    if value is None:
        raise _invalid(name, "must be true or false")
    return value


def choice_param(request: Request, name: str, choices: frozenset[str]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if raw not in choices:
        raise _invalid(name, f"must be one of {', '.join(sorted(choices))}")
    return raw


def text_param(request: Request, name: str, max_length: int = 255) -> str | None:
    raw = request.query_params.get(name)
    if raw is not None and (len(raw) > max_length or "\x00" in raw):
        raise _invalid(name, f"must be at most {max_length} characters, without NUL")
    return raw


def page(request: Request) -> tuple[int, int]:
    return (
        int_param(request, "limit", 50, 1, MAX_PAGE),
        int_param(request, "offset", 0, 0, 1_000_000_000),
    )


def path_id(request: Request, name: str) -> str:
    """A path UUID in canonical form."""
    raw = request.path_params[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        message = "must be a UUID"
        raise ValidationFailed(
            f"invalid {name}: {message}", [FieldError(field=name, message=message)]
        ) from None


def found(value: T | None, what: str, ident: str) -> T:
    if value is None:
        raise ResourceNotFound(f"{what} {ident} not found")
    return value


def settled(s: Services, position: int) -> None:
    """Wait until the read models show this command's events (read-your-writes); blocks, so
    for a worker thread that goes on to read them."""
    if not s.views.wait_for(position, SETTLE_TIMEOUT_SECONDS):
        raise Unavailable("saved, but the read models are behind; GET the resource again shortly")


async def settle(request: Request, position: int) -> None:
    await run_in_threadpool(settled, services(request), position)
