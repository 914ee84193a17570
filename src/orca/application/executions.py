"""Claiming, finishing and learning from executions: the executor's commands."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from orca.application.app import OrcaApplication
from orca.application.sealing import Vault
from orca.application.systems import Credentials, open_credentials
from orca.domain.errors import Conflict, NotFound
from orca.domain.job import Execution, ExecutionStatus, Job
from orca.domain.system import System

LEASE_MARGIN = timedelta(minutes=5)


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


def _connection(vault: Vault, system: System) -> Connection:
    return Connection(
        system_id=system.id,
        system_type=system.system_type,
        hostname=system.hostname,
        port=system.port,
        username=system.username,
        credentials=open_credentials(vault, system),
        host_key=system.host_key,
        winrm_transport=system.winrm_transport,
        use_https=system.use_https,
        verify_tls=system.verify_tls,
    )


def connection_of(app: OrcaApplication, vault: Vault, system_id: UUID) -> Connection:
    system = app.get(System, system_id, "system")
    if system.is_deleted:
        raise NotFound(f"system {system_id} not found")
    return _connection(vault, system)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: ExecutionStatus
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error_message: str | None = None


def start_execution(
    app: OrcaApplication,
    vault: Vault,
    execution_id: UUID,
    *,
    worker_id: str,
    unsure: bool = False,
) -> Work | None:
    """Claim a pending execution for this worker; None if it is no longer pending.

    Two workers racing save the same aggregate version: the event store lets one win. A claim
    saved as the database went away may be stored though its answer was lost: the library's
    retry then conflicts with it, or the caller gets an error and asks again with ``unsure``.
    Either way a claim found to be this worker's own is handed back: its command never ran.
    """
    execution = app.get(Execution, execution_id, "execution")
    if unsure and _claimed_by(execution, worker_id):
        return _work(app, vault, execution)
    if execution.status != "pending":
        return None
    job = app.get(Job, execution.job_id, "job")
    execution.start(
        worker_id,
        lease_until=datetime.now(UTC) + timedelta(seconds=job.timeout_seconds) + LEASE_MARGIN,
    )
    try:
        app.commit([execution], conflict="execution was claimed by another worker")
    except Conflict:
        current = app.get(Execution, execution_id, "execution")
        return _work(app, vault, current) if _claimed_by(current, worker_id) else None
    return _work(app, vault, execution)


def _claimed_by(execution: Execution, worker_id: str) -> bool:
    return execution.status == "running" and execution.worker_id == worker_id


def _work(app: OrcaApplication, vault: Vault, execution: Execution) -> Work:
    job = app.get(Job, execution.job_id, "job")
    system = app.get(System, execution.system_id, "system")
    return Work(
        execution_id=execution.id,
        job_id=job.id,
        command=job.command,
        timeout_seconds=job.timeout_seconds,
        connection=_connection(vault, system),
    )


def finish_execution(app: OrcaApplication, execution_id: UUID, outcome: Outcome) -> int:
    execution = app.get(Execution, execution_id, "execution")
    execution.finish(
        outcome.status,
        exit_code=outcome.exit_code,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
        stdout_truncated=outcome.stdout_truncated,
        stderr_truncated=outcome.stderr_truncated,
        error_message=outcome.error_message,
    )
    return app.commit([execution], conflict=f"execution {execution_id} finished concurrently")


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
