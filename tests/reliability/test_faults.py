"""Faults under load: PostgreSQL restarted, an sshd killed mid-command, a worker and the
projector killed, an API process killed between a command and its response.

Each test runs the load of ``load.py`` (clients that retry a 503 or a lost connection like a
demanding user, and check every answer), injects its fault, and then checks what must survive
any fault (``checks.verify``): no wrong answer, no lost job, no command run twice, the
dashboard equal to a recount of the event log. Then what the fault itself must cause.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from orca.application.jobs import IDEMPOTENCY
from orca.domain.index import index_id
from reliability.checks import LOST, Report, failures_of, verify
from reliability.cluster import Cluster
from reliability.load import Load, Tracked
from reliability.sizes import SIZE
from support.postgres import PrivatePostgres

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.sshd]
TIMEOUT = 240 + SIZE.fault_seconds + SIZE.drain_seconds
# After PostgreSQL is back, Orca must answer normally within this (its pools reconnect).
RECOVERY_SECONDS = 20.0


def wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.2)


def fault_load(cluster: Cluster, tag: str, **options: Any) -> Load:
    options = {
        "clients": SIZE.fault_clients,
        "seconds": SIZE.fault_seconds,
        "drain_seconds": SIZE.drain_seconds,
    } | options
    return Load(cluster, tag=tag, **options).start()


def server_errors(load: Load) -> dict[str, int]:
    return {s: n for s, n in load.statuses().items() if s.isdigit() and int(s) >= 500}


def lost_connections(load: Load) -> dict[str, int]:
    return {s: n for s, n in load.statuses().items() if not s.isdigit()}


def timeline(load: Load) -> str:
    return ", ".join(f"{what} at {at:.1f} s" for at, what in load.events)


def a_new_job_completes(cluster: Cluster) -> float:
    """Create a job now and wait for it: Orca works again. Returns the seconds it took."""
    started = time.monotonic()
    created = cluster.create_job(
        {"name": "after", "command": "echo after", "system_ids": [*cluster.systems]}
    )
    job = cluster.wait_for_job(created["id"])
    assert job["status"] == "completed", job
    return time.monotonic() - started


def job_of(cluster: Cluster, job_id: str) -> dict[str, Any]:
    return cluster.job(job_id)


@pytest.mark.timeout(TIMEOUT)
def test_postgresql_restarted_under_load_answers_503_and_never_a_wrong_answer(
    make_cluster: Callable[..., Cluster], postgres: PrivatePostgres
) -> None:
    # Leases longer than the outage: a worker that could not renew while PostgreSQL was
    # down is not taken for dead.
    cluster = make_cluster(lease_seconds=SIZE.outage_seconds + 30)
    load = fault_load(cluster, "pg")
    load.sleep_until(SIZE.fault_seconds / 3)
    down = load.mark("PostgreSQL crashed (SIGKILL of every server process)")
    postgres.crash()
    health = httpx.get(f"{cluster.api_urls[1]}/health/detailed", timeout=60, trust_env=False)
    load.sleep_until(down + SIZE.outage_seconds)
    postgres.start()
    up = load.mark("PostgreSQL started again")
    load.join()
    after = a_new_job_completes(cluster)

    unavailable = [a for a in load.answers if a.status == 503]
    after_up = [a for a in unavailable if a.at > up]
    report = Report(f"PostgreSQL restarted under load ({SIZE.name})")
    report.tried(
        {
            "size": f"{load.clients} clients x {load.seconds:g} s, {SIZE.hosts} hosts",
            "timeline": timeline(load),
            "outage seconds": round(up - down, 1),
            "GET /health/detailed while down": f"{health.status_code} {health.json()['status']}",
        }
        | load.figures()
    )
    assert health.status_code == 503 and health.json()["database"]["status"] == "unhealthy"
    assert server_errors(load).keys() <= {"503"}, f"5xx besides 503: {server_errors(load)}"
    assert lost_connections(load) == {}, lost_connections(load)
    early = [a for a in unavailable if a.at + a.seconds < down]
    assert not early, f"503s answered before PostgreSQL went down: {early[:5]}"
    last = max((a.at for a in after_up), default=up)
    assert last - up < RECOVERY_SECONDS, f"still 503s {last - up:.1f} s after PostgreSQL was back"
    survived = verify(cluster, [load])
    report.survived(
        {
            "503 answers": len(unavailable),
            "503s sent after PostgreSQL was back": len(after_up),
            "last 503 sent, seconds after PostgreSQL was back": round(max(0.0, last - up), 1),
            "longest request ms": round(max(a.seconds for a in load.answers) * 1000),
            "a job on every host after the restart, seconds": round(after, 1),
        }
        | survived
    )


@pytest.mark.timeout(TIMEOUT)
def test_an_sshd_killed_mid_command_fails_its_execution_with_the_reason(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    *others, victim_id = list(cluster.systems)
    victim = cluster.systems[victim_id]
    load = fault_load(cluster, "sshd", system_ids=others)
    marks = cluster.runs_dir / "victim.log"
    command = f"echo started >> {shlex.quote(str(marks))}; sleep 120"
    job_id = cluster.create_job({"name": "victim", "command": command, "system_ids": [victim_id]})[
        "id"
    ]
    wait(marks.exists, 60, "the command to start on the victim host")
    load.sleep_until(max(load.now(), SIZE.fault_seconds / 3))
    killed = load.mark(f"sshd of {victim.host}:{victim.port} killed mid-command")
    victim.halt()
    wait(lambda: job_of(cluster, job_id)["status"] == "failed", 60, "the execution to fail")
    noticed = load.mark("the execution failed")
    (execution,) = job_of(cluster, job_id)["executions"]
    victim.resume()
    back = cluster.create_job(
        {"name": "victim-back", "command": "echo back", "system_ids": [victim_id]}
    )
    after = cluster.wait_for_job(back["id"])
    load.join()

    report = Report(f"sshd killed mid-command ({SIZE.name})")
    report.tried(
        {
            "size": f"{load.clients} clients on the {len(others)} other hosts x {load.seconds:g} s",
            "timeline": timeline(load),
        }
        | load.figures()
    )
    address = f"{victim.host}:{victim.port}"
    assert execution["status"] == "failed"
    message = execution["error_message"] or ""
    # The reason, in words: which host, and that its connection went away.
    assert address in message and ("lost" in message or "closed" in message), message
    assert "unexpected" not in message, message
    assert marks.read_text() == "started\n"
    assert after["status"] == "completed" and after["executions"][0]["stdout"] == "back\n"
    assert server_errors(load) == {} and lost_connections(load) == {}, load.statuses()
    survived = verify(cluster, [load])
    report.survived(
        {
            "the execution": f"{execution['status']}: {message}",
            "seconds from the kill to failed": round(noticed - killed, 1),
            "a job on the host once back": after["status"],
        }
        | survived
    )


@pytest.mark.timeout(TIMEOUT)
def test_a_worker_killed_with_sigkill_loses_its_executions_and_none_runs_twice(
    make_cluster: Callable[..., Cluster],
) -> None:
    lease = 6.0
    cluster = make_cluster(lease_seconds=lease)
    load = fault_load(cluster, "worker")
    slow_log = cluster.runs_dir / "slow.log"
    spread = sorted(cluster.systems)[:4]
    release = cluster.runs_dir / "release"  # the slow commands run until it exists
    command = (
        f"printf '%s\\n' \"$SSH_CONNECTION\" >> {shlex.quote(str(slow_log))};"
        f" until [ -e {shlex.quote(str(release))} ]; do sleep 0.2; done"
    )
    slow_id = cluster.create_job({"name": "slow", "command": command, "system_ids": spread})["id"]

    def all_running() -> bool:
        executions = job_of(cluster, slow_id)["executions"]
        return all(e["status"] == "running" for e in executions)

    wait(all_running, 60, "the slow job's executions to run")
    holder = {e["id"]: worker_of(cluster, e["id"]) for e in job_of(cluster, slow_id)["executions"]}
    holders = Counter(holder.values())
    victim = holders.most_common(1)[0][0]
    load.sleep_until(max(load.now(), SIZE.fault_seconds / 3))
    killed = load.mark(f"{victim} killed with SIGKILL")
    cluster.kill(victim)
    on_victim = {e for e, worker in holder.items() if worker == victim}

    def lost() -> bool:
        executions = job_of(cluster, slow_id)["executions"]
        return all(e["status"] == "failed" for e in executions if e["id"] in on_victim)

    wait(lost, lease + 60, "the dead worker's executions to be lost")
    noticed = load.mark("its slow executions failed as lost")
    release.touch()
    cluster.restart(victim)
    load.mark(f"{victim} started again")
    wait(
        lambda: job_of(cluster, slow_id)["status"] not in ("pending", "running"),
        120,
        "the slow job to finish",
    )
    load.mark("the slow job finished")
    slow = job_of(cluster, slow_id)
    load.join()

    report = Report(f"worker killed with SIGKILL ({SIZE.name})")
    report.tried(
        {
            "size": f"{load.clients} clients x {load.seconds:g} s, {SIZE.hosts} hosts",
            "timeline": timeline(load),
            "lease seconds": lease,
            "slow job executions per worker": dict(holders),
        }
        | load.figures()
    )
    for e in slow["executions"]:
        if e["id"] in on_victim:
            assert (e["status"], e["error_message"]) == ("failed", LOST), e
        else:
            assert e["status"] == "completed", e
    slow_runs = Counter(line.split()[2] for line in slow_log.read_text().splitlines())
    assert sorted(slow_runs) == sorted({cluster.systems[s].host for s in spread})
    assert set(slow_runs.values()) == {1}, f"a slow command ran twice: {slow_runs}"
    assert server_errors(load) == {} and lost_connections(load) == {}, load.statuses()

    def lost_in_flight(job: Tracked, execution: dict[str, Any]) -> bool:
        # Only what the dead worker was running may be lost: it was claimed before the kill.
        started = execution["started_at"] is not None
        return execution["error_message"] == LOST and started and job.created_at < killed

    survived = verify(cluster, [load], allowed_failure=lost_in_flight)
    load.sleep_until(noticed + lease + 1)  # never run again, not even a lease later
    assert slow_log.read_text().count("\n") == len(spread), "a lost command ran again"
    report.survived(
        {
            "slow job": f"{len(on_victim)} lost with the worker, "
            f"{len(spread) - len(on_victim)} completed on the other",
            "seconds from the kill to lost": round(noticed - killed, 1),
            "load executions lost with the worker": failures_of([load]),
        }
        | survived
    )


def worker_of(cluster: Cluster, execution_id: str) -> str:
    """The cluster's name of the worker process that claimed the execution (its worker id
    is ``host/pid/random``)."""
    (started,) = [
        e for e in events_of(cluster, execution_id) if e["event_type"] == "orca.Execution.Started"
    ]
    pid = int(started["data"]["worker_id"].split("/")[1])
    (name,) = [n for n in cluster.worker_names if cluster.processes[n].pid == pid]
    return name


def events_of(cluster: Cluster, aggregate_id: str) -> list[dict[str, Any]]:
    """One aggregate's events from the whole log (a filtered page scans a part of the log)."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = cluster.call("GET", "/api/events", aggregate_id=aggregate_id, after=after).json()
        events += page["events"]
        if page["next_after"] == after:
            return events
        after = page["next_after"]


