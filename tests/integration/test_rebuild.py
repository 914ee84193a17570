"""Rebuilt read models equal the live ones, and the live projectors carry on after the switch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest

from orca.application.executions import Outcome, finish_execution, start_execution
from orca.application.jobs import CreateJob, cancel_job, create_job
from orca.application.systems import (
    Credentials,
    RegisterSystem,
    UpdateSystem,
    register_system,
    update_system,
)
from orca.bootstrap import Services, build, migrate
from orca.config import Settings
from orca.domain.job import Job
from orca.projections import rebuild as rebuild_module
from orca.projections import reports
from orca.projections.beacon import Beacon
from orca.projections.projector import Projector, catch_up
from orca.projections.rebuild import PROJECTIONS, Progress, rebuild
from orca.projections.rows import Projection, Rows


def populate(services: Services, n_jobs: int) -> int:
    app = services.app
    systems = [
        register_system(
            app, services.vault,
            RegisterSystem(
                name=f"s{i}", hostname="127.0.0.1", port=22, system_type="linux",
                username="u", credentials=Credentials(password="pw"),
            ),
            by="admin",
        ).id
        for i in range(3)
    ]  # fmt: skip
    update_system(app, services.vault, systems[0], UpdateSystem(name="renamed"), by="admin")
    position = 0
    for n in range(n_jobs):
        job = create_job(app, CreateJob(name=f"j{n}", command="true", system_ids=systems), by="a")
        first, second, _ = app.repository.get(job.id).execution_ids
        start_execution(app, services.vault, first, worker_id="w")
        position = finish_execution(
            app, first, Outcome(status="completed" if n % 3 else "failed", exit_code=n % 3)
        )
        if n % 4 == 0:
            start_execution(app, services.vault, second, worker_id="w")
            position = cancel_job(app, job.id, by="admin")
    return position


def snapshot(services: Services) -> dict[str, list[Any]]:
    tables = {}
    with services.store.read() as cur:
        for table in (t for p in PROJECTIONS.values() for t in p.tables):
            cur.execute(f"SELECT * FROM {table} ORDER BY 1")
            tables[table] = [tuple(dict(row).values()) for row in cur.fetchall()]
    return tables


def settled(services: Services, position: int) -> None:
    """The live projections show every event up to ``position``."""
    assert services.views.wait_for(position, timeout=20)
    assert services.reports_position.wait_for(position, timeout=20)


def rebuild_all(services: Services, progress: Progress | None = None) -> dict[str, int]:
    return rebuild(
        services.app,
        services.settings.postgres,
        services.settings.sqlite_path,
        progress or (lambda *shown: None),
    )


# Full pages have their writes made on a thread of their own while the next page is decoded
# (the last page's are made at once): a small batch makes many of them.
BATCHES = pytest.mark.parametrize("batch", [7, rebuild_module.REPLAY_BATCH])


@BATCHES
def test_rebuilt_read_models_equal_the_live_ones(
    services: Services, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(rebuild_module, "REPLAY_BATCH", batch)
    settled(services, populate(services, 12))
    before = snapshot(services)
    seen: list[tuple[int, int]] = []
    served: list[int] = []

    def progress(done: int, total: int, seconds: float) -> None:
        seen.append((done, total))
        served.append(services.queries.counts().jobs.total)  # the old tables, meanwhile

    applied = rebuild_all(services, progress)

    head = services.app.recorder.max_notification_id()
    assert applied == {"orca": head, "orca-reports": head}
    assert seen[-1] == (head, head)
    assert set(served) == {12}
    assert snapshot(services) == before


@pytest.mark.parametrize("name", list(PROJECTIONS))
def test_rebuilding_one_projection_leaves_the_others_alone(services: Services, name: str) -> None:
    settled(services, populate(services, 4))
    before = snapshot(services)
    with services.store.direct() as cur:  # damage one row of every projection
        cur.execute("UPDATE jobs SET name = 'damaged' WHERE name = 'j0'")
        cur.execute("UPDATE report_system_days SET executions = 99")
    damaged = snapshot(services)

    applied = rebuild(
        services.app,
        services.settings.postgres,
        services.settings.sqlite_path,
        lambda *shown: None,
        [name],
    )

    assert list(applied) == [name]
    after = snapshot(services)
    for projection in PROJECTIONS.values():
        for table in projection.tables:
            expected = before if projection.name == name else damaged
            assert after[table] == expected[table], table


def test_events_saved_while_switching_are_in_the_rebuilt_models(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled(services, populate(services, 3))
    saved: list[int] = []

    def replay_then_save(projectors: list[Projector], on_batch: Any = None) -> dict[str, int]:
        applied = catch_up(projectors, on_batch)
        if not saved:  # a job arrives after the replay: the switch applies it
            saved.append(populate_more(services))
        return applied

    monkeypatch.setattr(rebuild_module, "catch_up", replay_then_save)
    applied = rebuild_all(services)

    assert applied["orca"] == services.app.recorder.max_notification_id()
    settled(services, saved[0])
    jobs, total = services.queries.list_jobs(status=None, created_by=None, limit=50, offset=0)
    assert total == 4 and jobs[0].name == "after"
    assert services.queries.counts().jobs.total == 4


def test_the_live_projector_carries_on_after_a_rebuild(services: Services) -> None:
    settled(services, populate(services, 3))
    rebuild_all(services)
    position = populate_more(services)
    assert services.views.wait_for(position, timeout=20)
    jobs, total = services.queries.list_jobs(status=None, created_by=None, limit=50, offset=0)
    assert total == 4 and jobs[0].name == "after"
    assert services.queries.counts().jobs.total == 4


def populate_more(services: Services) -> int:
    systems, _ = services.queries.list_systems(active=None, system_type=None, limit=1, offset=0)
    return create_job(
        services.app,
        CreateJob(name="after", command="true", system_ids=[UUID(systems[0].id)]),
        by="a",
    ).position


def test_a_new_reporting_model_fills_itself_from_history(services: Services) -> None:
    settled(services, populate(services, 6))
    before = reports.system_days(services.store, "2000-01-01")
    assert sum(r.executions for r in before) == 6
    with services.store.direct() as cur:  # as if the model had never existed
        cur.execute("DELETE FROM report_system_days")
    # A model under a new name starts at the first event, as one added to a running Orca.
    added = replace(reports.REPORTS, name="orca-reports-added-later")
    fresh = Projector(services.app, services.store, Beacon(), Beacon(), added)
    assert fresh.position == 0
    fresh.catch_up()
    assert reports.system_days(services.store, "2000-01-01") == before
    (row, *_) = before
    assert 0 <= row.success_rate <= 1 and row.mean_duration_seconds >= 0


def test_what_a_report_knows_of_an_execution_is_read_back_from_the_log(
    services: Services,
) -> None:
    """The report keeps what it knows of an execution (its system, its start) in no table: a
    batch that finds it in neither itself nor the batch before reads the execution's events
    again. Applied one event a batch (a start three batches after its creation, an end two
    after its start), the report comes out as the live projector made it."""
    settled(services, populate(services, 6))
    app = services.app
    systems, _ = services.queries.list_systems(active=None, system_type=None, limit=3, offset=0)
    ids = [UUID(system.id) for system in systems]
    job = create_job(app, CreateJob(name="two", command="true", system_ids=ids), by="a")
    first, second, _ = app.repository.get(job.id).execution_ids
    start_execution(app, services.vault, first, worker_id="w")
    start_execution(app, services.vault, second, worker_id="w")
    finish_execution(app, first, Outcome(status="completed", exit_code=0))
    settled(services, finish_execution(app, second, Outcome(status="completed", exit_code=0)))
    live = reports.system_days(services.store, "2000-01-01")
    assert sum(r.executions for r in live) == 8
    # Nothing of the executions was stored (a query of such a table fails).
    with pytest.raises(Exception, match="report_executions"), services.store.read() as cur:
        cur.execute("SELECT * FROM report_executions")
    with services.store.direct() as cur:
        cur.execute("DELETE FROM report_system_days")
    one_by_one = replace(reports.REPORTS, name="orca-reports-one-by-one")
    Projector(services.app, services.store, Beacon(), Beacon(), one_by_one, batch=1).catch_up()

    assert reports.system_days(services.store, "2000-01-01") == live


def test_migrate_drops_the_table_an_earlier_version_kept_report_rows_in(
    settings: Settings,
) -> None:
    migrate(settings)
    services = build(settings)  # no projector running: migrate runs before the processes
    try:
        with services.store.direct() as cur:  # as an earlier version left it
            cur.execute(
                "CREATE TABLE report_executions (id TEXT PRIMARY KEY, system_id TEXT NOT NULL,"
                " started_at TEXT NULL)"
            )
            cur.execute("INSERT INTO report_executions VALUES ('e1', 's1', NULL)")

        migrate(settings)

        with pytest.raises(Exception, match="report_executions"), services.store.read() as cur:
            cur.execute("SELECT * FROM report_executions")
    finally:
        services.close()


@BATCHES
def test_an_event_that_cannot_be_projected_is_recorded_and_passed_over(
    services: Services, batch: int
) -> None:
    """In one batch, an event fails in its handler, one in the database and one on a row an
    earlier event of the batch made: each is recorded, every other event is applied."""
    with services.store.direct() as cur:
        cur.execute("CREATE TABLE test_jobs (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
        cur.execute("INSERT INTO test_jobs VALUES ('taken', 'before')")
    ids = {"j7": "taken", "j8": "twice", "j9": "twice"}

    def job_created(rows: Rows, e: Job.Created, seq: int) -> None:
        if e.name == "j3":
            raise ValueError("cannot project j3")
        rows.insert("test_jobs", {"id": ids.get(e.name, e.name), "name": e.name})

    projection = Projection("test-jobs", {Job.Created: job_created}, ("test_jobs",))
    head = populate(services, 12)
    projector = Projector(services.app, services.store, Beacon(), Beacon(), projection, batch)
    assert projector.catch_up() == head
    assert projector.position == head

    with services.store.read() as cur:
        cur.execute("SELECT id, name FROM test_jobs ORDER BY id")
        rows = {row["id"]: row["name"] for row in cur.fetchall()}
        cur.execute(
            "SELECT topic, error FROM projection_failures WHERE projection = 'test-jobs'"
            " ORDER BY position"
        )
        failures = [(row["topic"], row["error"]) for row in cur.fetchall()]
    applied = {f"j{n}": f"j{n}" for n in range(12) if f"j{n}" not in ("j3", *ids)}
    assert rows == applied | {"taken": "before", "twice": "j8"}
    assert [topic for topic, _ in failures] == ["orca.Job.Created"] * 3
    assert failures[0][1] == "ValueError: cannot project j3"
    assert "IntegrityError" in failures[1][1]


def test_after_a_statement_on_many_rows_a_batch_reads_them_again(services: Services) -> None:
    """A batch takes the rows the batch before left (that one may still be writing them);
    after ``Rows.execute`` (a system renamed in all its executions, say) only the database
    knows them: the batch before's may be among those the statement changed. Derived rows,
    which are in no table, are kept."""
    session = {
        "id": "s1", "user_id": "u1", "credentials_version": 0, "expires_at": "later",
        "revoked": False,
    }  # fmt: skip
    execution = {"id": "e1", "system_id": "sys1", "started_at": "now"}

    def not_from_the_log(keys: object) -> list[dict[str, object]]:
        raise AssertionError("the batch forgot the derived rows it knew")

    derived = {"report_executions": not_from_the_log}
    with services.store.direct() as cur:
        first = Rows(lambda: cur, derived=derived)
        first.insert("sessions", session)
        first.insert("report_executions", execution)
        first.flush()
        first.applied()
        second = Rows(lambda: cur, before=first, derived=derived)
        assert not second.get("sessions", "s1")["revoked"]  # type: ignore[index]

        second.execute("UPDATE sessions SET revoked = ? WHERE user_id = ?", (True, "u1"))

        assert second.get("sessions", "s1")["revoked"]  # type: ignore[index]
        assert second.get("report_executions", "e1") == execution


def test_orca_rebuild_rebuilds_the_projection_it_is_given(services: Services) -> None:
    settled(services, populate(services, 2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    env |= services.settings.to_env()

    done = orca_cli("rebuild", "--projection", "orca-reports", env=env)
    assert done.returncode == 0, done.stderr
    assert "rebuilt orca-reports from" in done.stdout and "switched in" in done.stdout
    assert re.search(r"\[#+\] (\d+)/\1 events +[\d,]+ events/s +ETA", done.stderr)

    wrong = orca_cli("rebuild", "--projection", "orca-report", env=env)
    assert wrong.returncode == 2
    assert "invalid choice: 'orca-report'" in wrong.stderr and "'orca-reports'" in wrong.stderr
    helped = orca_cli("rebuild", "--help", env=env)
    assert "orca or orca-reports" in " ".join(helped.stdout.split())


def orca_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orca.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
