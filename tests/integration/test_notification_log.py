"""Orca's PostgreSQL recorder reads the notification log as the library's recorder does."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.postgres import PostgresApplicationRecorder

from orca.application.jobs import CreateJob, create_job
from orca.application.systems import Credentials, RegisterSystem, register_system
from orca.bootstrap import Services


@pytest.mark.parametrize("settings", ["postgres"], indirect=True)  # SQLite: the library's own
@pytest.mark.parametrize(
    "query",
    [
        {"start": None, "limit": 100},
        {"start": 3, "limit": 5},
        {"start": 3, "limit": 5, "inclusive_of_start": False},
        {"start": 2, "limit": 100, "stop": 9},
        {"start": 0, "limit": 100, "topics": ("orca.Job.Created", "orca.System.Registered")},
    ],
)
def test_notifications_read_as_the_library_reads_them(
    services: Services, query: dict[str, Any]
) -> None:
    system = register_system(
        services.app, services.vault,
        RegisterSystem(
            name="s", hostname="127.0.0.1", port=22, system_type="linux", username="u",
            credentials=Credentials(password="pw"),
        ),
        by="admin",
    )  # fmt: skip
    for n in range(3):
        create_job(
            services.app, CreateJob(name=f"j{n}", command="true", system_ids=[system.id]), by="a"
        )

    ours = services.app.recorder.select_notifications(**query)
    library = PostgresApplicationRecorder.select_notifications(services.app.recorder, **query)

    assert ours == library and len(ours) > 1
