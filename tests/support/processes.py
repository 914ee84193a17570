"""Processes the test sshd runs: its commands run on this machine, so pgrep sees them."""

from __future__ import annotations

import subprocess
import time


def remote_processes(user: str, pattern: str) -> list[str]:
    """Pids of `user`'s processes whose command line matches `pattern`."""
    found = subprocess.run(["pgrep", "-u", user, "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()


def wait_until_gone(user: str, pattern: str, within: float = 5.0) -> list[str]:
    """Wait for `user`'s processes matching `pattern` to end; return those still left."""
    deadline = time.monotonic() + within
    while (left := remote_processes(user, pattern)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
