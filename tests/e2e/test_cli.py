"""The orca command as an operator meets it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
