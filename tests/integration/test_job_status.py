"""A job's status follows from its executions, whatever order they start and finish in."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orca.application.executions import Outcome, finish_execution, start_execution
from orca.application.jobs import CreateJob, create_job
from orca.application.sealing import new_master_key
from orca.application.systems import Credentials, RegisterSystem, register_system
from orca.bootstrap import Services, build, migrate
from orca.config import Settings

FINAL = ["completed", "failed", "timeout", "cancelled"]


@pytest.fixture(scope="module")
def orca() -> Iterator[tuple[Services, list[object]]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Settings(data_dir=Path(tmp), admin_password="x" * 12, secret_key=new_master_key())
        migrate(config)
        services = build(config)
        services.start_projector()
        systems = [
            register_system(
                services.app,
                services.vault,
                RegisterSystem(
                    name=f"s{i}",
                    hostname="127.0.0.1",
                    port=22,
                    system_type="linux",
                    username="u",
                    credentials=Credentials(password="p"),
                ),
                by="admin",
            ).id
            for i in range(4)
        ]
        yield services, systems
        services.close()


def expected(states: list[str]) -> str:
    if all(s in FINAL for s in states):
        return "completed" if all(s == "completed" for s in states) else "failed"
    if any(s != "pending" for s in states):
        return "running"
    return "pending"


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(st.sampled_from(["pending", "running", *FINAL]), min_size=1, max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_job_status_is_derived_from_execution_states(
    orca: tuple[Services, list[object]], plan: list[str], order: object
) -> None:
    services, systems = orca
    job = create_job(
        services.app,
        CreateJob(name="p", command="true", system_ids=systems[: len(plan)]),  # type: ignore[arg-type]
        by="admin",
    )
    execution_ids = services.app.repository.get(job.id).execution_ids
    steps = list(zip(execution_ids, plan, strict=True))
    order.shuffle(steps)  # type: ignore[attr-defined]
    position = job.position
    for execution_id, target in steps:
        if target == "pending":
            continue
        start_execution(services.app, services.vault, execution_id, worker_id="w")
        position = services.app.recorder.max_notification_id()
        if target in FINAL:
            position = finish_execution(services.app, execution_id, Outcome(status=target))  # type: ignore[arg-type]
    assert services.views.wait_for(position, timeout=10)
    view = services.queries.get_job(str(job.id))
    assert view is not None
    assert [e.status for e in view.executions] == plan
    assert view.status == expected(plan)
