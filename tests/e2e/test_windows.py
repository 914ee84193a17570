"""Windows systems over WinRM, through the API, against a WS-Management server on a real socket.

The server (tests/support/wsman.py) speaks the protocol pywinrm speaks, NTLM included, and runs
each command as a local process: it stands in for a Windows host, which this machine lacks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from support.server import ApiClient
from support.wsman import WsmanServer


@pytest.fixture(scope="module")
def windows_host() -> Iterator[WsmanServer]:
    with WsmanServer(auth="ntlm") as server:
        yield server


def register(api: ApiClient, host: WsmanServer, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"win-{time.monotonic_ns()}",
        "hostname": host.host,
        "port": host.port,
        "system_type": "windows",
        "username": host.username,
        "password": host.password,
    } | overrides
    response = api.post("/api/systems", body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_windows_system_defaults_to_port_5985(api: ApiClient) -> None:
    response = api.post(
        "/api/systems",
        {
            "name": f"win-default-{time.monotonic_ns()}",
            "hostname": "winhost.example",
            "system_type": "windows",
            "username": "Administrator",
            "password": "pw-12345678",
        },
    )
    assert response.status_code == 201 and response.json()["port"] == 5985


def test_basic_auth_over_plain_http_is_refused_at_registration(api: ApiClient) -> None:
    response = api.post(
        "/api/systems",
        {
            "name": "win-basic",
            "hostname": "winhost.example",
            "system_type": "windows",
            "username": "Administrator",
            "password": "pw-12345678",
            "winrm_transport": "basic",
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "winrm_transport"


def test_a_job_runs_on_a_windows_system_over_ntlm(
    api: ApiClient, windows_host: WsmanServer
) -> None:
    system = register(api, windows_host)
    created = api.post(
        "/api/jobs",
        {"name": "w", "command": "echo out; echo err >&2; exit 4", "system_ids": [system["id"]]},
    ).json()
    job = api.wait_for_job(created["id"])
    (execution,) = job["executions"]
    assert (execution["status"], execution["exit_code"]) == ("failed", 4)
    assert (execution["stdout"], execution["stderr"]) == ("out\n", "err\n")


def test_a_wrong_windows_password_fails_the_execution_without_showing_it(
    api: ApiClient, windows_host: WsmanServer
) -> None:
    system = register(api, windows_host, password="not-the-password-42")
    created = api.post(
        "/api/jobs", {"name": "w", "command": "echo hi", "system_ids": [system["id"]]}
    ).json()
    (execution,) = api.wait_for_job(created["id"])["executions"]
    assert execution["status"] == "failed"
    assert "authentication failed" in execution["error_message"]
    assert "not-the-password-42" not in execution["error_message"]


def test_cancelling_a_windows_job_stops_the_remote_command(
    api: ApiClient, windows_host: WsmanServer
) -> None:
    system = register(api, windows_host)
    created = api.post(
        "/api/jobs", {"name": "w", "command": "sleep 300", "system_ids": [system["id"]]}
    ).json()
    deadline = time.monotonic() + 10
    while api.get(f"/api/jobs/{created['id']}").json()["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    assert api.post(f"/api/jobs/{created['id']}/cancel", None).status_code == 200
    assert api.get(f"/api/jobs/{created['id']}").json()["status"] == "cancelled"
    deadline = time.monotonic() + 15
    while (execution := api.get(f"/api/jobs/{created['id']}").json()["executions"][0])[
        "status"
    ] == "running":
        assert time.monotonic() < deadline, "the running execution was never stopped"
        time.sleep(0.1)
    assert execution["status"] == "cancelled"
    assert windows_host.wait_until_none_running(within=10) == []
