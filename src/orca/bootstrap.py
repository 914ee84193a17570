"""The one composition root: builds every part of Orca from its settings."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orca.application.app import OrcaApplication
from orca.application.audit import acting
from orca.application.sealing import (
    Sealer,
    Vault,
    derive_key,
    new_master_key,
    parse_master_key,
    rotate_master_key,
)
from orca.application.users import ensure_admin
from orca.config import ConfigError, Settings
from orca.executor.pool import SshLimits, SshPool
from orca.executor.remote import Remote
from orca.executor.runner import Executor, ExecutorSettings
from orca.executor.winrm import WinrmLimits
from orca.projections.beacon import Beacon
from orca.projections.keys import SqlKeyStore
from orca.projections.leader import Leadership
from orca.projections.listener import PostgresListener
from orca.projections.projector import Projector
from orca.projections.queries import Queries
from orca.projections.reports import REPORTS
from orca.projections.store import ACCOUNTS_CHANNEL, VIEWS_CHANNEL, ReadStore, build_read_store
from orca.projections.views import READ_MODELS
from orca.projections.workers import Workers

log = logging.getLogger(__name__)

KEY_WRAPPING = "orca/system-credentials"


def event_store_env(settings: Settings, *, create_tables: bool) -> dict[str, str]:
    env = {"CREATE_TABLE": "y" if create_tables else "n"}
    pg = settings.postgres
    if pg is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "APPLICATION_RECORDER_TOPIC": "orca.application.recorder:OrcaSQLiteRecorder",
            "SQLITE_DBNAME": str(settings.sqlite_path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    else:
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "APPLICATION_RECORDER_TOPIC": "orca.application.recorder:OrcaPostgresRecorder",
            "POSTGRES_HOST": pg.host,
            "POSTGRES_PORT": str(pg.port),
            "POSTGRES_USER": pg.user,
            "POSTGRES_PASSWORD": pg.password,
            "POSTGRES_DBNAME": pg.dbname,
            "POSTGRES_POOL_SIZE": "10",
            "POSTGRES_MAX_OVERFLOW": "20",
            "POSTGRES_CONNECT_TIMEOUT": "5",
            # No test query on each connection taken from the pool: it costs every command
            # a round trip or more, and a dropped connection still fails once (then the pool
            # replaces it); measured with the test, creating jobs over HTTP was ~10% slower.
            "POSTGRES_PRE_PING": "n",
            "POSTGRES_LOCK_TIMEOUT": "10",
        }
    return env


def master_key(settings: Settings) -> bytes:
    """``ORCA_SECRET_KEY``, or a key Orca made once and keeps in the data directory."""
    if settings.secret_key:
        return parse_master_key(settings.secret_key)
    path = settings.data_dir / "secret.key"
    if not path.exists():
        if settings.postgres is not None:
            log.warning(
                "ORCA_SECRET_KEY is not set: using a key in %s; every Orca process sharing "
                "this database needs the same key",
                path,
            )
        _write_private(path, new_master_key())
    try:
        return parse_master_key(path.read_text().strip())
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


@dataclass
class Services:
    """Everything the API, the projector and the executor share in one process."""

    settings: Settings
    app: OrcaApplication
    store: ReadStore
    queries: Queries
    workers: Workers
    remote: Remote
    vault: Vault
    token_key: bytes
    events: Beacon
    views: Beacon
    # Advances when users or sessions change in the read models (sessions checked are forgotten).
    accounts: Beacon = field(default_factory=Beacon)
    reports_position: Beacon = field(default_factory=Beacon)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def projection_lag(self) -> int:
        """Events recorded that the read models do not show yet."""
        head = self.app.recorder.max_notification_id() or 0
        return max(0, head - (self.store.max_tracking_id(self.app.name) or 0))

    def start_projector(self) -> Projector:
        projector = Projector(
            self.app, self.store, self.events, self.views, READ_MODELS, accounts=self.accounts
        )
        leadership = Leadership(self.settings.postgres, projector.name)
        self._spawn("projector", lambda stop: projector.run(stop, leadership))
        reports = Projector(self.app, self.store, self.events, self.reports_position, REPORTS)
        reports_lead = Leadership(self.settings.postgres, reports.name)
        self._spawn("reports", lambda stop: reports.run(stop, reports_lead))
        return projector

    def start_listener(self) -> None:
        """Hear of events and view progress made by other processes (PostgreSQL only)."""
        pg = self.settings.postgres
        if pg is None:
            return
        channel = self.app.recorder.channel_name  # type: ignore[attr-defined]
        listener = PostgresListener(
            pg, {channel: self.events, VIEWS_CHANNEL: self.views, ACCOUNTS_CHANNEL: self.accounts}
        )
        self._spawn("listener", listener.run)

    def executor(self, worker_id: str | None = None) -> Executor:
        s = self.settings
        return Executor(
            app=self.app,
            vault=self.vault,
            queries=self.queries,
            workers=self.workers,
            remote=self.remote,
            events=self.events,
            settings=ExecutorSettings(
                worker_id=worker_id
                or f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}",
                max_concurrency=s.max_concurrency,
                health_interval=s.health_interval,
            ),
        )

    def _spawn(self, name: str, target: Callable[[threading.Event], None]) -> None:
        thread = threading.Thread(
            target=target, args=(self._stop,), name=f"orca-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self.events.advance()
        for thread in self._threads:
            thread.join(timeout=10)
        self.app.close()


def build(settings: Settings, *, create_tables: bool = False) -> Services:
    events = Beacon()
    app = OrcaApplication(event_store_env(settings, create_tables=create_tables), events.advance)
    store = build_read_store(app.factory.datastore)  # type: ignore[attr-defined]
    if create_tables:
        store.create_table()
    key = master_key(settings)
    return Services(
        settings=settings,
        app=app,
        store=store,
        queries=Queries(store),
        workers=Workers(store, settings.worker_lease_seconds),
        remote=Remote(
            app,
            SshPool(
                SshLimits(
                    connect_timeout=settings.connect_timeout,
                    keepalive_interval=settings.keepalive_interval,
                    max_output_bytes=settings.max_output_bytes,
                )
            ),
            WinrmLimits(
                connect_timeout=settings.connect_timeout,
                max_output_bytes=settings.max_output_bytes,
            ),
        ),
        vault=Vault(Sealer(derive_key(key, KEY_WRAPPING)), SqlKeyStore(store)),
        token_key=derive_key(key, "orca/api-tokens"),
        events=events,
        views=Beacon(),
    )


def rotate_secret_key(settings: Settings, new_key: str) -> int:
    """Rewrap every data key with a key derived from ``new_key``; return how many.

    The event log is untouched. A key Orca keeps in the data directory is replaced there;
    an ``ORCA_SECRET_KEY`` must then be changed wherever Orca runs.
    """
    new = parse_master_key(new_key)
    services = build(settings)
    try:
        old_wrapper = Sealer(derive_key(master_key(settings), KEY_WRAPPING))
        count = rotate_master_key(
            SqlKeyStore(services.store), old_wrapper, Sealer(derive_key(new, KEY_WRAPPING))
        )
    finally:
        services.close()
    if not settings.secret_key:
        path = settings.data_dir / "secret.key"
        path.unlink()
        _write_private(path, new_key)
    return count


def migrate(settings: Settings) -> str | None:
    """Create the tables and the first admin; return the admin password if it was generated."""
    services = build(settings, create_tables=True)
    try:
        with acting("orca migrate"):
            return ensure_admin(services.app, settings.admin_password)
    finally:
        services.close()
