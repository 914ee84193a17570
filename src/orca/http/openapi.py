"""/openapi.json, generated from the endpoint table and the very structs the routes use."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

from orca import __version__
from orca.http.errors import ErrorBody

if TYPE_CHECKING:
    from orca.http.app import Api

_REF = "#/components/schemas/{name}"
_ERRORS = {
    "400": "Malformed request",
    "401": "Missing, invalid or expired token",
    "403": "The role lacks the permission",
    "404": "Not found",
    "409": "Conflict with the current state",
    "413": "Body too large",
    "422": "Validation error, naming the field",
    "429": "Rate limit exceeded",
    "503": "The database or the read models are unavailable for now; retry (see Retry-After)",
}


def openapi_document(endpoints: tuple[Api, ...]) -> bytes:
    types: list[Any] = [ErrorBody]
    for api in endpoints:
        types.extend(t for t in (api.body, api.response) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for api in endpoints:
        operation: dict[str, Any] = {
            "summary": api.summary,
            "operationId": re.sub(r"\W+", "_", f"{api.method} {api.path}").strip("_").lower(),
            "responses": {str(api.status): {"description": "Success"}},
        }
        if api.response is not None:
            operation["responses"][str(api.status)]["content"] = {
                "application/json": {"schema": by_type[api.response]}
            }
        for code, text in _ERRORS.items():
            operation["responses"][code] = {
                "description": text,
                "content": {"application/json": {"schema": by_type[ErrorBody]}},
            }
        if api.permission is not None:
            operation["security"] = [{"bearer": []}]
            operation["description"] = f"Needs the `{api.permission}` permission."
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "maxLength": 64}
                if name == "username"
                else {"type": "string", "format": "uuid"},
            }
            for name in re.findall(r"{(\w+)}", api.path)
        ]
        parameters += [
            {"name": q.name, "in": "query", "schema": q.schema, "description": q.description}
            for q in api.query
        ]
        parameters += [
            {"name": h.name, "in": "header", "schema": h.schema, "description": h.description}
            for h in api.headers
        ]
        if parameters:
            operation["parameters"] = parameters
        if api.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[api.body]}},
            }
        paths.setdefault(api.path, {})[api.method.lower()] = operation
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Orca Job Orchestrator", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
    return msgspec.json.encode(document)
