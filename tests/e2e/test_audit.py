"""The event log as a product: who did what, when, through which request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd
CANARY = "canary-audit-7e21"


def events(api: ApiClient, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/events", **params)
    assert response.status_code == 200, response.text
    return response.json()["events"]  # type: ignore[no-any-return]


def test_every_event_names_its_actor_and_request(api: ApiClient, sshd_host: SshdHost) -> None:
    response = api.http.post(
        "/api/systems",
        json={
            "name": "audited",
            "hostname": sshd_host.host,
            "port": sshd_host.port,
            "username": sshd_host.username,
            "password": sshd_host.password,
        },
        headers={"X-Request-ID": "audit-req-1"},
    )
    assert response.status_code == 201
    system_id = response.json()["id"]
    job = api.post("/api/jobs", {"name": "a", "command": "whoami", "system_ids": [system_id]})
    finished = api.wait_for_job(job.json()["id"])

    created = events(api, aggregate_id=system_id)
    assert created[0]["event_type"] == "orca.System.Created"
    assert (created[0]["actor"], created[0]["request_id"]) == ("admin", "audit-req-1")
    assert created[0]["data"]["sealed_credentials"] == "[sealed]"

    execution_id = finished["executions"][0]["id"]
    lifecycle = events(api, aggregate_id=execution_id)
    assert [e["event_type"] for e in lifecycle] == [
        "orca.Execution.Created",
        "orca.Execution.Started",
        "orca.Execution.Finished",
    ]
    assert lifecycle[0]["actor"] == "admin"
    assert lifecycle[1]["actor"].startswith("worker:")
    assert lifecycle[2]["data"]["stdout"] == f"{sshd_host.username}\n"


def test_the_log_pages_in_order_and_filters_by_type(api: ApiClient) -> None:
    first = api.get("/api/events", limit=3).json()
    positions = [e["position"] for e in first["events"]]
    assert positions == sorted(positions) and len(positions) == 3
    following = api.get("/api/events", after=first["next_after"], limit=3).json()
    assert following["events"][0]["position"] > positions[-1]
    only_users = events(api, type="orca.User.Created", limit=1000)
    assert only_users and {e["event_type"] for e in only_users} == {"orca.User.Created"}
    assert all(e["data"]["password_hash"] == "[redacted]" for e in only_users)


def test_viewers_cannot_read_the_log(orca: OrcaServer, api: ApiClient) -> None:
    api.post("/api/users", {"username": "auditee", "password": "viewer-pw-1", "role": "viewer"})
    viewer = orca.client("auditee", "viewer-pw-1")
    assert viewer.get("/api/events").status_code == 403
    viewer.close()


def test_orca_audit_prints_the_log_without_secrets(orca: OrcaServer, api: ApiClient) -> None:
    api.post(
        "/api/systems",
        {"name": "cli-audited", "hostname": "127.0.0.1", "username": "u", "password": CANARY},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")} | orca.env()
    table = subprocess.run(
        [sys.executable, "-m", "orca.cli", "audit"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "orca.System.Created" in table.stdout and CANARY not in table.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "orca.cli", "audit", "--json", "--after", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = as_json.stdout.splitlines()
    assert lines and all(line.startswith('{"position":') for line in lines)
    assert '"position":1,' not in as_json.stdout
    assert CANARY not in as_json.stdout


def test_a_system_s_history_shows_it_as_it_was(api: ApiClient) -> None:
    system = api.post(
        "/api/systems",
        {"name": "was-a", "hostname": "127.0.0.1", "username": "u", "password": CANARY},
    ).json()
    before_rename = datetime.now(UTC)
    time.sleep(0.01)
    assert api.http.put(f"/api/systems/{system['id']}", json={"name": "now-b"}).status_code == 200

    now = api.get(f"/api/systems/{system['id']}/history").json()
    assert [e["event_type"] for e in now["events"]] == [
        "orca.System.Created",
        "orca.System.Updated",
    ]
    assert (now["version"], now["state"]["name"]) == (2, "now-b")
    assert now["state"]["sealed_credentials"] == "[sealed]"
    assert CANARY not in json.dumps(now)

    then = api.get(f"/api/systems/{system['id']}/history", at=1).json()
    assert (then["version"], then["state"]["name"]) == (1, "was-a")
    at_time = api.get(f"/api/systems/{system['id']}/history", at=before_rename.isoformat()).json()
    assert at_time["state"]["name"] == "was-a"

    assert api.get(f"/api/systems/{system['id']}/history", at="yesterday").status_code == 422
    assert api.get(f"/api/jobs/{system['id']}/history").status_code == 404


def test_a_job_s_history_lists_its_events(api: ApiClient) -> None:
    system = api.post(
        "/api/systems",
        {"name": "hist-job", "hostname": "127.0.0.1", "port": 1, "username": "u", "password": "pw"},
    ).json()
    job = api.post("/api/jobs", {"name": "h", "command": "true", "system_ids": [system["id"]]})
    api.post(f"/api/jobs/{job.json()['id']}/cancel", None)
    result = api.get(f"/api/jobs/{job.json()['id']}/history").json()
    assert result["events"][0]["event_type"] == "orca.Job.Created"
    assert result["state"]["command"] == "true"


def test_the_systems_report_counts_executions_per_system_and_day(
    api: ApiClient, sshd_host: SshdHost
) -> None:
    system = api.post(
        "/api/systems",
        {
            "name": "reported",
            "hostname": sshd_host.host,
            "port": sshd_host.port,
            "username": sshd_host.username,
            "password": sshd_host.password,
        },
    ).json()
    for command in ("true", "false", "true"):
        job = api.post("/api/jobs", {"name": "r", "command": command, "system_ids": [system["id"]]})
        api.wait_for_job(job.json()["id"])
    deadline = time.monotonic() + 10
    while True:
        rows = [
            r
            for r in api.get("/api/reports/systems").json()["rows"]
            if r["system_id"] == system["id"]
        ]
        if (rows and rows[0]["executions"] == 3) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    (row,) = rows
    assert (row["system_name"], row["executions"], row["completed"]) == ("reported", 3, 2)
    assert row["success_rate"] == round(2 / 3, 4) and row["mean_duration_seconds"] >= 0
    assert row["day"] == datetime.now(UTC).strftime("%Y-%m-%d")
