"""Sealed credentials move to a new ORCA_SECRET_KEY without touching the event log."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orca.application.executions import connection_of
from orca.application.sealing import SealError, new_master_key
from orca.application.systems import Credentials, RegisterSystem, register_system
from orca.bootstrap import build, migrate, rotate_secret_key
from orca.config import Settings


def test_rotating_the_secret_key_keeps_every_credential_readable(settings: Settings) -> None:
    migrate(settings)
    services = build(settings)
    saved = register_system(
        services.app,
        services.vault,
        RegisterSystem(
            name="rotated",
            hostname="127.0.0.1",
            port=22,
            system_type="linux",
            username="u",
            credentials=Credentials(password="rotate-me-pw"),
        ),
        by="admin",
    )
    events_before = services.app.recorder.max_notification_id()
    services.close()

    new_key = new_master_key()
    assert rotate_secret_key(settings, new_key) >= 1

    rotated = build(replace(settings, secret_key=new_key))
    try:
        connection = connection_of(rotated.app, rotated.vault, saved.id)
        assert connection.credentials.password == "rotate-me-pw"
        assert rotated.app.recorder.max_notification_id() == events_before
    finally:
        rotated.close()

    stale = build(settings)
    try:
        with pytest.raises(SealError):
            connection_of(stale.app, stale.vault, saved.id)
    finally:
        stale.close()
