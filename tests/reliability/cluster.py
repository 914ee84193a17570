"""Orca as in production, on one machine: two ``orca api``, one ``orca projector`` and two
``orca worker`` processes on a fresh database of a private PostgreSQL, and one registered
system per OpenSSH host of the fleet."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import httpx

from orca.application.sealing import new_master_key
from orca.config import Settings
from support.postgres import PrivatePostgres
from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

UNLIMITED = "1000000/minute"  # every client comes from 127.0.0.1; the rate limit has its tests
ADMIN_PASSWORD = "admin-pw-reliability"
USER_PASSWORD = "load-user-pw-reliability"
LOAD_USERS = 4  # operators the load's clients log in as (a login costs an argon2 hash)


class Cluster:
    """Start with ``start()``; ``kill``, ``restart`` any process by name; ``close()``."""

    def __init__(
        self,
        pg: PrivatePostgres,
        hosts: list[SshdHost],
        *,
        lease_seconds: float = 20.0,
        apis: int = 2,
        workers: int = 2,
        max_concurrency: int = 10,
    ) -> None:
        self.pg = pg
        self.hosts = hosts
        self.workdir = Path(tempfile.mkdtemp(prefix="orca-reliability-"))
        # Commands run as the sshd user leave a line per run here.
        self.runs_dir = self.workdir / "runs"
        self.runs_dir.mkdir()
        self.runs_dir.chmod(0o777)
        self.workdir.chmod(0o755)
        self.runs = self.runs_dir / "runs.log"
        self.lease_seconds = lease_seconds
        self.max_concurrency = max_concurrency
        self.names = [f"api-{n + 1}" for n in range(apis)] + ["projector"]
        self.names += [f"worker-{n + 1}" for n in range(workers)]
        self.processes: dict[str, OrcaServer] = {}
        self.systems: dict[str, SshdHost] = {}  # system id -> its host
        self.tokens: dict[str, str] = {}  # load user -> access token
        self._admin: ApiClient | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        url = self.pg.create_database()
        self.settings = Settings(
            data_dir=self.workdir / "var",
            database_url=url,
            admin_password=ADMIN_PASSWORD,
            secret_key=new_master_key(),
            connect_timeout=30.0,  # 2 busy cores: SSH logins can be slow under load
            rate_limit=UNLIMITED,
            login_rate_limit=UNLIMITED,
            worker_lease_seconds=self.lease_seconds,
            max_concurrency=self.max_concurrency,
            health_interval=0.0,  # no background connection tests: only the load's commands
            log_level="warning",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
        subprocess.run(
            [sys.executable, "-m", "orca.cli", "migrate"],
            env=env | self.settings.to_env(),
            check=True,
            capture_output=True,
        )
        for name in self.names:
            command = name.split("-")[0]
            self.processes[name] = OrcaServer(
                self.settings, self.workdir / f"{name}.log", command=command
            )
        self._in_parallel(lambda p: p.start(), list(self.processes.values()))
        self._admin = self.processes["api-1"].client()
        for n, host in enumerate(self.hosts):
            created = self.call(
                "POST",
                "/api/systems",
                json={
                    "name": f"host-{n + 1:02d}",
                    "hostname": host.host,
                    "port": host.port,
                    "username": host.username,
                    "password": host.password,
                },
            )
            assert created.status_code == 201, created.text
            self.systems[created.json()["id"]] = host
        for n in range(LOAD_USERS):
            username = f"load-{n + 1}"
            created = self.call(
                "POST",
                "/api/users",
                json={"username": username, "password": USER_PASSWORD, "role": "operator"},
            )
            assert created.status_code == 201, created.text
            login = httpx.post(
                f"{self.api_url(n)}/api/auth/token",
                json={"username": username, "password": USER_PASSWORD},
                timeout=30,
                trust_env=False,
            )
            assert login.status_code == 200, login.text
            self.tokens[username] = login.json()["access_token"]
        return self

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for process in self.processes.values():
            if process.alive:
                process.resume()  # a paused process would not hear SIGTERM
        self._in_parallel(lambda p: p.stop(), list(self.processes.values()))

    def remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _in_parallel(action: Callable[[OrcaServer], Any], processes: list[OrcaServer]) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(processes))) as pool:
            for future in [pool.submit(action, p) for p in processes]:
                future.result()

    # --- the parts ------------------------------------------------------------------------------

    @property
    def admin(self) -> ApiClient:
        assert self._admin is not None, "start() the cluster first"
        return self._admin

    @property
    def api_names(self) -> list[str]:
        return [n for n in self.names if n.startswith("api-")]

    @property
    def worker_names(self) -> list[str]:
        return [n for n in self.names if n.startswith("worker-")]

    def api_url(self, n: int) -> str:
        return self.processes[self.api_names[n % len(self.api_names)]].base_url

    @property
    def api_urls(self) -> list[str]:
        return [self.processes[n].base_url for n in self.api_names]

    def system_address(self, system_id: str) -> str:
        host = self.systems[system_id]
        return f"{host.host}:{host.port}"

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        process = self.processes[name]
        if process.alive:
            process.stop()
        process.start()

    def use_admin_of(self, name: str) -> None:
        """Ask ``name`` (an API process) from now on, e.g. while another one is down."""
        if self._admin is not None:
            self._admin.close()
        self._admin = self.processes[name].client()

    # --- the test's own requests, retried as the load's clients retry them ----------------------

    RETRY_SECONDS = 120.0

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        key: str | None = None,
        **params: Any,
    ) -> httpx.Response:
        """A request as a demanding user makes it: a 503 (the database away, the read models
        behind) is retried if the request is safe to repeat: a GET, a PUT, a POST /api/jobs
        with one Idempotency-Key (``key``) for all tries; not another POST."""
        client = self.admin.http
        if method == "POST" and path == "/api/jobs":
            key = key or f"test-{uuid.uuid4().hex}"
        headers = {"Idempotency-Key": key} if key else {}
        repeatable = method in ("GET", "PUT") or key is not None
        deadline = time.monotonic() + self.RETRY_SECONDS
        while True:
            response = client.request(method, path, json=json, params=params, headers=headers)
            if response.status_code != 503 or not repeatable or time.monotonic() > deadline:
                return response
            time.sleep(0.5)

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.call("POST", "/api/jobs", json=body)
        assert response.status_code == 201, response.text[:500]
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text[:500]
        job: dict[str, Any] = response.json()
        return job

    def wait_for_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll until the job is finished; return it (as it is then, if it never finishes)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] not in ("pending", "running") or time.monotonic() > deadline:
                return job
            time.sleep(0.2)

    def wait_settled(self, timeout: float = 120) -> dict[str, Any]:
        """Wait until the read models show every recorded event; return /health/detailed."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.admin.get("/health/detailed")
            body: dict[str, Any] = response.json()
            projections = body.get("projections") or {}
            if response.status_code == 200 and projections.get("lag_events") == 0:
                return body
            assert time.monotonic() < deadline, f"the read models did not catch up: {body}"
            time.sleep(0.2)

    def log_tails(self, chars: int = 4000) -> str:
        parts = []
        for name in self.names:
            path = self.workdir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            parts.append(f"----- {name} ({path}) -----\n{text[-chars:]}")
        parts.append(f"----- postgres -----\n{self.pg.log_tail(chars)}")
        return "\n".join(parts)
