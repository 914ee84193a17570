"""The executor at its limits, through a real ``orca serve`` and real OpenSSH servers.

- 20 MB of output: the job finishes, ORCA_MAX_OUTPUT_BYTES is kept and flagged, and the Orca
  process's memory stays bounded (its peak RSS, reset through /proc/<pid>/clear_refs).
- Invalid UTF-8 comes back replaced and costs no other execution its connection.
- 30 executions against one host left at OpenSSH's defaults (MaxSessions 10, MaxStartups
  10:30:100) all complete, with all of their output.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.contract import serve
from support.fixtures import BACKENDS
from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

pytestmark = pytest.mark.sshd

OUTPUT_CAP = 100_000  # ORCA_MAX_OUTPUT_BYTES for this module's server
TWENTY_MB = 20_000_000
# Peak RSS the Orca process may gain while 20 MB flows through it. Keeping the whole stream
# would cost at least the 20 MB itself (asyncssh's buffered run() costs ~2.6x the output).
MEMORY_GROWTH_LIMIT_KIB = 12 * 1024
FANOUT = 30
FANOUT_LINES = 2000


@pytest.fixture(scope="module", params=BACKENDS)
def orca(request: pytest.FixtureRequest) -> Iterator[OrcaServer]:
    # Enough slots for every execution of the fan-out job to be on the host at once.
    with serve(request.param, max_output_bytes=OUTPUT_CAP, max_concurrency=FANOUT) as server:
        yield server


@pytest.fixture(scope="module")
def default_host() -> Iterator[SshdHost]:
    """A host left at OpenSSH's defaults, on a loopback address of its own."""
    with SshdHost("127.0.1.30", openssh_defaults=True) as host:
        yield host


def register(api: ApiClient, sshd: SshdHost) -> dict[str, Any]:
    response = api.post(
        "/api/systems",
        {
            "name": f"lim-{uuid.uuid4().hex[:8]}",
            "hostname": sshd.host,
            "port": sshd.port,
            "username": sshd.username,
            "password": sshd.password,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def start(api: ApiClient, command: str, *systems: dict[str, Any]) -> str:
    response = api.post(
        "/api/jobs", {"name": "lim", "command": command, "system_ids": [s["id"] for s in systems]}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def run(api: ApiClient, command: str, *systems: dict[str, Any]) -> dict[str, Any]:
    return api.wait_for_job(start(api, command, *systems), timeout=60)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak_rss(pid: int) -> None:
    """From now on VmHWM is the peak since this call (Linux >= 4.0; needs the process's owner)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def test_20_mb_of_output_is_capped_flagged_and_streamed_in_bounded_memory(
    orca: OrcaServer, api: ApiClient, sshd_host: SshdHost
) -> None:
    system = register(api, sshd_host)
    # Warm up: the first connection and job load code the measured job should not be blamed for.
    assert run(api, "head -c 300000 /dev/zero | tr '\\0' w", system)["status"] == "completed"
    before = status_kib(orca.pid, "VmRSS")
    reset_peak_rss(orca.pid)

    job = run(
        api,
        f"head -c {TWENTY_MB} /dev/zero | tr '\\0' x; echo 'stderr after 20 MB' >&2",
        system,
    )

    peak_growth = status_kib(orca.pid, "VmHWM") - before
    assert job["status"] == "completed", job
    (execution,) = job["executions"]
    assert (execution["status"], execution["exit_code"]) == ("completed", 0)
    assert execution["stdout"] == "x" * OUTPUT_CAP
    assert execution["stdout_truncated"] is True
    assert execution["stderr"] == "stderr after 20 MB\n"  # written once all 20 MB were read
    assert execution["stderr_truncated"] is False
    assert peak_growth < MEMORY_GROWTH_LIMIT_KIB, f"peak RSS grew {peak_growth} KiB"


def test_invalid_utf8_is_replaced_and_costs_no_other_execution_its_connection(
    api: ApiClient, sshd_host: SshdHost
) -> None:
    system = register(api, sshd_host)
    # Running on the same host meanwhile: a strict UTF-8 decoder would drop the whole connection.
    neighbour = start(api, "sleep 1; echo neighbour", system)

    binary = run(api, "printf 'a\\377\\376b\\n'; printf '\\200err' >&2; sleep 0.2", system)
    (execution,) = binary["executions"]
    assert (execution["status"], execution["exit_code"]) == ("completed", 0)
    assert execution["stdout"] == "a\ufffd\ufffdb\n"
    assert execution["stderr"] == "\ufffderr"

    (other,) = api.wait_for_job(neighbour)["executions"]
    assert (other["status"], other["stdout"]) == ("completed", "neighbour\n")


def test_30_executions_on_one_host_with_openssh_default_limits_all_complete(
    api: ApiClient, default_host: SshdHost
) -> None:
    systems = [register(api, default_host) for _ in range(FANOUT)]  # one host, 30 systems
    expected = "".join(f"{n}\n" for n in range(1, FANOUT_LINES + 1))

    # The sleep keeps all of them on the host at once: 30 sessions, 3x MaxSessions.
    job = run(api, f"sleep 0.5; seq 1 {FANOUT_LINES}", *systems)

    executions = job["executions"]
    assert len(executions) == FANOUT
    failures = [(e["status"], e["error_message"]) for e in executions if e["status"] != "completed"]
    assert failures == []
    assert job["status"] == "completed"
    assert all(e["stdout"] == expected and e["stderr"] == "" for e in executions)
    assert [e["system_id"] for e in executions] == [s["id"] for s in systems]
