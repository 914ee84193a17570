"""SSH host keys through the API: trust on first use, a changed key refused, an admin re-pin.

Each test has an sshd of its own, restarted with a new host key at the same address and port, as
when a machine is reinstalled. Fingerprints are checked against ``ssh-keygen``, not Orca's code.
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.server import ApiClient
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd


@pytest.fixture
def host() -> Iterator[SshdHost]:
    with SshdHost() as sshd:
        yield sshd


def ssh_keygen_fingerprint(public_key: str) -> str:
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", "-"],
        input=public_key + "\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    return listed.stdout.split()[1]


def a_stranger_key() -> str:
    """A valid ed25519 public key that no sshd here holds."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
        )
        algorithm, data = path.with_suffix(".pub").read_text().split()[:2]
        return f"{algorithm} {data}"


def register(api: ApiClient, sshd: SshdHost, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"hk-{uuid.uuid4().hex[:8]}",
        "hostname": sshd.host,
        "port": sshd.port,
        "username": sshd.username,
        "password": sshd.password,
    } | overrides
    response = api.post("/api/systems", body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def run(api: ApiClient, system: dict[str, Any], command: str) -> dict[str, Any]:
    response = api.post(
        "/api/jobs", {"name": "hk", "command": command, "system_ids": [system["id"]]}
    )
    assert response.status_code == 201, response.text
    job = api.wait_for_job(response.json()["id"])
    (execution,) = job["executions"]
    return execution  # type: ignore[no-any-return]


def host_key(api: ApiClient, system: dict[str, Any]) -> dict[str, Any]:
    response = api.get(f"/api/systems/{system['id']}/host-key")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def marker() -> Path:
    """A file the remote command would create (the sshd runs on this machine)."""
    return Path(tempfile.gettempdir()) / f"orca-host-key-{uuid.uuid4().hex}"


def test_a_changed_host_key_stops_jobs_until_an_admin_repins_it(
    api: ApiClient, host: SshdHost
) -> None:
    system = register(api, host)
    assert host_key(api, system) == {"host_key": None, "fingerprint": None}
    assert run(api, system, "whoami")["stdout"] == f"{host.username}\n"
    old_key = host.public_host_key
    old_fingerprint = ssh_keygen_fingerprint(old_key)
    assert host_key(api, system) == {"host_key": old_key, "fingerprint": old_fingerprint}

    host.resume(new_host_key=True)  # same address and port, another key
    new_key = host.public_host_key
    assert new_key != old_key
    touched = marker()
    refused = run(api, system, f"touch {touched}")

    assert (refused["status"], refused["exit_code"]) == ("failed", None)
    assert refused["error_message"] == (
        f"host key for {host.host}:{host.port} changed (pinned {old_fingerprint}, "
        f"offered {ssh_keygen_fingerprint(new_key)}); re-pin it with "
        f"POST /api/systems/{system['id']}/host-key if the change is expected"
    )
    assert not touched.exists(), "the command ran on a host whose key changed"
    assert host_key(api, system)["host_key"] == old_key  # never silently replaced
    assert run(api, system, "true")["status"] == "failed"  # and it stays refused

    repinned = api.post(f"/api/systems/{system['id']}/host-key", {"host_key": new_key})
    assert repinned.status_code == 200, repinned.text
    assert repinned.json() == {"host_key": new_key, "fingerprint": ssh_keygen_fingerprint(new_key)}
    assert host_key(api, system) == repinned.json()

    after = run(api, system, f"touch {touched} && whoami")
    assert (after["status"], after["stdout"]) == ("completed", f"{host.username}\n")
    assert touched.exists()
    touched.unlink()

    pins = api.get(
        "/api/events", aggregate_id=system["id"], type="orca.System.HostKeyPinned"
    ).json()["events"]
    assert [(e["data"]["host_key"], e["data"]["pinned_by"]) for e in pins] == [
        (old_key, "trust-on-first-use"),
        (new_key, "admin"),
    ]


def test_a_host_key_given_at_registration_is_trusted_from_the_first_job(
    api: ApiClient, host: SshdHost
) -> None:
    system = register(api, host, host_key=host.public_host_key)
    assert host_key(api, system) == {
        "host_key": host.public_host_key,
        "fingerprint": ssh_keygen_fingerprint(host.public_host_key),
    }

    execution = run(api, system, "whoami")

    assert (execution["status"], execution["stdout"]) == ("completed", f"{host.username}\n")


def test_a_wrong_host_key_given_at_registration_fails_and_is_not_replaced(
    api: ApiClient, host: SshdHost
) -> None:
    wrong = a_stranger_key()
    system = register(api, host, host_key=wrong)
    touched = marker()

    execution = run(api, system, f"touch {touched}")

    assert (execution["status"], execution["exit_code"]) == ("failed", None)
    assert execution["error_message"].startswith(
        f"host key for {host.host}:{host.port} changed (pinned {ssh_keygen_fingerprint(wrong)}, "
        f"offered {ssh_keygen_fingerprint(host.public_host_key)})"
    )
    assert f"POST /api/systems/{system['id']}/host-key" in execution["error_message"]
    assert not touched.exists()
    assert host_key(api, system)["host_key"] == wrong  # the first server seen is not trusted


def test_repinning_refuses_what_is_not_a_public_key(api: ApiClient, host: SshdHost) -> None:
    system = register(api, host)
    run(api, system, "true")
    pinned = host_key(api, system)

    response = api.post(
        f"/api/systems/{system['id']}/host-key", {"host_key": "ssh-ed25519 nonsense"}
    )

    assert response.status_code == 422, response.text
    assert "host_key" in [e["field"] for e in response.json()["errors"]]
    assert host_key(api, system) == pinned
