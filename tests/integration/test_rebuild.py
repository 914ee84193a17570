"""Rebuilt read models equal the live ones, and the live projector carries on after the switch."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from orca.application.executions import Outcome, finish_execution, start_execution
from orca.application.jobs import CreateJob, cancel_job, create_job
from orca.application.systems import (
    Credentials,
    RegisterSystem,
    UpdateSystem,
    register_system,
    update_system,
)
from orca.bootstrap import Services
from orca.projections import reports
from orca.projections.beacon import Beacon
from orca.projections.projector import Projector
from orca.projections.rebuild import PROJECTED, rebuild


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
        for table in PROJECTED:
            cur.execute(f"SELECT * FROM {table} ORDER BY 1")
            tables[table] = [tuple(dict(row).values()) for row in cur.fetchall()]
    return tables


def test_rebuilt_read_models_equal_the_live_ones(services: Services) -> None:
    assert services.views.wait_for(populate(services, 12), timeout=20)
    before = snapshot(services)
    seen: list[tuple[int, int]] = []

    applied = rebuild(
        services.app,
        services.settings.postgres,
        services.settings.sqlite_path,
        lambda done, total, seconds: seen.append((done, total)),
    )

    assert applied == services.app.recorder.max_notification_id()
    assert seen and seen[-1][0] == seen[-1][1]
    assert snapshot(services) == before


def test_the_live_projector_carries_on_after_a_rebuild(services: Services) -> None:
    assert services.views.wait_for(populate(services, 3), timeout=20)
    rebuild(
        services.app,
        services.settings.postgres,
        services.settings.sqlite_path,
        lambda *progress: None,
    )
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
    populate(services, 6)
    report = Projector(
        services.app, services.store, Beacon(), Beacon(),
        name=reports.NAME, handlers=reports.HANDLERS,
    )  # fmt: skip
    report.catch_up()
    before = reports.system_days(services.store, "2000-01-01")
    assert sum(r.executions for r in before) == 6
    with services.store.direct() as cur:  # as if the model had never existed
        cur.execute("DELETE FROM report_system_days")
        cur.execute("DELETE FROM report_executions")
    # A model under a new name starts at the first event, as one added to a running Orca.
    fresh = Projector(
        services.app, services.store, Beacon(), Beacon(),
        name="orca-reports-added-later", handlers=reports.HANDLERS,
    )  # fmt: skip
    assert fresh.position == 0
    fresh.catch_up()
    assert reports.system_days(services.store, "2000-01-01") == before
    (row, *_) = before
    assert 0 <= row.success_rate <= 1 and row.mean_duration_seconds >= 0
