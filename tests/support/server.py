"""A real ``orca serve`` process for end-to-end tests, and a client for its API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from orca.config import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrcaServer:
    """Runs ``orca serve`` (or ``api``, ``worker``, ``projector``) with ``settings`` on a free
    port; stop(), kill() and start() again at will."""

    def __init__(self, settings: Settings, log_path: Path, command: str = "serve") -> None:
        self.settings = settings
        self.command = command
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The running ``orca`` process (to read its memory use in /proc)."""
        assert self._process is not None, "start() the server first"
        return self._process.pid

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
        env |= self.settings.to_env()
        env |= {"ORCA_HOST": "127.0.0.1", "ORCA_PORT": str(self.port)}
        return env

    def start(self) -> Self:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [sys.executable, "-m", "orca.cli", self.command],
                env=self.env(),
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"orca exited: {self.log_path.read_text()[-3000:]}")
            if self.command in ("worker", "projector"):  # no HTTP to ask: alive is enough
                time.sleep(0.5)
                if self._process.poll() is None:
                    return self
                continue
            try:
                if (
                    httpx.get(f"{self.base_url}/health", timeout=1, trust_env=False).status_code
                    == 200
                ):
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"orca serve did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a machine dies."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    @property
    def alive(self) -> bool:
        """Started, and not exited since."""
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process freezes, its connections stay open (as a stalled machine)."""
        assert self._process is not None, "start() the server first"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        assert self._process is not None, "start() the server first"
        self._process.send_signal(signal.SIGCONT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, username: str = "admin", password: str | None = None) -> ApiClient:
        return ApiClient(self.base_url, username, password or self.settings.admin_password or "")


class ApiClient:
    """Logs in like a user would and speaks JSON."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30, trust_env=False)
        response = self.http.post(
            "/api/auth/token", json={"username": username, "password": password}
        )
        if response.status_code != 200:
            self.http.close()
            raise AssertionError(f"login as {username} failed: {response.text}")
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def wait_for_job(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        """Poll like a user until the job is finished; return it."""
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.get(f"/api/jobs/{job_id}").json()
            if job["status"] not in ("pending", "running") or time.monotonic() > deadline:
                return job
            time.sleep(0.1)

    def close(self) -> None:
        self.http.close()
