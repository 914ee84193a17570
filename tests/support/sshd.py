"""A real OpenSSH sshd on a loopback address, for tests (needs root).

sshd runs as PID 1 of its own PID namespace, so stopping it kills every command it started, even
the ones it launched without a pty (killing a plain sshd leaves those running).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

SSHD = "/usr/sbin/sshd"
_START_TIMEOUT_SECONDS = 10.0


class SshdHost:
    """One sshd listening on `host:port`, accepting `username` by password or `private_key`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        username: str = "orcatest",
        password: str = "orcatest-pw-7f3a",
        openssh_defaults: bool = False,
    ) -> None:
        self.host = host
        self.port = 0
        self.username = username
        self.password = password
        self.openssh_defaults = openssh_defaults
        self.private_key = ""
        self.public_host_key = ""
        self.dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is missing: run `make test`, which installs openssh-server")
        _ensure_user(self.username, self.password)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="orca-sshd-"))
        # sshd reads the authorized keys as the target user: every directory must be traversable.
        self.dir.chmod(0o755)
        self.port = _free_port(self.host)
        _keygen(self.dir / "host_key")
        _keygen(self.dir / "client_key")
        self.public_host_key = _public_key_text(self.dir / "host_key.pub")
        self.private_key = (self.dir / "client_key").read_text()
        keys = self.dir / "keys"
        keys.mkdir(mode=0o755)
        authorized = keys / self.username
        authorized.write_text((self.dir / "client_key.pub").read_text())
        authorized.chmod(0o644)
        (self.dir / "sshd_config").write_text(self._config())
        self._launch()
        return self

    @property
    def running(self) -> bool:
        """Started, and neither halted nor exited since."""
        return self._process is not None and self._process.poll() is None

    def halt(self) -> None:
        """Stop sshd as when the host goes down, keeping its address, port and keys."""
        if self._process is not None:
            # unshare ignores SIGTERM; SIGKILL makes the kernel reap the whole PID namespace.
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def resume(self, *, new_host_key: bool = False) -> None:
        """Start the halted sshd again on the same address and port; with `new_host_key`, it
        offers a freshly generated host key (as after a reinstall)."""
        assert self.dir is not None, "start() the sshd first"
        self.halt()
        if new_host_key:
            for old in ("host_key", "host_key.pub"):
                (self.dir / old).unlink()
            _keygen(self.dir / "host_key")
            self.public_host_key = _public_key_text(self.dir / "host_key.pub")
        self._launch()

    def _launch(self) -> None:
        assert self.dir is not None
        config = self.dir / "sshd_config"
        log = self.dir / "sshd.log"
        with log.open("ab") as stderr:
            self._process = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--kill-child", SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        self._wait_until_listening(log)

    def authorize_key(self, public_key: str) -> None:
        """Let `username` also log in with this OpenSSH public key."""
        assert self.dir is not None, "start() the sshd first"
        with (self.dir / "keys" / self.username).open("a") as authorized:
            authorized.write(public_key.strip() + "\n")

    def stop(self) -> None:
        self.halt()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> str:
        assert self.dir is not None
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.dir / 'host_key'}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'keys'}/%u",
            "UsePAM no",
            "PasswordAuthentication yes",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UseDNS no",
        ]
        if not self.openssh_defaults:
            lines += ["MaxStartups 200:30:400", "MaxSessions 64"]
        return "\n".join(lines) + "\n"

    def _wait_until_listening(self, log: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        output = log.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"sshd did not start on {self.host}:{self.port}; its log:\n{output}")


_ready_users: dict[str, str] = {}


def _ensure_user(username: str, password: str) -> None:
    """Create the user once per test session and (re)set its password."""
    if _ready_users.get(username) == password:
        return
    # Retried: a concurrent test run may hold the lock on /etc/passwd or /etc/shadow.
    for attempt in range(20):
        try:
            pwd.getpwnam(username)
        except KeyError:
            created = subprocess.run(["useradd", "-m", "-s", "/bin/bash", username])
            if created.returncode not in (0, 9):  # 9: created meanwhile by someone else
                time.sleep(0.1 * attempt)
                continue
        changed = subprocess.run(["chpasswd"], input=f"{username}:{password}".encode())
        if changed.returncode == 0:
            _ready_users[username] = password
            return
        time.sleep(0.1 * attempt)
    raise RuntimeError(f"cannot create the test user {username!r} (is this running as root?)")


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
    )


def _public_key_text(path: Path) -> str:
    algorithm, data = path.read_text().split()[:2]
    return f"{algorithm} {data}"


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
