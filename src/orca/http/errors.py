"""Every failure becomes one JSON shape: detail, error_type, errors, request_id.

Routes never catch: errors are mapped to HTTP here, once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from orca.domain.errors import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)


class FieldError(msgspec.Struct):
    field: str
    message: str


class ErrorBody(msgspec.Struct):
    detail: str
    error_type: str
    errors: list[FieldError]
    request_id: str | None


class ApiError(Exception):
    """An error with its HTTP status, raised anywhere below a route."""

    status = 400
    error_type = "BadRequest"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    status = 401
    error_type = "AuthenticationError"


class Forbidden(ApiError):
    status = 403
    error_type = "PermissionDenied"


class ResourceNotFound(ApiError):
    status = 404
    error_type = "NotFound"


class ConflictError(ApiError):
    status = 409
    error_type = "Conflict"


class PayloadTooLarge(ApiError):
    status = 413
    error_type = "PayloadTooLarge"


class ValidationFailed(ApiError):
    status = 422
    error_type = "ValidationError"


class Unavailable(ApiError):
    status = 503
    error_type = "ServiceUnavailable"


_encoder = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def validation_error(error: msgspec.ValidationError, where: str = "body") -> ValidationFailed:
    """msgspec says ``Expected `int`, got `str` - at `$.port```: name the field."""
    text = str(error)
    match = _PATH.search(text)
    message = text[: match.start()] if match else text
    field = match["path"].lstrip(".") if match else ""
    if not field and message.startswith("Object missing required field"):
        field = message.split("`")[1]
    if not field and message.startswith("Object contains unknown field"):
        field = message.split("`")[1]
    return ValidationFailed(
        f"invalid {where}: {field + ': ' if field else ''}{message}",
        [FieldError(field=field or where, message=message)],
    )


def error_response(
    request: Request | None,
    status: int,
    detail: str,
    error_type: str,
    errors: list[FieldError],
    headers: dict[str, str] | None = None,
) -> Response:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    body = ErrorBody(detail=detail, error_type=error_type, errors=errors, request_id=request_id)
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"} | (headers or {})
    return Response(
        _encoder.encode(body), status_code=status, media_type="application/json", headers=headers
    )


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status, exc.detail, exc.error_type, exc.errors)


async def on_domain_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, NotFound):
        return error_response(request, 404, str(exc), "NotFound", [])
    if isinstance(exc, Conflict):
        return error_response(request, 409, str(exc), "Conflict", [])
    assert isinstance(exc, Invalid)
    errors = [FieldError(field=exc.field, message=exc.message)]
    return error_response(
        request, 422, f"invalid {exc.field}: {exc.message}", "ValidationError", errors
    )


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "NotFound", 405: "MethodNotAllowed"}
    return error_response(
        request, exc.status_code, str(exc.detail), kinds.get(exc.status_code, "HTTPError"), []
    )


# The database went away (restarted, failed over, out of connections): the request may succeed
# if sent again, which a 500 would not say.
DATABASE_ERRORS = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
DATABASE_UNAVAILABLE = (
    "the database is unavailable; retry shortly (a POST /api/jobs retried with the same"
    " Idempotency-Key never runs twice)"
)
RETRY_AFTER_SECONDS = 2


async def on_database_error(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        request,
        503,
        DATABASE_UNAVAILABLE,
        "ServiceUnavailable",
        [],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "internal error; see the server log", "InternalError", [])


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: on_api_error,
    NotFound: on_domain_error,
    Conflict: on_domain_error,
    Invalid: on_domain_error,
    HTTPException: on_http_exception,
    **dict.fromkeys(DATABASE_ERRORS, on_database_error),
    Exception: on_unexpected,
}
