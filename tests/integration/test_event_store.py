"""The application and its projections, the same on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from orca.application.audit import acting, history
from orca.application.executions import (
    News,
    Outcome,
    finish_execution,
    finish_executions,
    read_news,
    start_execution,
    start_executions,
)
from orca.application.jobs import CreateJob, cancel_job, create_job
from orca.application.systems import (
    Credentials,
    RegisterSystem,
    Saved,
    delete_system,
    register_system,
)
from orca.bootstrap import Services, build
from orca.domain.errors import Conflict, Invalid

CANARY = "canary-pw-5b1e0c"


def register(services: Services, name: str = "web-01", password: str = CANARY) -> Saved:
    return register_system(
        services.app,
        services.vault,
        RegisterSystem(
            name=name,
            hostname="127.0.0.1",
            port=22,
            system_type="linux",
            username="deploy",
            credentials=Credentials(password=password),
        ),
        by="admin",
    )


def settle(services: Services, saved: Saved | int) -> None:
    position = saved if isinstance(saved, int) else saved.position
    assert services.views.wait_for(position, timeout=10), "projection did not catch up"


def new_job(services: Services, *system_ids: UUID) -> Saved:
    saved = create_job(
        services.app,
        CreateJob(name="check", command="whoami", system_ids=list(system_ids)),
        by="admin",
    )
    settle(services, saved)
    return saved


def test_a_registered_system_is_listed_without_its_credentials(services: Services) -> None:
    saved = register(services)
    settle(services, saved)
    view = services.queries.get_system(str(saved.id))
    assert view is not None
    assert (view.name, view.hostname, view.port, view.health_status) == (
        "web-01",
        "127.0.0.1",
        22,
        "unknown",
    )
    systems, total = services.queries.list_systems(
        active=None, system_type=None, limit=50, offset=0
    )
    assert total == 1 and systems[0].id == str(saved.id)
    assert CANARY not in repr(systems)


def test_the_raw_event_table_never_holds_a_password_in_plain_text(services: Services) -> None:
    settle(services, register(services))
    stored = services.app.recorder.select_notifications(start=1, limit=100)
    assert stored, "events were recorded"
    assert all(CANARY.encode() not in n.state for n in stored)


def test_sealed_credentials_open_again_for_the_executor(services: Services) -> None:
    system = register(services)
    job = new_job(services, system.id)
    (execution_id,) = services.app.repository.get(job.id).execution_ids
    work = start_execution(services.app, services.vault, execution_id, worker_id="w1")
    assert work is not None and work.connection.credentials.password == CANARY


def test_system_names_are_unique_without_regard_to_case(services: Services) -> None:
    settle(services, register(services, "web-01"))
    with pytest.raises(Conflict):
        register(services, "WEB-01")
    _, total = services.queries.list_systems(active=None, system_type=None, limit=50, offset=0)
    assert total == 1


def test_two_concurrent_registrations_of_one_name_leave_exactly_one(services: Services) -> None:
    results: list[str] = []

    def attempt() -> None:
        try:
            register(services, "race")
            results.append("saved")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "conflict", "conflict", "saved"]


def test_a_job_and_its_executions_are_saved_together_and_shown_pending(services: Services) -> None:
    a, b = register(services, "a"), register(services, "b")
    job = new_job(services, a.id, b.id)
    view = services.queries.get_job(str(job.id))
    assert view is not None and view.status == "pending"
    assert [(e.system_name, e.status) for e in view.executions] == [
        ("a", "pending"),
        ("b", "pending"),
    ]


def test_a_job_naming_an_unknown_system_is_refused_and_nothing_is_stored(
    services: Services,
) -> None:
    before = services.app.recorder.max_notification_id()
    with pytest.raises(Invalid) as error:
        create_job(services.app, CreateJob(name="x", command="true", system_ids=[uuid4()]), by="a")
    assert error.value.field == "system_ids"
    assert services.app.recorder.max_notification_id() == before


def test_an_execution_is_claimed_by_exactly_one_worker(services: Services) -> None:
    system = register(services)
    job = new_job(services, system.id)
    (execution_id,) = services.app.repository.get(job.id).execution_ids
    claims: list[object] = []

    def claim(worker: str) -> None:
        claims.append(start_execution(services.app, services.vault, execution_id, worker_id=worker))

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c is not None for c in claims) == 1


def test_workers_racing_for_a_whole_job_claim_each_execution_once(services: Services) -> None:
    systems = [register(services, f"web-{i:02}").id for i in range(12)]
    job = new_job(services, *systems)
    execution_ids = services.app.repository.get(job.id).execution_ids
    claimed: list[UUID] = []

    def claim(worker: str) -> None:
        claims = start_executions(services.app, services.vault, execution_ids, worker_id=worker)
        claimed.extend(w.execution_id for w in claims.works)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(execution_ids)


def test_workers_learn_of_new_executions_and_cancel_requests_from_the_log(
    services: Services,
) -> None:
    """What a worker reacts to, read from the log itself, not from a projection."""
    a, b = register(services, "a"), register(services, "b")
    before = services.app.recorder.max_notification_id() or 0
    job = new_job(services, a.id, b.id)
    execution_ids = services.app.repository.get(job.id).execution_ids
    news = read_news(services.app, before)
    assert (sorted(news.created), news.cancel_requests) == (sorted(execution_ids), [])
    assert news.position == services.app.recorder.max_notification_id()

    (running,) = start_executions(
        services.app, services.vault, execution_ids[:1], worker_id="w"
    ).works
    cancel_job(services.app, job.id, by="admin")  # the other, still pending, is cancelled
    news = read_news(services.app, news.position)
    assert (news.created, news.cancel_requests) == ([], [running.execution_id])
    assert read_news(services.app, news.position) == News([], [], news.position)


def test_a_claim_leaves_a_job_scheduled_later_pending_and_tells_when_it_is_due(
    services: Services,
) -> None:
    system = register(services)
    when = datetime.now(UTC) + timedelta(hours=1)
    saved = create_job(
        services.app,
        CreateJob(name="later", command="whoami", system_ids=[system.id], schedule_at=when),
        by="admin",
    )
    (execution_id,) = services.app.repository.get(saved.id).execution_ids
    claims = start_executions(services.app, services.vault, [execution_id], worker_id="w")
    assert claims.works == []
    assert claims.later == {execution_id: when}
    assert services.app.repository.get(execution_id).status == "pending"


def test_an_execution_whose_system_was_deleted_unseen_is_cancelled_not_run(
    services: Services,
) -> None:
    """The read model had not shown the new job when its system was deleted, so the delete
    did not cancel it: the claim does, since the system's credentials are destroyed."""
    gone, kept = register(services, "gone"), register(services, "kept")
    job = new_job(services, gone.id, kept.id)
    lost, run = services.app.repository.get(job.id).execution_ids
    delete_system(services.app, services.vault, gone.id, [], by="admin")
    claims = start_executions(services.app, services.vault, [lost, run], worker_id="w")
    assert [w.execution_id for w in claims.works] == [run]
    settle(services, services.app.recorder.max_notification_id())
    view = services.queries.get_job(str(job.id))
    assert view is not None
    assert {e.id: e.status for e in view.executions} == {str(run): "running"}  # gone's is hidden
    assert services.app.repository.get(lost).status == "cancelled"


