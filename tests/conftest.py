"""Shared pytest fixtures."""

from collections.abc import Iterator

import pytest

from support.sshd import SshdHost

pytest_plugins = ["support.fixtures"]

# --- sshd fixtures (real OpenSSH server for SSH adapter tests) ---------------------------------


@pytest.fixture(scope="session")
def sshd_host() -> Iterator[SshdHost]:
    """A real sshd on 127.0.0.1 and a free port, shared by the whole session."""
    with SshdHost() as host:
        yield host


# --- end of sshd fixtures ----------------------------------------------------------------------
