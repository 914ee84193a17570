"""/api/dashboard on a server of its own, so every count is known; /health and /health/detailed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from support.contract import http, wait_until
from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

SHAPE = {
    "user": {"authenticated", "username"},
    "systems": {"total", "active", "healthy", "linux", "windows"},
    "jobs": {"total", "pending", "running", "completed", "failed"},
    "executions": {"total", "pending", "running", "completed", "failed", "average_duration"},
    "engine": {"status", "running_jobs", "available_slots"},
}


def dashboard(api: ApiClient) -> dict[str, Any]:
    response = api.get("/api/dashboard")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= set(SHAPE)
    for part, fields in SHAPE.items():
        assert set(body[part]) >= fields, part
    return body


def counts(body: dict[str, Any], part: str) -> dict[str, Any]:
    return {k: body[part][k] for k in SHAPE[part] if k != "average_duration"}


def test_a_fresh_server_shows_an_empty_dashboard_and_an_idle_engine(api: ApiClient) -> None:
    body = wait_until(lambda: (d := dashboard(api))["engine"]["status"] == "healthy" and d)
    assert body["user"] == {"authenticated": True, "username": "admin"} | {
        k: v for k, v in body["user"].items() if k not in ("authenticated", "username")
    }
    assert counts(body, "systems") == dict.fromkeys(SHAPE["systems"], 0)
    assert counts(body, "jobs") == dict.fromkeys(SHAPE["jobs"], 0)
    assert counts(body, "executions") == dict.fromkeys(
        SHAPE["executions"] - {"average_duration"}, 0
    )
    assert body["executions"]["average_duration"] is None
    assert body["engine"]["running_jobs"] == 0
    assert body["engine"]["available_slots"] == 10  # ORCA_MAX_CONCURRENCY's default


@pytest.mark.sshd
def test_the_dashboard_counts_what_was_created(api: ApiClient, sshd_host: SshdHost) -> None:
    def register(**extra: Any) -> str:
        body = {
            "name": f"dash-{len(extra)}-{datetime.now(UTC).timestamp()}",
            "hostname": sshd_host.host,
            "port": sshd_host.port,
            "username": sshd_host.username,
            "password": sshd_host.password,
        } | extra
        response = api.post("/api/systems", body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    a, b = register(), register(description="second")
    windows = register(system_type="windows", port=5985)
    assert api.http.put(f"/api/systems/{windows}", json={"is_active": False}).status_code == 200
    assert api.post(f"/api/systems/{a}/test", None).json()["success"] is True

    def run(command: str, *systems: str, **extra: Any) -> dict[str, Any]:
        body = {"name": command, "command": command, "system_ids": list(systems)} | extra
        response = api.post("/api/jobs", body)
        assert response.status_code == 201, response.text
        if "schedule_at" in extra:
            return response.json()  # type: ignore[no-any-return]
        return api.wait_for_job(response.json()["id"])

    assert run("true", a)["status"] == "completed"
    assert run("exit 1", b)["status"] == "failed"
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert run("true", a, b, schedule_at=later)["status"] == "pending"

    body = dashboard(api)
    assert counts(body, "systems") == {
        "total": 3,
        "active": 2,
        "healthy": 1,
        "linux": 2,
        "windows": 1,
    }
    assert counts(body, "jobs") == {
        "total": 3,
        "pending": 1,
        "running": 0,
        "completed": 1,
        "failed": 1,
    }
    assert counts(body, "executions") == {
        "total": 4,
        "pending": 2,
        "running": 0,
        "completed": 1,
        "failed": 1,
    }
    average = body["executions"]["average_duration"]
    assert isinstance(average, int | float) and average > 0
    assert body["engine"]["running_jobs"] == body["jobs"]["running"] == 0
    assert body["engine"]["available_slots"] == 10


def test_health_says_the_service_is_healthy_without_a_token(orca: OrcaServer) -> None:
    response = http().get(f"{orca.base_url}/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "service", "version"}
    assert (body["status"], body["service"]) == ("healthy", "orca-job-orchestrator")
    assert isinstance(body["version"], str) and body["version"]


def test_detailed_health_reports_the_database_and_the_execution_engine(orca: OrcaServer) -> None:
    def healthy() -> dict[str, Any] | None:
        response = http().get(f"{orca.base_url}/health/detailed")
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and body["status"] == "healthy" else None

    body = wait_until(healthy)
    assert set(body) >= {"status", "service", "version", "database", "components"}
    assert body["service"] == "orca-job-orchestrator"
    database = body["database"]
    assert set(database) >= {"status", "response_time_ms", "active_connections"}
    assert database["status"] == "healthy"
    assert isinstance(database["response_time_ms"], int | float)
    assert database["response_time_ms"] >= 0
    assert isinstance(database["active_connections"], int)
    assert database["active_connections"] >= 1
    assert body["components"] == {
        "database": "healthy",
        "execution_engine": "healthy",
        "projections": "healthy",
    }


def test_metrics_show_requests_and_orca_state_for_prometheus(orca: OrcaServer) -> None:
    api = orca.client()
    api.get("/api/jobs")
    api.close()
    text = httpx.get(f"{orca.base_url}/metrics", trust_env=False).text
    assert 'orca_http_requests_total{handler="list_jobs",method="GET",status="200"}' in text
    for name in (
        'orca_executions{status="completed"}',
        'orca_jobs{status="pending"}',
        "orca_queue_depth",
        "orca_projection_lag_events",
        "orca_executor_slots_in_use",
        "orca_http_request_duration_seconds_bucket",
    ):
        assert name in text, name