def test_ends_saved_together_are_all_stored_or_none(services: Services) -> None:
    a, b = register(services, "a"), register(services, "b")
    job = new_job(services, a.id, b.id)
    first, second = services.app.repository.get(job.id).execution_ids
    (work,) = start_executions(services.app, services.vault, [first], worker_id="w").works
    assert (work.command, work.connection.credentials.password) == ("whoami", CANARY)
    before = services.app.recorder.max_notification_id()
    done = Outcome(status="completed", exit_code=0)
    never_started = services.app.repository.get(second)
    with pytest.raises(Conflict):
        finish_executions(
            services.app, {first: (work.execution, done), second: (never_started, done)}
        )
    assert services.app.recorder.max_notification_id() == before

    (other,) = start_executions(services.app, services.vault, [second], worker_id="w").works
    claimed = services.app.repository.get(first)  # the failed save changed the one in ``work``
    settle(
        services,
        finish_executions(services.app, {first: (claimed, done), second: (other.execution, done)}),
    )
    view = services.queries.get_job(str(job.id))
    assert view is not None and view.status == "completed"
    assert finish_execution(services.app, first, done) is None  # ended already: nothing saved


def test_an_end_saved_on_the_claimed_execution_conflicts_with_a_cancel_request(
    services: Services,
) -> None:
    """Ends are saved on the executions as claimed, without reading them again: a cancel
    requested meanwhile makes that save conflict, and the end is saved on the new state."""
    system = register(services)
    job = new_job(services, system.id)
    (work,) = start_executions(
        services.app, services.vault, services.app.repository.get(job.id).execution_ids,
        worker_id="w",
    ).works  # fmt: skip
    cancel_job(services.app, job.id, by="admin")
    before = services.app.recorder.max_notification_id()
    stopped = Outcome(status="cancelled", error_message="cancelled while running")
    with pytest.raises(Conflict):
        finish_executions(services.app, {work.execution_id: (work.execution, stopped)})
    assert services.app.recorder.max_notification_id() == before
    settle(services, finish_execution(services.app, work.execution_id, stopped))
    assert services.app.repository.get(work.execution_id).status == "cancelled"


