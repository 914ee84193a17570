"""Fixtures for Orca itself: settings on each backend, and services built from them."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orca.application.sealing import new_master_key
from orca.bootstrap import Services, build, migrate
from orca.config import Settings
from support.databases import fresh_database

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="orca-data-") as path:
        yield Path(path)


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Settings]:
    """The same settings on the embedded SQLite store and on PostgreSQL."""
    base = Settings(
        data_dir=data_dir,
        admin_password="admin-pw-for-tests",
        secret_key=new_master_key(),
        connect_timeout=3.0,
    )
    if request.param == "sqlite":
        yield base
        return
    with fresh_database() as url:
        yield Settings(**{**base.__dict__, "database_url": url})


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """Migrated storage, a running projector, and no executor (tests drive the commands)."""
    migrate(settings)
    built = build(settings)
    built.start_listener()
    built.start_projector()
    try:
        yield built
    finally:
        built.close()
