"""Claiming, finishing and learning from executions: the executor's commands."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from orca.application.app import OrcaApplication, only
from orca.application.sealing import Vault
from orca.application.systems import Credentials, open_credentials
from orca.domain.errors import Conflict, NotFound
from orca.domain.job import Execution, ExecutionStatus, Job
from orca.domain.system import System

LEASE_MARGIN = timedelta(minutes=5)
NEW_EVENTS_PAGE = 1000
FINISH_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach and log in to one system."""

    system_id: UUID
    system_type: str
    hostname: str
    port: int
    username: str
    credentials: Credentials
    host_key: str | None
    winrm_transport: str = "ntlm"
    use_https: bool = False
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class Work:
    """Everything a worker needs to run one claimed execution."""

    execution_id: UUID
    job_id: UUID
    command: str
    timeout_seconds: int
    connection: Connection
    # As claimed: its end is recorded on it without reading it again (``finish_executions``).
    execution: Execution = field(repr=False, compare=False)


def _connection(system: System, credentials: Credentials) -> Connection:
    return Connection(
        system_id=system.id,
        system_type=system.system_type,
        hostname=system.hostname,
        port=system.port,
        username=system.username,
        credentials=credentials,
        host_key=system.host_key,
        winrm_transport=system.winrm_transport,
        use_https=system.use_https,
        verify_tls=system.verify_tls,
    )


def connection_of(app: OrcaApplication, vault: Vault, system_id: UUID) -> Connection:
    system = app.get(System, system_id, "system")
    if system.is_deleted:
        raise NotFound(f"system {system_id} not found")
    return _connection(system, open_credentials(vault, [system])[system.id])


@dataclass(frozen=True, slots=True)
class Outcome:
    status: ExecutionStatus
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class News:
    """What a worker learns from the newest events of the log, before any projection shows
    them (a projector's commit comes a few milliseconds later)."""

    created: list[UUID]  # new executions
    cancel_requests: list[UUID]  # running executions someone asked to cancel
    position: int  # the log's position read up to


def read_news(app: OrcaApplication, after: int) -> News:
    """The executions created and the cancels requested in the log after position ``after``.

    The library writes the log one transaction at a time (it locks the table), so nothing
    lands later below a position already read: a request seen here is never missed.
    """
    created: list[UUID] = []
    cancels: list[UUID] = []
    while True:
        page = app.recorder.select_originators(after, NEW_EVENTS_PAGE)  # type: ignore[attr-defined]
        for _, originator, topic in page:
            if topic == Execution.Created.TOPIC:
                created.append(originator)
            elif topic == Execution.CancelRequested.TOPIC:
                cancels.append(originator)
        if page:
            after = page[-1][0]
        if len(page) < NEW_EVENTS_PAGE:
            return News(created, cancels, after)


@dataclass(frozen=True, slots=True)
class Claims:
    works: list[Work]  # the executions this worker claimed, to run now
    later: dict[UUID, datetime]  # those left pending for their schedule, and when it is


def start_executions(
    app: OrcaApplication, vault: Vault, execution_ids: Collection[UUID], *, worker_id: str
) -> Claims:
    """Claim those of these executions that are pending and due for this worker, with one
    save; tell when those scheduled later are due.

    A job on 100 systems is claimed with three reads (its executions; its job and its systems;
    their data keys) and one save, not with a hundred of each. If another worker claimed one
    of them first, the save conflicts: each is then claimed on its own, so that this worker
    still gets those the other did not take. The caller gives the executions it is not
    running: any of them found claimed by this worker was claimed by this very call.
    """
    pending = [e for e in app.get_many(Execution, execution_ids).values() if e.status == "pending"]
    jobs, systems = _jobs_and_systems(app, pending)
    now = datetime.now(UTC)
    later = {e.id: at for e in pending if (at := _later(jobs[e.job_id], now)) is not None}
    due = [e for e in pending if e.id not in later]
    try:
        return Claims(_claim(app, vault, due, worker_id, jobs, systems, now), later)
    except Conflict:
        # Nothing of this save is stored, unless the library's retry of it (its answer was
        # lost) conflicted with itself: then every claim is this worker's own.
        claimed = (start_execution(app, vault, e.id, worker_id=worker_id, unsure=True) for e in due)
        return Claims([work for work in claimed if work is not None], later)


def start_execution(
    app: OrcaApplication,
    vault: Vault,
    execution_id: UUID,
    *,
    worker_id: str,
    unsure: bool = False,
) -> Work | None:
    """Claim a pending execution for this worker; None if it is no longer pending, or its job
    is scheduled later.

    Two workers racing save the same aggregate version: the event store lets one win. A claim
    saved as the database went away may be stored though its answer was lost: the library's
    retry then conflicts with it, or the caller gets an error and asks again with ``unsure``.
    Either way a claim found to be this worker's own is handed back: its command never ran.
    """
    execution = app.get(Execution, execution_id, "execution")
    if unsure and _claimed_by(execution, worker_id):
        return _works(app, vault, [execution])[0]
    if execution.status != "pending":
        return None
    jobs, systems = _jobs_and_systems(app, [execution])
    now = datetime.now(UTC)
    if _later(jobs[execution.job_id], now) is not None:
        return None
    try:
        works = _claim(app, vault, [execution], worker_id, jobs, systems, now)
    except Conflict:
        current = app.get(Execution, execution_id, "execution")
        return _works(app, vault, [current])[0] if _claimed_by(current, worker_id) else None
    return works[0] if works else None


