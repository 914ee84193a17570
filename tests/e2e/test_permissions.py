"""Every route of the endpoint table answers every kind of caller as its permission says.

The routes come from ``orca.http.app.ENDPOINTS``, so a new route is covered the day it is added.
An allowed call is a real, valid request (an existing id, a valid body) and must succeed with the
route's own status; a call without a usable token is 401, a role without the permission 403.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from orca.http.app import ENDPOINTS, Api
from support.contract import (
    bearer,
    claims_of,
    expired,
    http,
    login,
    signed,
    tampered,
    unsigned,
)
from support.server import OrcaServer

# The contract, written out here rather than imported: the test states what the roles may do.
ROLE_PERMISSIONS = {
    "operator": {"systems:read", "jobs:read", "jobs:write"},
    "viewer": {"systems:read", "jobs:read"},
}
ROLES = ("admin", "operator", "viewer")
BAD_TOKENS = ("no token", "expired token", "tampered token", "alg none token", "refresh token")
KINDS = (*ROLES, *BAD_TOKENS)
PASSWORD = "role-password-1"
SUCCESS: dict[str, int] = {f"{api.method} {api.path}": api.status for api in ENDPOINTS}


def may(role: str, permission: str) -> bool:
    if permission == "authenticated" or role == "admin":
        return True
    return permission in ROLE_PERMISSIONS[role]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    """A server with one user per role and a system and a job everyone may look at."""

    orca: OrcaServer
    admin: httpx.Client
    access: dict[str, str] = field(default_factory=dict)
    refresh: str = ""
    system_id: str = ""
    job_id: str = ""

    def new_system(self) -> str:
        response = self.admin.post("/api/systems", json=system_body())
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def new_scheduled_job(self) -> str:
        response = self.admin.post("/api/jobs", json=job_body(self.system_id))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def new_user(self) -> str:
        name = f"user-{uuid.uuid4().hex[:8]}"
        body = {"username": name, "password": PASSWORD, "role": "viewer"}
        response = self.admin.post("/api/users", json=body)
        assert response.status_code == 201, response.text
        return name

    def fresh_login(self, role: str) -> dict[str, Any]:
        username = "admin" if role == "admin" else f"perm-{role}"
        password = self.orca.settings.admin_password if role == "admin" else PASSWORD
        return login(self.orca.base_url, username, password or "")


def system_body() -> dict[str, Any]:
    return {
        "name": f"perm-{uuid.uuid4().hex[:8]}",
        "hostname": "127.0.0.1",
        "port": closed_port(),
        "username": "nobody",
        "password": "never-used-pw",
    }


def job_body(system_id: str) -> dict[str, Any]:
    later = datetime.now(UTC) + timedelta(days=1)  # scheduled: it never runs during the test
    return {
        "name": "permission probe",
        "command": "true",
        "system_ids": [system_id],
        "schedule_at": later.isoformat(),
    }


@pytest.fixture(scope="module")
def world(orca: OrcaServer) -> Iterator[World]:
    admin_token = login(orca.base_url, "admin", orca.settings.admin_password or "")
    admin = httpx.Client(
        base_url=orca.base_url,
        headers=bearer(admin_token["access_token"]),
        timeout=30,
        trust_env=False,
    )
    w = World(orca=orca, admin=admin)
    for role in ("operator", "viewer"):
        body = {"username": f"perm-{role}", "password": PASSWORD, "role": role}
        assert admin.post("/api/users", json=body).status_code == 201
    w.access = {role: w.fresh_login(role)["access_token"] for role in ROLES}
    w.refresh = w.fresh_login("admin")["refresh_token"]
    w.system_id = w.new_system()
    w.job_id = w.new_scheduled_job()
    yield w
    admin.close()


def a_valid_call(
    api: Api, w: World, allowed: bool
) -> tuple[str, dict[str, Any] | None, int | None]:
    """Path, JSON body and success status of a call that an allowed caller gets through.

    None as the status means "a route this test does not know yet": it must then at least not
    be refused for the role (not 401 or 403) and not fail (not 5xx). A caller who must be
    refused gets a victim that does not exist for destructive calls, so a missing check shows
    up as a wrong status rather than as damage to the other cases.
    """
    key = f"{api.method} {api.path}"
    status = SUCCESS[key]
    nobody = str(uuid.uuid4())
    match key:
        case "GET /health" | "GET /health/detailed" | "GET /api/auth/me" | "GET /api/dashboard":
            return api.path, None, status
        case "POST /api/auth/token":
            password = w.orca.settings.admin_password
            return api.path, {"username": "admin", "password": password}, status
        case "POST /api/auth/refresh" | "POST /api/auth/logout":
            return api.path, None, status
        case "GET /api/users" | "GET /api/systems" | "GET /api/jobs":
            return api.path, None, status
        case "POST /api/users":
            username = f"new-{uuid.uuid4().hex[:8]}"
            return api.path, {"username": username, "password": PASSWORD}, status
        case "PUT /api/users/{username}":
            user = w.new_user() if allowed else f"nobody-{nobody[:8]}"
            return f"/api/users/{user}", {"role": "operator"}, status
        case "POST /api/systems":
            return api.path, system_body(), status
        case "GET /api/systems/{system_id}":
            return f"/api/systems/{w.system_id}", None, status
        case "PUT /api/systems/{system_id}":
            return f"/api/systems/{w.system_id}", {"description": "changed"}, status
        case "DELETE /api/systems/{system_id}":
            return f"/api/systems/{w.new_system() if allowed else nobody}", None, status
        case "POST /api/systems/{system_id}/test":
            return f"/api/systems/{w.system_id}/test", None, status
        case "POST /api/jobs":
            return api.path, job_body(w.system_id), status
        case "GET /api/jobs/{job_id}":
            return f"/api/jobs/{w.job_id}", None, status
        case "POST /api/jobs/{job_id}/cancel":
            return f"/api/jobs/{w.new_scheduled_job() if allowed else nobody}/cancel", None, status
    return re.sub(r"{\w+}", str(uuid.uuid4()), api.path), None, None


def token_of(kind: str, api: Api, w: World) -> str | None:
    if kind == "no token":
        return None
    if kind in ROLES:
        if api.path == "/api/auth/logout":
            return str(w.fresh_login(kind)["access_token"])  # the shared session must live on
        return w.access[kind]
    if kind == "refresh token":
        return w.refresh
    forge = {"expired token": expired, "tampered token": None, "alg none token": None}[kind]
    admin = w.access["admin"]
    if forge is not None:
        return forge(w.orca.settings, admin)
    return tampered(admin) if kind == "tampered token" else unsigned(admin)


def expected_status(kind: str, api: Api, success: int | None) -> int | None:
    if api.permission is None:
        if api.path == "/api/auth/refresh":  # public, but it needs a token to swap
            return success if kind in (*ROLES, "refresh token") else 401
        return success  # a public route ignores whatever token comes with it
    if kind not in ROLES:
        return 401
    return success if may(kind, api.permission) else 403


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("api", ENDPOINTS, ids=lambda a: f"{a.method} {a.path}")
def test_every_route_answers_every_kind_of_caller_as_its_permission_says(
    world: World, api: Api, kind: str
) -> None:
    want = expected_status(kind, api, SUCCESS[f"{api.method} {api.path}"])
    path, body, success = a_valid_call(api, world, allowed=want not in (401, 403))
    want = expected_status(kind, api, success)
    token = token_of(kind, api, world)
    response = http().request(
        api.method,
        f"{world.orca.base_url}{path}",
        json=body,
        headers=bearer(token) if token else {},
    )
    assert response.status_code < 500, response.text
    if want is None:
        assert response.status_code not in (401, 403), response.text
        return
    assert response.status_code == want, (kind, path, response.status_code, response.text)
    if want == 401:
        assert response.json()["error_type"] == "AuthenticationError"
        assert response.headers["www-authenticate"] == "Bearer"
    elif want == 403:
        assert response.json()["error_type"] == "PermissionDenied"
        assert api.permission in response.json()["detail"]
    if kind == "refresh token" and api.path == "/api/auth/refresh":
        world.refresh = response.json()["refresh_token"]  # rotated: the old one is spent


def test_a_token_signed_with_the_servers_key_is_accepted_so_forged_ones_fail_for_their_flaw(
    world: World,
) -> None:
    """The expired token of the table differs from a valid one only in its expiry."""
    resigned = signed(world.orca.settings, claims_of(world.access["viewer"]))
    response = http().get(f"{world.orca.base_url}/api/auth/me", headers=bearer(resigned))
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "perm-viewer"


def test_a_forbidden_call_changes_nothing(world: World) -> None:
    before = world.admin.get(f"/api/systems/{world.system_id}").json()
    response = http().put(
        f"{world.orca.base_url}/api/systems/{world.system_id}",
        json={"name": "taken-over"},
        headers=bearer(world.access["operator"]),
    )
    assert response.status_code == 403
    assert world.admin.get(f"/api/systems/{world.system_id}").json() == before
