"""Fixtures of the reliability suite: a private PostgreSQL that tests may crash, a fleet of
OpenSSH hosts, and Orca clusters on them (their logs are printed when a test fails)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from reliability.cluster import Cluster
from reliability.sizes import SIZE
from support.postgres import PrivatePostgres
from support.sshd import SshdHost


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: the load, fault and hostile-input suite (tests/reliability)"
    )
    config.addinivalue_line(
        "markers", "full_only: too long for the fast subset; runs in make test-reliability"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast subset leaves out the full-only tests (not skipped: they are not its job)."""
    if SIZE.name != "fast":
        return
    left_out = [item for item in items if item.get_closest_marker("full_only")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("full_only")]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of the suite's own: restarting it disturbs no one else's tests."""
    with PrivatePostgres() as pg:
        yield pg


@pytest.fixture
def postgres(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """The private PostgreSQL, up (a test before may have stopped it)."""
    if not private_postgres.running:
        private_postgres.start()
    return private_postgres


@pytest.fixture(scope="session")
def fleet() -> Iterator[list[SshdHost]]:
    """``SIZE.hosts`` OpenSSH servers, each on an address of its own (127.0.1.n)."""
    hosts: list[SshdHost] = []
    try:
        for n in range(SIZE.hosts):
            hosts.append(SshdHost(f"127.0.1.{n + 1}").start())
        yield hosts
    finally:
        for host in hosts:
            host.stop()


@pytest.fixture
def hosts(fleet: list[SshdHost]) -> list[SshdHost]:
    """The fleet, every host up (a test before may have halted one)."""
    for host in fleet:
        if not host.running:
            host.resume()
    return fleet


@pytest.fixture
def make_cluster(
    request: pytest.FixtureRequest, postgres: PrivatePostgres, hosts: list[SshdHost]
) -> Iterator[Callable[..., Cluster]]:
    """Start a cluster with ``make_cluster(**options)``; it is closed after the test, and its
    logs printed if the test failed."""
    made: list[Cluster] = []

    def make(**options: Any) -> Cluster:
        cluster = Cluster(postgres, hosts, **options)
        made.append(cluster)
        return cluster.start()

    yield make
    failed = request.node.stash.get(_FAILED, True)
    for cluster in made:
        cluster.close()
        if failed:
            print(f"\n{cluster.log_tails()}")
        else:
            cluster.remove_files()
