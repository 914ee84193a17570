"""/api/systems: register, list, filter, change, delete and test the machines Orca runs on."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from support.contract import assert_error
from support.server import ApiClient
from support.sshd import SshdHost

SYSTEM_FIELDS = {
    "id",
    "name",
    "hostname",
    "port",
    "system_type",
    "username",
    "is_active",
    "health_status",
    "created_at",
    "last_health_check",
}
SECRET_WORDS = ("password", "private_key", "passphrase", "credential", "secret")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register(api: ApiClient, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"sys-{uuid.uuid4().hex[:8]}",
        "hostname": "127.0.0.1",
        "username": "deploy",
        "password": "deploy-password",
    } | overrides
    response = api.post("/api/systems", {k: v for k, v in body.items() if v is not None})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def register_sshd(api: ApiClient, sshd: SshdHost, **overrides: Any) -> dict[str, Any]:
    return register(
        api,
        hostname=sshd.host,
        port=sshd.port,
        username=sshd.username,
        password=sshd.password,
        **overrides,
    )


def update(api: ApiClient, system_id: str, **changes: Any) -> dict[str, Any]:
    response = api.http.put(f"/api/systems/{system_id}", json=changes)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def everything(api: ApiClient, **filters: Any) -> dict[str, Any]:
    response = api.get("/api/systems", limit=500, **filters)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_new_system_has_the_documented_shape_and_no_credentials(api: ApiClient) -> None:
    system = register(api, description="web front", port=2222)
    assert set(system) >= SYSTEM_FIELDS
    assert system["port"] == 2222 and system["system_type"] == "linux"
    assert system["is_active"] is True
    assert system["health_status"] == "unknown" and system["last_health_check"] is None
    assert not [key for key in system if any(word in key for word in SECRET_WORDS)]
    assert api.get(f"/api/systems/{system['id']}").json() == system


def test_a_linux_system_defaults_to_port_22_and_a_windows_one_to_5985(api: ApiClient) -> None:
    assert register(api)["port"] == 22
    windows = register(api, system_type="windows")
    assert (windows["system_type"], windows["port"]) == ("windows", 5985)


def test_the_list_filters_by_active_and_system_type_and_pages_with_a_total(
    api: ApiClient,
) -> None:
    register(api)
    register(api, system_type="windows")
    update(api, register(api)["id"], is_active=False)
    update(api, register(api, system_type="windows")["id"], is_active=False)

    listed = everything(api)
    systems = listed["systems"]
    assert listed["total"] == len(systems) >= 4
    assert (listed["limit"], listed["offset"]) == (500, 0)
    for filters, keep in [
        ({"active": "true"}, lambda s: s["is_active"]),
        ({"active": "false"}, lambda s: not s["is_active"]),
        ({"system_type": "linux"}, lambda s: s["system_type"] == "linux"),
        ({"system_type": "windows"}, lambda s: s["system_type"] == "windows"),
        (
            {"active": "true", "system_type": "windows"},
            lambda s: s["is_active"] and s["system_type"] == "windows",
        ),
    ]:
        filtered = everything(api, **filters)
        wanted = [s for s in systems if keep(s)]
        assert filtered["systems"] == wanted, filters
        assert filtered["total"] == len(wanted) >= 1, filters

    page = api.get("/api/systems", limit=2, offset=1).json()
    assert page["systems"] == systems[1:3]
    assert (page["total"], page["limit"], page["offset"]) == (len(systems), 2, 1)
    beyond = api.get("/api/systems", offset=len(systems)).json()
    assert beyond["systems"] == [] and beyond["total"] == len(systems)
    assert api.get("/api/systems").json()["limit"] == 50


def test_a_partial_update_changes_only_the_fields_it_names(api: ApiClient) -> None:
    system = register(api, description="before")
    new_name = f"renamed-{uuid.uuid4().hex[:8]}"
    renamed = update(api, system["id"], name=new_name)
    assert renamed["name"] == new_name
    unchanged = {"id", "hostname", "port", "system_type", "username", "description", "is_active"}
    assert {k: renamed[k] for k in unchanged} == {k: system[k] for k in unchanged}

    moved = update(api, system["id"], port=2200)
    assert (moved["port"], moved["name"], moved["description"]) == (2200, new_name, "before")
    assert api.get(f"/api/systems/{system['id']}").json() == moved


def test_a_deactivated_system_leaves_the_active_list(api: ApiClient) -> None:
    system = register(api)
    assert system["id"] in [s["id"] for s in everything(api, active="true")["systems"]]
    assert update(api, system["id"], is_active=False)["is_active"] is False
    assert system["id"] not in [s["id"] for s in everything(api, active="true")["systems"]]
    assert system["id"] in [s["id"] for s in everything(api, active="false")["systems"]]


def test_renaming_to_a_taken_name_is_a_conflict_and_changes_nothing(api: ApiClient) -> None:
    taken = register(api)
    system = register(api)
    for name in (taken["name"], taken["name"].upper()):
        response = api.http.put(f"/api/systems/{system['id']}", json={"name": name})
        assert assert_error(response, 409)["error_type"] == "Conflict"
    assert api.get(f"/api/systems/{system['id']}").json() == system


def test_credentials_are_write_only(api: ApiClient) -> None:
    system = register(api, password="first-secret-pw")
    changed = update(api, system["id"], password="second-secret-pw", private_key="KEY-TEXT")
    for body in (
        changed,
        api.get(f"/api/systems/{system['id']}").json(),
        *everything(api)["systems"],
    ):
        assert not [key for key in body if any(word in key for word in SECRET_WORDS)], body
        assert "secret-pw" not in str(body) and "KEY-TEXT" not in str(body)


@pytest.mark.sshd
def test_a_deleted_system_is_gone_with_its_executions_and_its_name_is_free(
    api: ApiClient, sshd_host: SshdHost
) -> None:
    doomed = register_sshd(api, sshd_host)
    kept = register_sshd(api, sshd_host)
    created = api.post(
        "/api/jobs", {"name": "both", "command": "whoami", "system_ids": [doomed["id"], kept["id"]]}
    )
    assert created.status_code == 201, created.text
    job = api.wait_for_job(created.json()["id"])
    assert job["status"] == "completed", job

    response = api.http.delete(f"/api/systems/{doomed['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "System deleted successfully"}

    assert_error(api.get(f"/api/systems/{doomed['id']}"), 404)
    assert doomed["id"] not in [s["id"] for s in everything(api)["systems"]]
    after = api.get(f"/api/jobs/{job['id']}").json()
    assert [e["system_id"] for e in after["executions"]] == [kept["id"]]
    (listed,) = [j for j in api.get("/api/jobs", limit=500).json()["jobs"] if j["id"] == job["id"]]
    assert [e["system_id"] for e in listed["executions"]] == [kept["id"]]

    reborn = register(api, name=doomed["name"])
    assert reborn["id"] != doomed["id"] and reborn["name"] == doomed["name"]


def test_a_deleted_system_is_not_found_whatever_is_asked_of_it(api: ApiClient) -> None:
    system = register(api)
    assert api.http.delete(f"/api/systems/{system['id']}").status_code == 200
    path = f"/api/systems/{system['id']}"
    assert_error(api.get(path), 404)
    assert_error(api.http.put(path, json={"description": "x"}), 404)
    assert_error(api.post(f"{path}/test", None), 404)
    assert_error(api.http.delete(path), 404)


@pytest.mark.sshd
def test_a_connection_test_against_a_real_sshd_succeeds_and_marks_the_system_healthy(
    api: ApiClient, sshd_host: SshdHost
) -> None:
    system = register_sshd(api, sshd_host)
    response = api.post(f"/api/systems/{system['id']}/test", None)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is True, result
    assert result["system_info"]["whoami_output"] == sshd_host.username
    assert result["system_info"]["hostname"] and "Linux" in result["system_info"]["os_info"]
    assert isinstance(result["response_time_ms"], int | float) and result["response_time_ms"] >= 0

    tested = api.get(f"/api/systems/{system['id']}").json()
    assert tested["health_status"] == "healthy"
    assert tested["last_health_check"] is not None


def test_a_connection_test_against_a_closed_port_fails_and_marks_the_system_unhealthy(
    api: ApiClient,
) -> None:
    system = register(api, port=closed_port())
    response = api.post(f"/api/systems/{system['id']}/test", None)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is False
    assert isinstance(result["error"], str) and result["error"]
    assert result.get("system_info") is None

    tested = api.get(f"/api/systems/{system['id']}").json()
    assert tested["health_status"] == "unhealthy"
    assert tested["last_health_check"] is not None
