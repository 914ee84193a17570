"""Many API clients creating and reading jobs at once, while two workers run them on the fleet:
no 5xx, no lost job, every execution finished and run exactly once, and the dashboard's
counters equal to a recount of the event log."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from reliability.checks import Report, verify
from reliability.cluster import Cluster
from reliability.load import Load
from reliability.sizes import SIZE

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.sshd]


@pytest.mark.timeout(180 + SIZE.seconds + SIZE.drain_seconds)
def test_clients_creating_and_reading_jobs_get_no_5xx_and_each_execution_runs_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    load = Load(
        cluster,
        clients=SIZE.clients,
        seconds=SIZE.seconds,
        tag="load",
        drain_seconds=SIZE.drain_seconds,
    )
    load.start().join()

    report = Report(f"load ({SIZE.name})")
    report.tried({"size": SIZE.title, "processes": ", ".join(cluster.names)} | load.figures())
    statuses = load.statuses()
    server_errors = {s: n for s, n in statuses.items() if s.isdigit() and int(s) >= 500}
    transport = {s: n for s, n in statuses.items() if not s.isdigit()}
    assert server_errors == {}, f"5xx under load: {server_errors}"
    assert transport == {}, f"connections lost under load: {transport}"
    assert load.figures()["jobs created"] >= SIZE.clients
    report.survived(verify(cluster, [load]))