@pytest.mark.timeout(TIMEOUT)
def test_the_projector_killed_and_restarted_catches_up_and_counts_nothing_twice(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    load = fault_load(cluster, "projector")
    load.sleep_until(SIZE.fault_seconds / 3)
    killed = load.mark("projector killed with SIGKILL")
    cluster.kill("projector")
    load.sleep_until(killed + SIZE.outage_seconds * 1.5)
    cluster.restart("projector")
    restarted = load.mark("projector started again")
    load.join()
    after = a_new_job_completes(cluster)

    unavailable = [a for a in load.answers if a.status == 503]
    report = Report(f"projector killed and restarted ({SIZE.name})")
    report.tried(
        {
            "size": f"{load.clients} clients x {load.seconds:g} s, {SIZE.hosts} hosts",
            "timeline": timeline(load),
            "projector down seconds": round(restarted - killed, 1),
        }
        | load.figures()
    )
    # A create waits for the read models (read-your-writes) and answers 503 if they lag too
    # long; the client's retry with the same Idempotency-Key gets the job it created.
    assert server_errors(load).keys() <= {"503"}, server_errors(load)
    early = [a for a in unavailable if a.kind != "create" or a.at + a.seconds < killed]
    assert not early, f"503s other than creates waiting for the dead projector: {early[:5]}"
    assert lost_connections(load) == {}, lost_connections(load)
    survived = verify(cluster, [load])
    report.survived(
        {
            "503 answers (read models behind)": len(unavailable),
            "a job on every host after the restart, seconds": round(after, 1),
        }
        | survived
    )


@pytest.mark.timeout(TIMEOUT)
def test_an_api_killed_between_a_command_and_its_response_runs_the_retried_job_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    load = fault_load(cluster, "api")
    load.sleep_until(SIZE.fault_seconds / 3)
    marks = cluster.runs_dir / "between.log"
    key = "between-command-and-response"
    body = {
        "name": key,
        "command": f"echo ran >> {shlex.quote(str(marks))}",
        "system_ids": sorted(cluster.systems)[:1],
    }
    headers = {"Idempotency-Key": key, "Authorization": cluster.admin.http.headers["Authorization"]}
    cluster.use_admin_of("api-2")  # the survivor (a login waits for the read models too)
    # Frozen, the projector keeps every response waiting for the read models after its
    # command is saved: the window in which the API process dies.
    cluster.processes["projector"].pause()
    load.mark("projector paused")
    first: list[Any] = []

    def send() -> None:
        try:
            first.append(
                httpx.post(
                    f"{cluster.api_urls[0]}/api/jobs",
                    json=body,
                    headers=headers,
                    timeout=60,
                    trust_env=False,
                )
            )
        except httpx.TransportError as error:
            first.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    saved = saved_job_of(cluster, "admin", key, timeout=30)
    load.mark("the job is in the event log, its response not sent")
    cluster.kill("api-1")
    killed = load.mark("api-1 killed with SIGKILL")
    sender.join(timeout=60)
    cluster.processes["projector"].resume()
    load.mark("projector resumed")
    retried = cluster.call("POST", "/api/jobs", json=body, key=key)  # on api-2
    job = cluster.wait_for_job(saved)
    cluster.restart("api-1")
    load.mark("api-1 started again")
    load.join()

    report = Report(f"API killed between a command and its response ({SIZE.name})")
    report.tried(
        {
            "size": f"{load.clients} clients x {load.seconds:g} s, {SIZE.hosts} hosts",
            "timeline": timeline(load),
            "the first request got": repr(first[0]) if first else "nothing",
            "the retry on api-2 got": f"{retried.status_code} {retried.json().get('id')}",
        }
        | load.figures()
    )
    assert first and isinstance(first[0], httpx.TransportError), first
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == saved
    assert job["status"] == "completed"
    time.sleep(2)
    assert marks.read_text() == "ran\n", "the retried job ran twice"
    # The load's clients lost connections only to the killed process, and retried elsewhere.
    assert server_errors(load) == {}, server_errors(load)
    lost = [a for a in load.answers if not isinstance(a.status, int)]
    assert all(a.at + a.seconds >= killed - 1 for a in lost), lost[:5]
    survived = verify(cluster, [load])
    report.survived(
        {
            "jobs with the key in the log": 1,
            "runs of the retried job": marks.read_text().count("ran"),
            "load requests cut by the kill": len(lost),
        }
        | survived
    )


def saved_job_of(cluster: Cluster, user: str, key: str, timeout: float) -> str:
    """The job an Idempotency-Key points to, read from the event log (not the read models)."""
    index = str(index_id(IDEMPOTENCY, f"{user}\x00{key}"))
    deadline = time.monotonic() + timeout
    after = 0
    while True:
        page = cluster.call("GET", "/api/events", aggregate_id=index, after=after).json()
        for event in page["events"]:
            if event["event_type"] == "orca.NameIndex.Created":
                return str(event["data"]["owner_id"])
        if page["next_after"] == after:
            assert time.monotonic() < deadline, f"no job was saved for {key!r}"
            time.sleep(0.1)
        after = page["next_after"]