def test_saves_made_at_once_by_different_users_each_record_their_own_actor(
    services: Services,
) -> None:
    """Concurrent saves may be written in one transaction: each keeps its own actor and
    request id, and a name taken twice fails only the second registration."""
    start = threading.Barrier(12)
    outcomes: dict[int, object] = {}

    def register_as(i: int) -> None:
        with acting(f"user-{i}", request_id=f"req-{i}"):
            start.wait(timeout=10)
            try:
                outcomes[i] = register(services, f"host-{i % 10}")
            except Conflict as conflict:
                outcomes[i] = conflict

    threads = [threading.Thread(target=register_as, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    saved = {i: o for i, o in outcomes.items() if isinstance(o, Saved)}
    assert len(saved) == 10  # host-0 and host-1 were asked for twice
    for i, registered in saved.items():
        found = history(services.app, registered.id)
        assert found is not None
        assert {(e.actor, e.request_id) for e in found.events} == {(f"user-{i}", f"req-{i}")}


def test_job_status_follows_its_executions(services: Services) -> None:
    a, b = register(services, "a"), register(services, "b")
    job = new_job(services, a.id, b.id)
    first, second = services.app.repository.get(job.id).execution_ids
    start_execution(services.app, services.vault, first, worker_id="w")
    settle(services, services.app.recorder.max_notification_id())
    assert services.queries.get_job(str(job.id)).status == "running"  # type: ignore[union-attr]

    finish_execution(
        services.app, first, Outcome(status="completed", exit_code=0, stdout="deploy\n")
    )
    start_execution(services.app, services.vault, second, worker_id="w")
    position = finish_execution(
        services.app, second, Outcome(status="failed", exit_code=3, stderr="boom")
    )
    assert position is not None
    settle(services, position)
    view = services.queries.get_job(str(job.id))
    assert view is not None and view.status == "failed"
    done = {e.id: e for e in view.executions}
    assert (done[str(first)].status, done[str(first)].exit_code, done[str(first)].stdout) == (
        "completed",
        0,
        "deploy\n",
    )
    assert (done[str(second)].status, done[str(second)].exit_code) == ("failed", 3)
    assert done[str(first)].duration_seconds is not None
    assert done[str(first)].started_at < done[str(first)].completed_at  # type: ignore[operator]


def test_a_restarted_projector_applies_nothing_twice(services: Services) -> None:
    system = register(services)
    job = new_job(services, system.id)
    (execution_id,) = services.app.repository.get(job.id).execution_ids
    (work,) = start_executions(services.app, services.vault, [execution_id], worker_id="w").works
    settle(
        services,
        finish_executions(services.app, {execution_id: (work.execution, Outcome("completed"))}),
    )
    services.close()

    again = build(services.settings)
    try:
        projector = again.start_projector()
        assert projector.position == again.app.recorder.max_notification_id()
        assert projector.catch_up() == 0
        view = again.queries.get_job(str(job.id))
        assert view is not None and view.status == "completed"
        jobs, total = again.queries.list_jobs(status=None, created_by=None, limit=10, offset=0)
        assert total == 1 and len(jobs[0].executions) == 1
    finally:
        again.close()


def test_jobs_are_listed_newest_first_and_filtered(services: Services) -> None:
    system = register(services)
    ids = [new_job(services, system.id).id for _ in range(3)]
    jobs, total = services.queries.list_jobs(status=None, created_by=None, limit=2, offset=0)
    assert total == 3 and [j.id for j in jobs] == [str(ids[2]), str(ids[1])]
    jobs, total = services.queries.list_jobs(
        status="completed", created_by=None, limit=50, offset=0
    )
    assert (jobs, total) == ([], 0)
    _, total = services.queries.list_jobs(status=None, created_by="nobody", limit=50, offset=0)
    assert total == 0


def test_an_event_that_cannot_be_projected_is_recorded_and_passed_over(
    services: Services,
) -> None:
    settle(services, register(services, "before"))
    services.app.recorder.insert_events(
        [StoredEvent(originator_id=uuid4(), originator_version=1, topic="orca.Bogus", state=b"{}")]
    )
    after = register(services, "after")
    settle(services, after)
    assert services.queries.get_system(str(after.id)) is not None
    assert services.queries.projection_failures() == 1
    assert services.projection_lag() == 0


def test_a_second_projector_on_the_same_store_applies_nothing_twice(services: Services) -> None:
    settle(services, register(services, "first"))
    other = build(services.settings)
    try:
        behind = other.start_projector()
        saved = register(services, "second")
        settle(services, saved)
        behind.position = 0  # as if it had slept through everything
        behind.catch_up()
        _, total = services.queries.list_systems(active=None, system_type=None, limit=9, offset=0)
        assert total == 2
        assert services.queries.counts().systems.total == 2
        assert services.queries.projection_failures() == 0
    finally:
        other.close()
