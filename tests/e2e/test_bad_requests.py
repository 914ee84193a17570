"""A catalogue of bad requests: each gets its documented 4xx and error shape; none stores a thing.

400 malformed body, 404 unknown resource, 409 conflict, 413 body over 1 MiB, 422 validation
naming the field in ``errors[].field``. Never a 500. After the whole catalogue the totals of
systems, jobs and users are what they were before it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support.contract import assert_error
from support.server import ApiClient, OrcaServer

UNKNOWN = "6f1c2a9e-0000-4000-8000-00000000dead"
MB = 1_000_000
TEN_MB = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
DEEP = 100_000
TOMORROW = (datetime.now(UTC) + timedelta(days=1)).isoformat()
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).isoformat()
NAIVE = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()


@dataclass(frozen=True)
class Bad:
    """One bad request and the answer it must get."""

    method: str
    path: str
    status: int
    field: str | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def system(**changes: Any) -> dict[str, Any]:
    body = {"name": "fresh-name", "hostname": "127.0.0.1", "username": "u", "password": "pw"}
    return {k: v for k, v in (body | changes).items() if v is not ...}


def job(**changes: Any) -> dict[str, Any]:
    body = {"name": "j", "command": "true", "system_ids": ["{a}"], "schedule_at": TOMORROW}
    return {k: v for k, v in (body | changes).items() if v is not ...}


JSON = {"content-type": "application/json"}
SYSTEMS, JOBS, USERS = "/api/systems", "/api/jobs", "/api/users"

CATALOGUE: dict[str, Bad] = {
    # --- bodies that are not JSON, or too much of it ---
    "truncated JSON": Bad("POST", SYSTEMS, 400, content=b'{"name": ', headers=JSON),
    "empty body": Bad("POST", SYSTEMS, 400, content=b"", headers=JSON),
    "whitespace body": Bad("POST", JOBS, 400, content=b"  \n ", headers=JSON),
    "form text as JSON": Bad("POST", SYSTEMS, 400, content=b"name=x&port=22", headers=JSON),
    "invalid UTF-8": Bad("POST", SYSTEMS, 400, content=b'{"name": "\xff\xfe"}', headers=JSON),
    "trailing garbage": Bad(
        "POST",
        SYSTEMS,
        400,
        content=b'{"name": "t", "hostname": "h", "username": "u", "password": "p"} x',
        headers=JSON,
    ),
    "invalid UTF-8 in a login": Bad(
        "POST", "/api/auth/token", 400, content=b'{"username": "\xff", "password": "x"}'
    ),
    "10 MB system": Bad("POST", SYSTEMS, 413, content=TEN_MB, headers=JSON),
    "10 MB job": Bad("POST", JOBS, 413, content=TEN_MB, headers=JSON),
    "10 MB login": Bad("POST", "/api/auth/token", 413, content=TEN_MB, headers=JSON),
    "10 MB system update": Bad("PUT", f"{SYSTEMS}/{{a}}", 413, content=TEN_MB, headers=JSON),
    "an array, not an object": Bad("POST", SYSTEMS, 422, json=[]),
    "JSON null": Bad("POST", "/api/auth/token", 422, content=b"null", headers=JSON),
    "deeply nested array": Bad("POST", SYSTEMS, 422, content=b"[" * DEEP + b"]" * DEEP),
    "deeply nested name": Bad(
        "POST", SYSTEMS, 422, "name", content=b'{"name": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    ),
    "deeply nested unknown field": Bad(
        "POST", SYSTEMS, 422, content=b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    ),
    # --- systems: wrong types and values ---
    "port as a string": Bad("POST", SYSTEMS, 422, "port", json=system(port="22")),
    "port as a boolean": Bad("POST", SYSTEMS, 422, "port", json=system(port=True)),
    "port as a float": Bad("POST", SYSTEMS, 422, "port", json=system(port=22.5)),
    "port 0": Bad("POST", SYSTEMS, 422, "port", json=system(port=0)),
    "port 65536": Bad("POST", SYSTEMS, 422, "port", json=system(port=65536)),
    "negative port": Bad("POST", SYSTEMS, 422, "port", json=system(port=-22)),
    "huge port": Bad("POST", SYSTEMS, 422, "port", json=system(port=10**30)),
    "null name": Bad("POST", SYSTEMS, 422, "name", json=system(name=None)),
    "empty name": Bad("POST", SYSTEMS, 422, "name", json=system(name="")),
    "1 MB name": Bad("POST", SYSTEMS, 422, "name", json=system(name="n" * MB)),
    "NUL in name": Bad("POST", SYSTEMS, 422, "name", json=system(name="web\x0001")),
    "newline in name": Bad("POST", SYSTEMS, 422, "name", json=system(name="web\n01")),
    "hostname with a space": Bad("POST", SYSTEMS, 422, "hostname", json=system(hostname="a b")),
    "hostname with a leading dash": Bad(
        "POST", SYSTEMS, 422, "hostname", json=system(hostname="-web.example")
    ),
    "hostname of 300 characters": Bad(
        "POST", SYSTEMS, 422, "hostname", json=system(hostname="h" * 300)
    ),
    "empty hostname": Bad("POST", SYSTEMS, 422, "hostname", json=system(hostname="")),
    "hostname with symbols": Bad("POST", SYSTEMS, 422, "hostname", json=system(hostname="h_1!")),
    "URL as hostname": Bad(
        "POST", SYSTEMS, 422, "hostname", json=system(hostname="ssh://127.0.0.1:22")
    ),
    "unknown system_type": Bad("POST", SYSTEMS, 422, "system_type", json=system(system_type="os2")),
    "missing username": Bad("POST", SYSTEMS, 422, "username", json=system(username=...)),
    "NUL in password": Bad("POST", SYSTEMS, 422, "password", json=system(password="p\x00w")),
    "1 MB password": Bad("POST", SYSTEMS, 422, "password", json=system(password="p" * MB)),
    "NUL in description": Bad(
        "POST", SYSTEMS, 422, "description", json=system(description="a\x00b")
    ),
    "no credentials": Bad("POST", SYSTEMS, 422, "password", json=system(password=...)),
    "windows with a private key": Bad(
        "POST",
        SYSTEMS,
        422,
        "password|private_key",  # either names what is wrong: no password, or a key
        json=system(system_type="windows", password=..., private_key="-----BEGIN KEY-----"),
    ),
    "unknown field": Bad("POST", SYSTEMS, 422, "colour", json=system(colour="red")),
    "host_key too short": Bad("POST", SYSTEMS, 422, "host_key", json=system(host_key="ssh-rsa")),
    "duplicate name": Bad("POST", SYSTEMS, 409, json=system(name="existing-a")),
    "duplicate name in other case": Bad("POST", SYSTEMS, 409, json=system(name="EXISTING-A")),
    # --- pagination and filters ---
    "limit 0": Bad("GET", f"{SYSTEMS}?limit=0", 422, "limit"),
    "negative limit": Bad("GET", f"{SYSTEMS}?limit=-5", 422, "limit"),
    "limit over 500": Bad("GET", f"{SYSTEMS}?limit=501", 422, "limit"),
    "huge limit": Bad("GET", f"{SYSTEMS}?limit={10**30}", 422, "limit"),
    "limit not a number": Bad("GET", f"{SYSTEMS}?limit=ten", 422, "limit"),
    "negative offset": Bad("GET", f"{SYSTEMS}?offset=-1", 422, "offset"),
    "huge offset": Bad("GET", f"{SYSTEMS}?offset={10**30}", 422, "offset"),
    "active neither true nor false": Bad("GET", f"{SYSTEMS}?active=maybe", 422, "active"),
    "unknown system_type filter": Bad("GET", f"{SYSTEMS}?system_type=os2", 422, "system_type"),
    "unknown job status": Bad("GET", f"{JOBS}?status=done", 422, "status"),
    "NUL in created_by": Bad("GET", f"{JOBS}?created_by=ad%00min", 422, "created_by"),
    "created_by of 300 characters": Bad("GET", f"{JOBS}?created_by={'a' * 300}", 422, "created_by"),
    "negative job limit": Bad("GET", f"{JOBS}?limit=-1", 422, "limit"),
    "negative job offset": Bad("GET", f"{JOBS}?offset=-1", 422, "offset"),
    # --- ids in paths ---
    "system id not a UUID": Bad("GET", f"{SYSTEMS}/not-a-uuid", 422, "system_id"),
    "system id with NUL": Bad("GET", f"{SYSTEMS}/{UNKNOWN[:-1]}%00", 422, "system_id"),
    "unknown system": Bad("GET", f"{SYSTEMS}/{UNKNOWN}", 404),
    "update unknown system": Bad("PUT", f"{SYSTEMS}/{UNKNOWN}", 404, json={"description": "x"}),
    "delete system id not a UUID": Bad("DELETE", f"{SYSTEMS}/12345", 422, "system_id"),
    "delete unknown system": Bad("DELETE", f"{SYSTEMS}/{UNKNOWN}", 404),
    "test unknown system": Bad("POST", f"{SYSTEMS}/{UNKNOWN}/test", 404),
    "test system id not a UUID": Bad("POST", f"{SYSTEMS}/xyz/test", 422, "system_id"),
    "job id not a UUID": Bad("GET", f"{JOBS}/not-a-uuid", 422, "job_id"),
    "unknown job": Bad("GET", f"{JOBS}/{UNKNOWN}", 404),
    "cancel unknown job": Bad("POST", f"{JOBS}/{UNKNOWN}/cancel", 404),
    "cancel job id not a UUID": Bad("POST", f"{JOBS}/123/cancel", 422, "job_id"),
    # --- updating a system ---
    "update with truncated JSON": Bad("PUT", f"{SYSTEMS}/{{a}}", 400, content=b"{", headers=JSON),
    "update port as a string": Bad("PUT", f"{SYSTEMS}/{{a}}", 422, "port", json={"port": "x"}),
    "update is_active as a string": Bad(
        "PUT", f"{SYSTEMS}/{{a}}", 422, "is_active", json={"is_active": "yes"}
    ),
    "update to an empty name": Bad("PUT", f"{SYSTEMS}/{{a}}", 422, "name", json={"name": ""}),
    "update an unknown field": Bad("PUT", f"{SYSTEMS}/{{a}}", 422, "owner", json={"owner": "me"}),
    "update to a bad hostname": Bad(
        "PUT", f"{SYSTEMS}/{{a}}", 422, "hostname", json={"hostname": "a b"}
    ),
    "rename to a taken name": Bad("PUT", f"{SYSTEMS}/{{a}}", 409, json={"name": "existing-b"}),
    "rename to a taken name in other case": Bad(
        "PUT", f"{SYSTEMS}/{{a}}", 409, json={"name": "Existing-B"}
    ),
    # --- jobs ---
    "job without system_ids": Bad("POST", JOBS, 422, "system_ids", json=job(system_ids=...)),
    "job with no systems": Bad("POST", JOBS, 422, "system_ids", json=job(system_ids=[])),
    "job system id not a UUID": Bad("POST", JOBS, 422, "system_ids", json=job(system_ids=["x"])),
    "job on an unknown system": Bad(
        "POST", JOBS, 422, "system_ids", json=job(system_ids=["{a}", UNKNOWN])
    ),
    "job on 1001 systems": Bad(
        "POST",
        JOBS,
        422,
        "system_ids",
        json=job(system_ids=[str(uuid.uuid4()) for _ in range(1001)]),
    ),
    "system_ids as a string": Bad("POST", JOBS, 422, "system_ids", json=job(system_ids="{a}")),
    "naive schedule_at": Bad("POST", JOBS, 422, "schedule_at", json=job(schedule_at=NAIVE)),
    "past schedule_at": Bad("POST", JOBS, 422, "schedule_at", json=job(schedule_at=YESTERDAY)),
    "schedule_at not a time": Bad(
        "POST", JOBS, 422, "schedule_at", json=job(schedule_at="tomorrow")
    ),
    "schedule_at as a number": Bad("POST", JOBS, 422, "schedule_at", json=job(schedule_at=1e9)),
    "timeout 0": Bad("POST", JOBS, 422, "timeout_seconds", json=job(timeout_seconds=0)),
    "timeout over a day": Bad(
        "POST", JOBS, 422, "timeout_seconds", json=job(timeout_seconds=86401)
    ),
    "timeout as a string": Bad(
        "POST", JOBS, 422, "timeout_seconds", json=job(timeout_seconds="60")
    ),
    "empty command": Bad("POST", JOBS, 422, "command", json=job(command="")),
    "NUL in command": Bad("POST", JOBS, 422, "command", json=job(command="echo \x00")),
    "1 MB command": Bad("POST", JOBS, 422, "command", json=job(command="c" * MB)),
    "1 MB job name": Bad("POST", JOBS, 422, "name", json=job(name="n" * MB)),
    "job unknown field": Bad("POST", JOBS, 422, "priority", json=job(priority=1)),
    "empty Idempotency-Key": Bad(
        "POST", JOBS, 422, "Idempotency-Key", json=job(), headers={"Idempotency-Key": ""}
    ),
    "Idempotency-Key of 256 characters": Bad(
        "POST", JOBS, 422, "Idempotency-Key", json=job(), headers={"Idempotency-Key": "k" * 256}
    ),
    "Idempotency-Key with a space": Bad(
        "POST", JOBS, 422, "Idempotency-Key", json=job(), headers={"Idempotency-Key": "a b"}
    ),
    # --- users and logins ---
    "short user password": Bad(
        "POST", USERS, 422, "password", json={"username": "newbie", "password": "short"}
    ),
    "user name with a space": Bad(
        "POST", USERS, 422, "username", json={"username": "new bie", "password": "long-enough"}
    ),
    "unknown role": Bad(
        "POST",
        USERS,
        422,
        "role",
        json={"username": "newbie", "password": "long-enough", "role": "root"},
    ),
    "existing user": Bad("POST", USERS, 409, json={"username": "admin", "password": "long-enough"}),
    "existing user in other case": Bad(
        "POST", USERS, 409, json={"username": "ADMIN", "password": "long-enough"}
    ),
    "update unknown user": Bad("PUT", f"{USERS}/nobody", 404, json={"role": "viewer"}),
    "update user to an unknown role": Bad(
        "PUT", f"{USERS}/admin", 422, "role", json={"role": "su"}
    ),
    "login with an unknown field": Bad(
        "POST", "/api/auth/token", 422, "otp", json={"username": "a", "password": "b", "otp": 1}
    ),
    "login with a numeric username": Bad(
        "POST", "/api/auth/token", 422, "username", json={"username": 1, "password": "b"}
    ),
    "login with truncated JSON": Bad("POST", "/api/auth/token", 400, content=b"{", headers=JSON),
    "empty refresh token": Bad(
        "POST", "/api/auth/refresh", 422, "refresh_token", json={"refresh_token": ""}
    ),
    "garbage refresh token": Bad(
        "POST", "/api/auth/refresh", 401, json={"refresh_token": "not.a.token"}
    ),
}


@dataclass
class Target:
    api: ApiClient
    ids: dict[str, str]

    def totals(self) -> dict[str, Any]:
        systems = self.api.get("/api/systems", limit=500).json()
        return {
            "systems": systems["total"],
            "jobs": self.api.get("/api/jobs").json()["total"],
            "users": self.api.get("/api/users").json()["total"],
            "system rows": systems["systems"],
        }


@pytest.fixture(scope="module")
def target(orca: OrcaServer) -> Iterator[Target]:
    """Two systems whose names the catalogue tries to take, and the totals before it runs."""
    api = orca.client()
    ids = {}
    for key, name in (("a", "existing-a"), ("b", "existing-b")):
        created = api.post("/api/systems", system(name=name))
        assert created.status_code == 201, created.text
        ids[key] = created.json()["id"]
    yield Target(api, ids)
    api.close()


@pytest.fixture(scope="module")
def before(target: Target) -> dict[str, Any]:
    return target.totals()


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


def test_the_catalogue_has_at_least_40_bad_requests() -> None:
    assert len(CATALOGUE) >= 40


@pytest.mark.parametrize("bad", list(CATALOGUE.values()), ids=list(CATALOGUE))
def test_a_bad_request_gets_its_documented_error(
    target: Target, before: dict[str, Any], bad: Bad
) -> None:
    path = bad.path.format(**target.ids) if "{a}" in bad.path else bad.path
    kwargs: dict[str, Any] = {"headers": bad.headers}
    if bad.content is not None:
        kwargs["content"] = bad.content
    elif bad.json is not None:
        kwargs["json"] = fill(bad.json, target.ids)
    response = target.api.http.request(bad.method, path, **kwargs)
    assert_error(response, bad.status, bad.field)


def test_after_the_whole_catalogue_nothing_was_stored(
    target: Target, before: dict[str, Any]
) -> None:
    assert target.totals() == before
