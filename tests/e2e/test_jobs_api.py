"""/api/jobs against a real sshd: list, get, idempotent create, schedule and cancel."""

from __future__ import annotations

import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.contract import assert_error, bearer, http, login, wait_until
from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd

JOB_FIELDS = {"id", "name", "command", "status", "created_by", "created_at", "executions"}
EXECUTION_FIELDS = {
    "id",
    "system_id",
    "system_name",
    "status",
    "started_at",
    "completed_at",
    "exit_code",
    "stdout",
    "stderr",
    "duration_seconds",
    "error_message",
    "stdout_truncated",
    "stderr_truncated",
}


@pytest.fixture(scope="module")
def system(orca: OrcaServer, sshd_host: SshdHost) -> dict[str, Any]:
    api = orca.client()
    response = api.post(
        "/api/systems",
        {
            "name": "jobs-target",
            "hostname": sshd_host.host,
            "port": sshd_host.port,
            "username": sshd_host.username,
            "password": sshd_host.password,
        },
    )
    api.close()
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A file path on the sshd host (the same machine) that the remote command may write."""
    path = Path(f"/tmp/orca-e2e-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


def create(api: ApiClient, system: dict[str, Any], command: str, **extra: Any) -> dict[str, Any]:
    body = {"name": "t", "command": command, "system_ids": [system["id"]]} | extra
    response = api.post("/api/jobs", body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def remote_processes(pattern: str) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-u", "orcatest", "-f", pattern], capture_output=True, text=True, check=False
    )
    return found.stdout.split()


def test_a_new_job_is_created_with_one_pending_execution_per_system(
    api: ApiClient, system: dict[str, Any]
) -> None:
    job = create(api, system, "true", schedule_at=at(3600))
    assert set(job) >= JOB_FIELDS
    assert (job["name"], job["command"], job["status"]) == ("t", "true", "pending")
    assert job["created_by"] == "admin" and job["created_at"]
    (execution,) = job["executions"]
    assert execution["system_id"] == system["id"] and execution["status"] == "pending"
    assert execution["id"] and execution["system_name"] == system["name"]


def test_a_finished_job_shows_everything_each_execution_did(
    api: ApiClient, system: dict[str, Any]
) -> None:
    job = api.wait_for_job(create(api, system, "echo out; echo err >&2")["id"])
    assert set(job) >= JOB_FIELDS and job["status"] == "completed"
    (execution,) = job["executions"]
    assert set(execution) >= EXECUTION_FIELDS
    assert execution["system_name"] == "jobs-target" and execution["status"] == "completed"
    assert (execution["exit_code"], execution["stdout"], execution["stderr"]) == (
        0,
        "out\n",
        "err\n",
    )
    assert execution["error_message"] is None
    assert execution["stdout_truncated"] is False and execution["stderr_truncated"] is False
    started = datetime.fromisoformat(execution["started_at"])
    completed = datetime.fromisoformat(execution["completed_at"])
    assert started <= completed
    assert isinstance(execution["duration_seconds"], int | float)
    assert execution["duration_seconds"] >= 0


def test_the_list_is_newest_first_filters_by_status_and_creator_and_pages(
    orca: OrcaServer, api: ApiClient, system: dict[str, Any]
) -> None:
    done = api.wait_for_job(create(api, system, "true")["id"])
    failed = api.wait_for_job(create(api, system, "exit 4")["id"])
    assert (done["status"], failed["status"]) == ("completed", "failed")
    operator = f"op-{uuid.uuid4().hex[:6]}"
    user = {"username": operator, "password": "operator-pw-1", "role": "operator"}
    assert api.post("/api/users", user).status_code == 201
    token = login(orca.base_url, operator, "operator-pw-1")["access_token"]
    theirs = http().post(
        f"{orca.base_url}/api/jobs",
        json={
            "name": "o",
            "command": "true",
            "system_ids": [system["id"]],
            "schedule_at": at(3600),
        },
        headers=bearer(token),
    )
    assert theirs.status_code == 201, theirs.text

    listed = api.get("/api/jobs", limit=500).json()
    jobs = listed["jobs"]
    assert listed["total"] == len(jobs) >= 3
    assert (listed["limit"], listed["offset"]) == (500, 0)
    assert jobs[0]["id"] == theirs.json()["id"]  # the newest
    assert [j["created_at"] for j in jobs] == sorted((j["created_at"] for j in jobs), reverse=True)

    for status in ("completed", "failed", "pending"):
        filtered = api.get("/api/jobs", status=status, limit=500).json()
        assert filtered["jobs"] == [j for j in jobs if j["status"] == status], status
        assert filtered["total"] == len(filtered["jobs"]) >= 1
    mine = api.get("/api/jobs", created_by=operator).json()
    assert [j["id"] for j in mine["jobs"]] == [theirs.json()["id"]] and mine["total"] == 1
    assert api.get("/api/jobs", created_by="nobody-at-all").json() == {
        "jobs": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }

    page = api.get("/api/jobs", limit=2, offset=1).json()
    assert [j["id"] for j in page["jobs"]] == [j["id"] for j in jobs[1:3]]
    assert page["total"] == len(jobs)


def test_an_idempotency_key_makes_a_retry_return_the_same_job_and_run_nothing_twice(
    api: ApiClient, system: dict[str, Any], scratch: Path
) -> None:
    before = api.get("/api/jobs").json()["total"]
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    body = {"name": "once", "command": f"echo ran >> {scratch}", "system_ids": [system["id"]]}
    first = api.http.post("/api/jobs", json=body, headers=key)
    second = api.http.post("/api/jobs", json=body, headers=key)
    assert first.status_code == 201, first.text
    assert second.status_code in (200, 201), second.text
    assert second.json()["id"] == first.json()["id"]
    assert api.wait_for_job(first.json()["id"])["status"] == "completed"
    again = api.http.post("/api/jobs", json=body, headers=key)
    assert again.json()["id"] == first.json()["id"]
    time.sleep(0.5)  # time enough for a second run to show, had there been one
    assert scratch.read_text() == "ran\n"
    assert api.get("/api/jobs").json()["total"] == before + 1

    other = api.http.post(
        "/api/jobs", json=body | {"schedule_at": at(3600)}, headers={"Idempotency-Key": "other"}
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_a_job_scheduled_3_seconds_ahead_stays_pending_then_completes(
    api: ApiClient, system: dict[str, Any]
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=3)
    job = create(api, system, "whoami", schedule_at=when.isoformat())
    assert datetime.fromisoformat(job["scheduled_at"]) == when.replace(microsecond=0) or abs(
        datetime.fromisoformat(job["scheduled_at"]) - when
    ) < timedelta(seconds=1)
    time.sleep(1.5)
    waiting = api.get(f"/api/jobs/{job['id']}").json()
    assert waiting["status"] == "pending"
    assert [(e["status"], e["started_at"]) for e in waiting["executions"]] == [("pending", None)]

    finished = api.wait_for_job(job["id"], timeout=20)
    assert finished["status"] == "completed", finished
    (execution,) = finished["executions"]
    started = datetime.fromisoformat(execution["started_at"])
    assert when - timedelta(seconds=0.5) <= started <= when + timedelta(seconds=1)  # on time


def test_a_cancelled_scheduled_job_cancels_its_executions_and_never_runs(
    api: ApiClient, system: dict[str, Any], scratch: Path
) -> None:
    job = create(api, system, f"touch {scratch}", schedule_at=at(1.5))
    response = api.post(f"/api/jobs/{job['id']}/cancel", None)
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Job cancelled successfully"}
    cancelled = api.get(f"/api/jobs/{job['id']}").json()
    assert cancelled["status"] == "cancelled"
    assert [e["status"] for e in cancelled["executions"]] == ["cancelled"]
    listed = api.get("/api/jobs", status="cancelled", limit=500).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]

    time.sleep(3.5)  # two seconds past the time it was scheduled for
    assert not scratch.exists()
    assert api.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"


def test_a_cancelled_running_job_leaves_no_remote_process_behind(
    api: ApiClient, system: dict[str, Any]
) -> None:
    # `sleep 300.NNNN`: a sleep of 300 s that no other test (or concurrent run) shares.
    command = f"sleep 300.{random.randrange(10**6):06d}"
    job = create(api, system, command)
    wait_until(lambda: api.get(f"/api/jobs/{job['id']}").json()["status"] == "running")
    wait_until(lambda: remote_processes(f"^{command}$"), timeout=10)

    response = api.post(f"/api/jobs/{job['id']}/cancel", None)
    assert response.status_code == 200, response.text
    assert api.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    wait_until(lambda: not remote_processes(f"^{command}$"), timeout=15)

    def execution_statuses() -> list[str] | None:
        executions = api.get(f"/api/jobs/{job['id']}").json()["executions"]
        statuses = [e["status"] for e in executions]
        return None if {"pending", "running"} & set(statuses) else statuses

    assert wait_until(execution_statuses, timeout=15) == ["cancelled"]
    assert api.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"


def test_cancelling_a_finished_or_cancelled_job_is_a_conflict(
    api: ApiClient, system: dict[str, Any]
) -> None:
    finished = api.wait_for_job(create(api, system, "true")["id"])
    assert finished["status"] == "completed"
    assert assert_error(api.post(f"/api/jobs/{finished['id']}/cancel", None), 409)
    assert api.get(f"/api/jobs/{finished['id']}").json()["status"] == "completed"

    scheduled = create(api, system, "true", schedule_at=at(3600))
    assert api.post(f"/api/jobs/{scheduled['id']}/cancel", None).status_code == 200
    assert_error(api.post(f"/api/jobs/{scheduled['id']}/cancel", None), 409)


def test_cancelling_an_unknown_job_is_not_found(api: ApiClient) -> None:
    assert_error(api.post(f"/api/jobs/{uuid.uuid4()}/cancel", None), 404)
