"""One real ``orca serve`` per backend for the module, against a real sshd."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orca.application.sealing import new_master_key
from orca.config import Settings
from support.databases import fresh_database
from support.fixtures import BACKENDS
from support.server import ApiClient, OrcaServer

UNLIMITED = "1000000/minute"  # the rate limit has its own tests


@pytest.fixture(scope="module", params=BACKENDS)
def orca(request: pytest.FixtureRequest) -> Iterator[OrcaServer]:
    with tempfile.TemporaryDirectory(prefix="orca-e2e-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "var",
            admin_password="admin-pw-e2e",
            secret_key=new_master_key(),
            connect_timeout=3.0,
            rate_limit=UNLIMITED,
            login_rate_limit=UNLIMITED,
        )
        log = Path(tmp) / "orca.log"
        if request.param == "sqlite":
            with OrcaServer(settings, log) as server:
                yield server
            return
        with fresh_database() as url:
            pg = Settings(**{**settings.__dict__, "database_url": url})
            with OrcaServer(pg, log) as server:
                yield server


@pytest.fixture
def api(orca: OrcaServer) -> Iterator[ApiClient]:
    client = orca.client()
    yield client
    client.close()
