"""The rules the aggregates keep, without any storage."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orca.domain.errors import Conflict, Invalid
from orca.domain.index import NameIndex, index_id
from orca.domain.job import FINISHED, Execution, plan_job
from orca.domain.system import System

LEASE = datetime(2030, 1, 1, tzinfo=UTC)


def new_job(n_systems: int = 2) -> tuple[object, list[Execution]]:
    return plan_job(
        name="check",
        command="whoami",
        system_ids=[uuid4() for _ in range(n_systems)],
        created_by="admin",
        schedule_at=None,
        timeout_seconds=60,
    )


def test_a_job_needs_at_least_one_system() -> None:
    with pytest.raises(Invalid) as error:
        plan_job(
            name="x",
            command="true",
            system_ids=[],
            created_by="a",
            schedule_at=None,
            timeout_seconds=1,
        )
    assert error.value.field == "system_ids"


def test_a_system_listed_twice_is_refused() -> None:
    sid = uuid4()
    with pytest.raises(Invalid):
        plan_job(
            name="x",
            command="true",
            system_ids=[sid, sid],
            created_by="a",
            schedule_at=None,
            timeout_seconds=1,
        )


def test_each_system_of_a_job_gets_one_pending_execution_with_a_derived_id() -> None:
    job, executions = new_job(3)
    assert [e.status for e in executions] == ["pending"] * 3
    assert job.execution_ids == [e.id for e in executions]  # type: ignore[attr-defined]
    assert all(e.job_id == job.id for e in executions)  # type: ignore[attr-defined]


def test_an_execution_starts_once() -> None:
    _, (execution, *_) = new_job()
    execution.start("w1", LEASE)
    with pytest.raises(Conflict):
        execution.start("w2", LEASE)
    assert execution.worker_id == "w1"


def test_an_execution_cannot_finish_before_it_starts() -> None:
    _, (execution, *_) = new_job()
    with pytest.raises(Conflict):
        execution.finish("completed", exit_code=0)


def test_a_finished_execution_never_changes() -> None:
    _, (execution, *_) = new_job()
    execution.start("w1", LEASE)
    execution.finish("failed", exit_code=3, stderr="boom")
    with pytest.raises(Conflict):
        execution.finish("completed", exit_code=0)
    with pytest.raises(Conflict):
        execution.start("w1", LEASE)
    assert execution.status == "failed"


def test_finish_takes_only_a_finished_status() -> None:
    _, (execution, *_) = new_job()
    execution.start("w1", LEASE)
    with pytest.raises(Invalid):
        execution.finish("running")


def test_names_are_unique_without_regard_to_case() -> None:
    assert index_id("system", "Web-01") == index_id("system", "web-01")
    assert index_id("system", "web-01") != index_id("user", "web-01")
    index = NameIndex(kind="system", name="web-01", owner_id=uuid4())
    with pytest.raises(Conflict):
        index.reclaim(uuid4())
    index.release()
    owner = uuid4()
    index.reclaim(owner)
    assert index.owner_id == owner


def test_the_first_host_key_is_pinned_and_a_later_one_never_replaces_it() -> None:
    system = System(  # type: ignore[call-arg]
        id=uuid4(),
        name="web",
        hostname="127.0.0.1",
        port=22,
        system_type="linux",
        username="deploy",
        sealed_credentials="sealed",
        description="",
        host_key=None,
        registered_by="admin",
    )
    system.pin_host_key("ssh-ed25519 AAAAfirst")
    system.pin_host_key("ssh-ed25519 AAAAsecond")
    assert system.host_key == "ssh-ed25519 AAAAfirst"
    assert [type(e).__name__ for e in system.collect_events()] == ["Created", "HostKeyPinned"]


class ExecutionLifecycle(RuleBasedStateMachine):
    """Random sequences of commands never break an execution's life: pending, running, done."""

    def __init__(self) -> None:
        super().__init__()
        _, (self.execution, *_) = new_job(1)
        self.history: list[str] = ["pending"]

    @rule(worker=st.sampled_from(["w1", "w2"]))
    def start(self, worker: str) -> None:
        before = self.execution.status
        try:
            self.execution.start(worker, LEASE)
        except Conflict:
            assert before != "pending"
        else:
            assert before == "pending"
            self.history.append("running")

    @rule(
        status=st.sampled_from([*sorted(FINISHED), "pending", "running"]),
        exit_code=st.none() | st.integers(-1, 255),
    )
    def finish(self, status: str, exit_code: int | None) -> None:
        before = self.execution.status
        try:
            self.execution.finish(status, exit_code=exit_code)  # type: ignore[arg-type]
        except Invalid:
            assert status not in FINISHED
        except Conflict:
            assert before != "running"
        else:
            assert before == "running" and status in FINISHED
            self.history.append(status)

    @precondition(lambda self: self.execution.is_finished)
    @rule()
    def finished_is_final(self) -> None:
        status = self.execution.status
        for attempt in (lambda: self.execution.start("w", LEASE),
                        lambda: self.execution.finish("completed")):  # fmt: skip
            with pytest.raises(Conflict):
                attempt()
        assert self.execution.status == status

    @invariant()
    def history_is_a_legal_path(self) -> None:
        assert self.history[0] == "pending"
        assert self.history[1:2] in ([], ["running"])
        assert len(self.history) <= 3
        if len(self.history) == 3:
            assert self.history[2] in FINISHED
        assert self.execution.status == self.history[-1]
        assert self.execution.version == len(self.history)


TestExecutionLifecycle = ExecutionLifecycle.TestCase


def test_schedule_in_the_job_is_kept() -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    job, _ = plan_job(
        name="later",
        command="true",
        system_ids=[uuid4()],
        created_by="a",
        schedule_at=at,
        timeout_seconds=5,
    )
    assert job.schedule_at == at  # type: ignore[attr-defined]
