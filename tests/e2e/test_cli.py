"""The orca command as an operator meets it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from orca.config import Settings
from support.server import ApiClient, OrcaServer


def orca(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orca.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_first_start_without_a_password_prints_a_generated_one_once(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    env["ORCA_DATA_DIR"] = str(data_dir)
    first = orca("migrate", env=env)
    assert first.returncode == 0, first.stderr
    match = re.search(r"generated password.*?\n\s*\n\s+(\S+)\n", first.stdout, re.S)
    assert match, first.stdout
    password = match.group(1)
    assert (data_dir / "secret.key").stat().st_mode & 0o777 == 0o600

    again = orca("migrate", env=env)
    assert again.returncode == 0 and password not in again.stdout

    with OrcaServer(Settings(data_dir=data_dir), data_dir / "orca.log") as server:
        ApiClient(server.base_url, "admin", password).close()


def test_a_bad_setting_is_a_loud_error(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    env |= {"ORCA_DATA_DIR": str(data_dir), "ORCA_PORT": "eighty"}
    result = orca("migrate", env=env)
    assert result.returncode == 2
    assert "ORCA_PORT" in result.stderr


def test_users_are_managed_from_the_command_line(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    env |= {"ORCA_DATA_DIR": str(data_dir), "ORCA_ADMIN_PASSWORD": "admin-password-1"}

    def users(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orca.cli", "users", *args],
            env=env,
            input=password,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert users("add", "carol", "--role", "operator", "--password-stdin", password="carol-pw-1\n")
    assert users("add", "carol", "--password-stdin", password="carol-pw-1\n").returncode == 1
    short = users("passwd", "carol", "--password-stdin", password="short\n")
    assert short.returncode == 1 and "password must be at least 8" in short.stderr
    listed = users("list").stdout.split("\n")
    assert any(line.split() == ["carol", "operator", "active"] for line in listed), listed

    with OrcaServer(Settings(data_dir=data_dir), data_dir / "orca.log") as server:
        carol = ApiClient(server.base_url, "carol", "carol-pw-1")
        assert carol.get("/api/auth/me").json()["roles"] == ["operator"]
        assert users("set-role", "carol", "viewer").returncode == 0
        # Her session ended with the role change (the server learns of the CLI's write
        # within its one-second re-check on SQLite); a new login shows the new role.
        deadline = time.monotonic() + 5
        while carol.get("/api/auth/me").status_code != 401:
            assert time.monotonic() < deadline, "the role change did not end the session"
            time.sleep(0.1)
        carol.close()
        again = ApiClient(server.base_url, "carol", "carol-pw-1")
        assert again.get("/api/auth/me").json()["roles"] == ["viewer"]
        again.close()
        assert users("disable", "carol").returncode == 0
        refused = httpx.post(
            f"{server.base_url}/api/auth/token",
            json={"username": "carol", "password": "carol-pw-1"},
            trust_env=False,
        )
        assert refused.status_code == 401
