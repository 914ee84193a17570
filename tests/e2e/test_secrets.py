"""A system's password never leaves Orca: not in a response, an error, the log or the database.

The canary passwords are unique strings. One is wrong for the host, the other (set with PUT)
is the real password of a user of a real sshd, so the job that then succeeds proves Orca kept
and opened it, only ever sealed.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from orca.application.sealing import SealError
from orca.bootstrap import Services, build
from support.contract import dump_database, http, wait_until
from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd

WRONG = f"canary-wrong-{uuid.uuid4().hex[:12]}"
REAL = f"canary-real-{uuid.uuid4().hex[:12]}"
CANARIES = (WRONG, REAL)
SEALED = re.compile(rb"v1:[A-Za-z0-9+/]+=*")


@pytest.fixture(scope="module")
def canary_host() -> Iterator[SshdHost]:
    """An sshd whose user's password is the REAL canary."""
    with SshdHost(username="orcacanary", password=REAL) as host:
        yield host


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    found = []
    for canary in CANARIES:
        for form in (canary.encode(), base64.b64encode(canary.encode())):
            if form in data:
                found.append(canary)
    return found


def test_a_canary_password_appears_nowhere_but_sealed(
    orca: OrcaServer, api: ApiClient, canary_host: SshdHost
) -> None:
    seen: list[str] = []

    def keep(response: Any, status: int) -> dict[str, Any]:
        seen.append(response.text)
        assert response.status_code == status, response.text
        return response.json()  # type: ignore[no-any-return]

    name = f"canary-{uuid.uuid4().hex[:8]}"
    system = keep(
        api.post(
            "/api/systems",
            {
                "name": name,
                "hostname": canary_host.host,
                "port": canary_host.port,
                "username": canary_host.username,
                "password": WRONG,
            },
        ),
        201,
    )
    path = f"/api/systems/{system['id']}"
    failed = api.wait_for_job(
        keep(
            api.post("/api/jobs", {"name": "c", "command": "whoami", "system_ids": [system["id"]]}),
            201,
        )["id"]
    )
    seen.append(str(failed))
    assert failed["status"] == "failed"
    assert keep(api.post(f"{path}/test", None), 200)["success"] is False

    keep(api.http.put(path, json={"password": REAL}), 200)
    worked = api.wait_for_job(
        keep(
            api.post("/api/jobs", {"name": "c", "command": "whoami", "system_ids": [system["id"]]}),
            201,
        )["id"]
    )
    seen.append(str(worked))
    assert worked["status"] == "completed", worked
    assert worked["executions"][0]["stdout"] == "orcacanary\n"
    assert keep(api.post(f"{path}/test", None), 200)["success"] is True

    # Errors that come back while a canary is in the request.
    for canary in CANARIES:
        bad_host = {"name": "x", "hostname": "bad host", "username": "u", "password": canary}
        keep(api.post("/api/systems", bad_host), 422)
        keep(
            api.post("/api/systems", bad_host | {"hostname": "h", "password": canary + "\x00"}), 422
        )
        keep(api.post("/api/systems", bad_host | {"hostname": "h", "name": name}), 409)
        keep(api.http.put(path, json={"password": canary, "port": "22"}), 422)
        keep(api.http.put(path, json={"password": canary, "colour": "red"}), 422)
        keep(
            http().post(
                f"{orca.base_url}/api/auth/token", json={"username": "admin", "password": canary}
            ),
            401,
        )
    for read in ("/api/systems", path, "/api/jobs", f"/api/jobs/{worked['id']}", "/api/dashboard"):
        keep(api.get(read), 200)

    assert [text for text in seen if leaks(text)] == []
    assert leaks(orca.log_path.read_bytes()) == []

    dump = dump_database(orca.settings)
    assert {"systems", "jobs", "executions"} <= set(dump.views) and dump.events
    assert {table: leaks(rows) for table, rows in dump.views.items() if leaks(rows)} == {}
    assert leaks(dump.events) == []

    # ...and the raw events do hold both passwords, sealed for this very system.
    opened = []
    services = build(orca.settings)
    try:
        for sealed in SEALED.findall(dump.events):
            try:
                system_id = uuid.UUID(system["id"])
                opened.append(services.vault.open({system_id: sealed.decode()})[system_id])
            except SealError:
                continue  # another system's credentials
    finally:
        services.close()
    assert any(WRONG.encode() in plain for plain in opened)
    assert any(REAL.encode() in plain for plain in opened)


def test_a_deleted_systems_history_keeps_no_plaintext_either(
    orca: OrcaServer, api: ApiClient
) -> None:
    created = api.post(
        "/api/systems",
        {
            "name": f"gone-{uuid.uuid4().hex[:6]}",
            "hostname": "h",
            "username": "u",
            "password": WRONG,
        },
    )
    assert created.status_code == 201
    system_id = uuid.UUID(created.json()["id"])
    services = build(orca.settings)
    try:
        sealed = SEALED.findall(dump_database(orca.settings).events)
        assert any(WRONG.encode() in _try_open(services, system_id, s) for s in sealed)
        assert api.http.delete(f"/api/systems/{system_id}").status_code == 200
        dump = wait_until(lambda: dump_database(orca.settings))
        assert leaks(dump.events) == [] and not any(leaks(rows) for rows in dump.views.values())
        # Crypto-shredding: the sealed copies are still in the log, and open no more.
        assert SEALED.findall(dump.events)
        assert not any(_try_open(services, system_id, s) for s in SEALED.findall(dump.events))
    finally:
        services.close()


def _try_open(services: Services, system_id: uuid.UUID, sealed: bytes) -> bytes:
    try:
        return services.vault.open({system_id: sealed.decode()})[system_id]
    except SealError:
        return b""