def _claim(
    app: OrcaApplication,
    vault: Vault,
    due: Sequence[Execution],
    worker_id: str,
    jobs: Mapping[UUID, Job],
    systems: Mapping[UUID, System],
    now: datetime,
) -> list[Work]:
    """Start these pending, due executions for this worker, with one save. One whose system
    was deleted as its job was created (its credentials are destroyed) is cancelled
    instead."""
    runnable = []
    for execution in due:
        system = systems.get(execution.system_id)
        if system is None or system.is_deleted:
            execution.cancel(reason="its system was deleted")
        else:
            execution.start(worker_id, lease_until=_lease_until(now, jobs[execution.job_id]))
            runnable.append(execution)
    app.commit(due, conflict="an execution was claimed by another worker")
    return _works(app, vault, runnable, jobs, systems)


def _jobs_and_systems(
    app: OrcaApplication, executions: Sequence[Execution]
) -> tuple[dict[UUID, Job], dict[UUID, System]]:
    """The executions' jobs and systems, read with one query."""
    found = app.get_all({e.job_id for e in executions} | {e.system_id for e in executions})
    return only(Job, found), only(System, found)


def _later(job: Job, now: datetime) -> datetime | None:
    """When the job is scheduled, if that is after ``now``."""
    return job.schedule_at if job.schedule_at is not None and job.schedule_at > now else None


def _lease_until(now: datetime, job: Job) -> datetime:
    return now + timedelta(seconds=job.timeout_seconds) + LEASE_MARGIN


def _claimed_by(execution: Execution, worker_id: str) -> bool:
    return execution.status == "running" and execution.worker_id == worker_id


def _works(
    app: OrcaApplication,
    vault: Vault,
    executions: Sequence[Execution],
    jobs: Mapping[UUID, Job] | None = None,
    systems: Mapping[UUID, System] | None = None,
) -> list[Work]:
    if jobs is None or systems is None:
        jobs, systems = _jobs_and_systems(app, executions)
    credentials = open_credentials(vault, (systems[e.system_id] for e in executions))
    return [
        Work(
            execution_id=e.id,
            job_id=e.job_id,
            command=jobs[e.job_id].command,
            timeout_seconds=jobs[e.job_id].timeout_seconds,
            connection=_connection(systems[e.system_id], credentials[e.system_id]),
            execution=e,
        )
        for e in executions
    ]


def finish_executions(app: OrcaApplication, ends: Mapping[UUID, tuple[Execution, Outcome]]) -> int:
    """Record the ends of these running executions with one save (what came back from a
    job's hosts at about the same time), each on the execution as the worker claimed it, not
    read again. A ``Conflict`` if any of them changed since (a cancel request) or is no
    longer running: nothing is stored then, and ``finish_execution`` records each on its
    current state."""
    executions = {i: execution for i, (execution, _) in ends.items()}
    return _finish(app, executions, {i: outcome for i, (_, outcome) in ends.items()})


def finish_execution(app: OrcaApplication, execution_id: UUID, outcome: Outcome) -> int | None:
    """Record one execution's end; None if it had ended already (its lease ran out, or an
    earlier try was stored though its answer was lost). A cancel request saved meanwhile
    makes the save conflict: it is tried again on the newer state."""
    for _ in range(FINISH_ATTEMPTS):
        execution = app.get(Execution, execution_id, "execution")
        if execution.is_finished:
            return None
        with contextlib.suppress(Conflict):
            return _finish(app, {execution_id: execution}, {execution_id: outcome})
    raise Conflict(f"execution {execution_id} kept changing while its end was recorded")


def _finish(
    app: OrcaApplication, executions: Mapping[UUID, Execution], outcomes: Mapping[UUID, Outcome]
) -> int:
    for execution_id, outcome in outcomes.items():
        executions[execution_id].finish(
            outcome.status,
            exit_code=outcome.exit_code,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            stdout_truncated=outcome.stdout_truncated,
            stderr_truncated=outcome.stderr_truncated,
            error_message=outcome.error_message,
        )
    return app.commit(executions.values(), conflict="an execution changed as its end was saved")


LOST_MESSAGE = "worker lost during execution"


def abandon_execution(app: OrcaApplication, execution_id: UUID) -> bool:
    """Finish an execution whose worker died. Its command may have run, so it is never run
    again (at-most-once); False if it finished meanwhile."""
    execution = app.get(Execution, execution_id, "execution")
    if execution.status != "running":
        return False
    execution.finish("failed", error_message=LOST_MESSAGE)
    try:
        app.commit([execution], conflict="execution finished concurrently")
    except Conflict:
        return False
    return True


def pin_host_key(app: OrcaApplication, system_id: UUID, host_key: str) -> None:
    """Record the key first seen for a system; a concurrent pin of the same key is fine."""
    system = app.get(System, system_id, "system")
    system.pin_host_key(host_key)
    if system.pending_events:
        with contextlib.suppress(Conflict):
            app.commit([system], conflict="host key pinned concurrently")
