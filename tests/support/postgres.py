"""A private PostgreSQL cluster for tests that stop, crash or restart the server.

The machine's server on 127.0.0.1:5432 is shared with other test runs and must never be
restarted; this one lives in a temporary directory, listens on a free loopback port (and a
unix socket in that directory) and belongs to the test that started it. PostgreSQL refuses to
run as root, so every server command runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

BIN_DIRS = tuple(f"/usr/lib/postgresql/{v}/bin" for v in (15, 16, 17))
OS_USER = "postgres"
_SETTINGS = {
    # Orca's processes each pool up to 30 connections, plus listeners and leader locks.
    "max_connections": "300",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "log_connections": "off",
}


def _bin_dir() -> Path:
    for candidate in BIN_DIRS:
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise RuntimeError(f"no PostgreSQL server binaries in {', '.join(BIN_DIRS)}")


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class PrivatePostgres:
    """``initdb`` into a temporary directory, then ``start``, ``stop``, ``crash`` and
    ``start`` again at will; every database it made is gone with it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.dir: Path | None = None
        self._bin = _bin_dir()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        assert self.dir is not None, "start() the cluster first"
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None, "start() the cluster first"
        return self.dir / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def _as_postgres(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", OS_USER, "--", *args] if os.geteuid() == 0 else list(args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done

    def init(self) -> Self:
        """A new cluster (trust authentication, superuser ``postgres``), not yet started."""
        self.dir = Path(tempfile.mkdtemp(prefix="orca-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OS_USER)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self._as_postgres(
            str(self._bin / "initdb"),
            "--pgdata", str(self.data), "--username", "postgres", "--auth", "trust",
            "--encoding", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip
        self.port = _free_port(self.host)
        lines = [
            f"listen_addresses = '{self.host}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.dir}'",
            *(f"{name} = '{value}'" for name, value in _SETTINGS.items()),
        ]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")
        return self

    def start(self) -> Self:
        """Start the server (again) on the same port; returns once it accepts connections.

        The postmaster is this process's child (not daemonized by pg_ctl), so that a crashed
        one is reaped here: an unreaped zombie would keep its lock file "in use".
        """
        if self.dir is None:
            self.init()
        assert self._process is None, "already running"
        owner = pwd.getpwnam(OS_USER) if os.geteuid() == 0 else None
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(self._bin / "postgres"), "-D", str(self.data)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                user=owner.pw_uid if owner else None,
                group=owner.pw_gid if owner else None,
                extra_groups=[] if owner else None,
                start_new_session=True,  # a ^C of the test run is not the server's
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self._process is not None and self._process.poll() is not None:
                    self._process = None
                    raise RuntimeError(f"PostgreSQL exited: {self.log_tail()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not come up: {self.log_tail()}") from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back and disconnect every session, then shut down cleanly;
        ``immediate``: quit at once without a checkpoint (the next start recovers)."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.crash()
        self._process = None

    def crash(self) -> None:
        """SIGKILL the postmaster and every backend, as when the machine loses power."""
        if self._process is None:
            return
        backends = subprocess.run(
            ["pgrep", "-P", str(self._process.pid)], capture_output=True, text=True
        ).stdout.split()
        self._process.kill()
        for pid in map(int, backends):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._process.wait(timeout=30)
        self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"orca_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def destroy(self) -> None:
        if self.dir is None:
            return
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()
