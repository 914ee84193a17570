"""The reference's complete workflow, over HTTP, against a real OpenSSH server."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from typing import Any

import httpx
import pytest

from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd

CANARY = "canary-e2e-9d41"


def register(api: ApiClient, sshd: SshdHost, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"host-{uuid.uuid4().hex[:8]}",
        "hostname": sshd.host,
        "port": sshd.port,
        "system_type": "linux",
        "username": sshd.username,
        "password": sshd.password,
    } | overrides
    response = api.post("/api/systems", {k: v for k, v in body.items() if v is not None})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def run(api: ApiClient, command: str, *systems: dict[str, Any]) -> dict[str, Any]:
    response = api.post(
        "/api/jobs", {"name": "t", "command": command, "system_ids": [s["id"] for s in systems]}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] in ("pending", "running", "completed")
    assert [e["system_id"] for e in created["executions"]] == [s["id"] for s in systems]
    return api.wait_for_job(created["id"])


def test_whoami_runs_over_ssh_with_a_password(api: ApiClient, sshd_host: SshdHost) -> None:
    system = register(api, sshd_host)
    assert system["health_status"] == "unknown" and "password" not in system
    job = run(api, "whoami", system)
    assert job["status"] == "completed"
    (execution,) = job["executions"]
    assert execution["status"] == "completed"
    assert execution["exit_code"] == 0
    assert execution["stdout"] == f"{sshd_host.username}\n"
    assert execution["stderr"] == ""
    assert execution["system_name"] == system["name"]
    assert execution["started_at"] <= execution["completed_at"]
    assert execution["duration_seconds"] >= 0


def test_whoami_runs_over_ssh_with_a_private_key(api: ApiClient, sshd_host: SshdHost) -> None:
    system = register(api, sshd_host, password=None, private_key=sshd_host.private_key)
    job = run(api, "whoami", system)
    assert job["status"] == "completed", job
    assert job["executions"][0]["stdout"] == f"{sshd_host.username}\n"


def test_a_non_zero_exit_fails_and_keeps_the_code_and_both_streams(
    api: ApiClient, sshd_host: SshdHost
) -> None:
    job = run(api, "echo out; echo err >&2; exit 3", register(api, sshd_host))
    assert job["status"] == "failed"
    (execution,) = job["executions"]
    assert (execution["status"], execution["exit_code"]) == ("failed", 3)
    assert (execution["stdout"], execution["stderr"]) == ("out\n", "err\n")


def test_an_unreachable_port_fails_with_a_reason(api: ApiClient, sshd_host: SshdHost) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    job = run(api, "whoami", register(api, sshd_host, port=closed_port))
    (execution,) = job["executions"]
    assert execution["status"] == "failed" and execution["exit_code"] is None
    assert str(closed_port) in execution["error_message"]


def test_a_job_runs_on_two_systems(api: ApiClient, sshd_host: SshdHost) -> None:
    by_password = register(api, sshd_host)
    by_key = register(api, sshd_host, password=None, private_key=sshd_host.private_key)
    job = run(api, "hostname -s >/dev/null && whoami", by_password, by_key)
    assert job["status"] == "completed"
    assert [e["stdout"] for e in job["executions"]] == [f"{sshd_host.username}\n"] * 2
    listed = api.get("/api/jobs", limit=1).json()
    assert listed["jobs"][0]["id"] == job["id"] and listed["total"] >= 1


def test_secrets_never_come_back_nor_reach_the_log(
    orca: OrcaServer, api: ApiClient, sshd_host: SshdHost
) -> None:
    system = register(api, sshd_host, password=CANARY)
    run(api, "true", system)
    bodies = [
        api.get(f"/api/systems/{system['id']}").text,
        api.get("/api/systems").text,
        api.get("/api/jobs").text,
        api.post(
            "/api/systems",
            {"name": system["name"], "hostname": "x", "username": "u", "password": CANARY},
        ).text,
        api.post(
            "/api/systems",
            {"name": "y", "hostname": "bad host", "username": "u", "password": CANARY},
        ).text,
    ]
    assert all(CANARY not in body for body in bodies)
    assert CANARY not in orca.log_path.read_text()


def test_jobs_and_results_survive_a_restart(orca: OrcaServer, sshd_host: SshdHost) -> None:
    api = orca.client()
    system = register(api, sshd_host)
    finished = [run(api, command, system)["id"] for command in ("whoami", "exit 7")]
    before = api.get("/api/jobs", limit=500).json()
    api.close()

    orca.stop()
    orca.start()

    api = orca.client()
    after = api.get("/api/jobs", limit=500).json()
    assert after == before
    assert [api.get(f"/api/jobs/{j}").json()["status"] for j in finished] == [
        "completed",
        "failed",
    ]
    assert api.get(f"/api/systems/{system['id']}").json()["name"] == system["name"]
    api.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("GET", "/api/jobs/6f1c2a9e-0000-4000-8000-000000000000", None, 404, None),
        ("GET", "/api/jobs/not-a-uuid", None, 422, "job_id"),
        ("GET", "/api/jobs?limit=0", None, 422, "limit"),
        ("POST", "/api/jobs", {"name": "x", "command": "true"}, 422, "system_ids"),
        (
            "POST",
            "/api/jobs",
            {"name": "x", "command": "true", "system_ids": []},
            422,
            "system_ids",
        ),
        (
            "POST",
            "/api/systems",
            {"name": "x", "hostname": "h", "username": "u", "port": 0, "password": "p"},
            422,
            "port",
        ),
        ("POST", "/api/systems", {"name": "x", "hostname": "h", "username": "u"}, 422, "password"),
        (
            "POST",
            "/api/systems",
            {"name": "x", "hostname": "h", "username": "u", "password": "p", "colour": "red"},
            422,
            "colour",
        ),
    ],
)
def test_bad_requests_get_a_clear_error(
    api: ApiClient, method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    response = api.http.request(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["detail"] and error["error_type"]
    assert error["request_id"] == response.headers["x-request-id"]
    if field is not None:
        assert field in [e["field"] for e in error["errors"]]


def test_malformed_json_is_a_400(api: ApiClient) -> None:
    response = api.http.post(
        "/api/systems", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error_type"] == "BadRequest"


def test_no_token_no_access(orca: OrcaServer) -> None:
    for path in ("/api/jobs", "/api/systems"):
        response = httpx.get(f"{orca.base_url}{path}", trust_env=False)
        assert response.status_code == 401
        assert response.json()["error_type"] == "AuthenticationError"
    response = httpx.post(
        f"{orca.base_url}/api/auth/token",
        json={"username": "admin", "password": "wrong"},
        trust_env=False,
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "command",
    ["sleep {n}", "sleep {n} | cat", 'trap "" TERM; sleep {n}'],
    ids=["sleep", "pipeline", "ignores-TERM"],
)
def test_cancelling_a_running_job_kills_its_remote_processes(
    api: ApiClient, sshd_host: SshdHost, command: str
) -> None:
    n = 300 + uuid.uuid4().int % 600  # a duration no other test uses, to find its process
    job = api.post(
        "/api/jobs",
        {
            "name": "c",
            "command": command.format(n=n),
            "system_ids": [register(api, sshd_host)["id"]],
        },
    ).json()
    deadline = time.monotonic() + 20
    while not _remote_pids(sshd_host, n):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    assert api.post(f"/api/jobs/{job['id']}/cancel", None).status_code == 200
    while (execution := api.get(f"/api/jobs/{job['id']}").json()["executions"][0])[
        "status"
    ] == "running":
        assert time.monotonic() < deadline + 30, "the execution never stopped"
        time.sleep(0.1)
    assert execution["status"] == "cancelled"
    assert api.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    assert _remote_pids(sshd_host, n) == []


def _remote_pids(sshd: SshdHost, n: int) -> list[str]:
    found = subprocess.run(
        ["pgrep", "-u", sshd.username, "-f", f"sleep {n}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return found.stdout.split()
