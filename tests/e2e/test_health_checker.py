"""The periodic health checker (ORCA_HEALTH_INTERVAL): nobody calls /test, yet the systems'
health follows their hosts, in GET /api/systems/{id} and in the dashboard's counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from support.contract import serve, wait_until
from support.fixtures import BACKENDS
from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd

HEALTH_INTERVAL = 1.0
WITHIN = 20.0  # seconds; a check is due every HEALTH_INTERVAL


@pytest.fixture(params=BACKENDS)
def orca(request: pytest.FixtureRequest) -> Iterator[OrcaServer]:
    with serve(request.param, health_interval=HEALTH_INTERVAL) as server:
        yield server


@pytest.fixture
def host() -> Iterator[SshdHost]:
    with SshdHost() as sshd:
        yield sshd


def register(api: ApiClient, sshd: SshdHost) -> str:
    response = api.post(
        "/api/systems",
        {
            "name": f"health-{uuid.uuid4().hex[:8]}",
            "hostname": sshd.host,
            "port": sshd.port,
            "username": sshd.username,
            "password": sshd.password,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["health_status"] == "unknown"
    return str(response.json()["id"])


def system(api: ApiClient, system_id: str) -> dict[str, Any]:
    response = api.get(f"/api/systems/{system_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def becomes(api: ApiClient, system_id: str, status: str, after: datetime) -> datetime:
    """Wait until a check made after `after` says `status`; return when it was made."""

    def checked() -> datetime | None:
        s = system(api, system_id)
        at = s["last_health_check"]
        if s["health_status"] != status or at is None:
            return None
        when = datetime.fromisoformat(at)
        return when if when > after else None

    return wait_until(checked, timeout=WITHIN)


def systems_counts(api: ApiClient) -> dict[str, int]:
    counts = api.get("/api/dashboard").json()["systems"]
    return {k: counts[k] for k in ("total", "active", "healthy")}


def test_the_health_checker_follows_a_host_going_down_and_coming_back(
    api: ApiClient, host: SshdHost
) -> None:
    watched = register(api, host)
    inactive = register(api, host)
    put = api.http.put(f"/api/systems/{inactive}", json={"is_active": False})
    assert put.status_code == 200, put.text
    registered = datetime.fromisoformat(system(api, watched)["created_at"])

    first = becomes(api, watched, "healthy", after=registered)
    again = becomes(api, watched, "healthy", after=first)  # checked again, unasked
    assert again > first
    assert wait_until(lambda: systems_counts(api)["healthy"] == 1)
    assert systems_counts(api) == {"total": 2, "active": 1, "healthy": 1}
    unchecked = system(api, inactive)  # only active systems are tested
    assert (unchecked["health_status"], unchecked["last_health_check"]) == ("unknown", None)

    host.halt()
    down = becomes(api, watched, "unhealthy", after=again)
    assert wait_until(lambda: systems_counts(api)["healthy"] == 0)
    assert systems_counts(api) == {"total": 2, "active": 1, "healthy": 0}

    host.resume()
    becomes(api, watched, "healthy", after=down)
    assert wait_until(lambda: systems_counts(api)["healthy"] == 1)
    assert system(api, inactive)["health_status"] == "unknown"
    # The checker pinned the host key on first use, and jobs run with it.
    pinned = api.get(f"/api/systems/{watched}/host-key").json()["host_key"]
    assert pinned == host.public_host_key
    job = api.post("/api/jobs", {"name": "h", "command": "whoami", "system_ids": [watched]})
    assert job.status_code == 201, job.text
    (execution,) = api.wait_for_job(job.json()["id"])["executions"]
    assert (execution["status"], execution["stdout"]) == ("completed", f"{host.username}\n")
