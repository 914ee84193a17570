"""Orca as separate processes on one PostgreSQL: API, projector and several workers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from orca.application.sealing import new_master_key
from orca.config import Settings
from support.databases import fresh_database
from support.server import ApiClient, OrcaServer
from support.sshd import SshdHost

pytestmark = [pytest.mark.sshd, pytest.mark.postgres]
UNLIMITED = "1000000/minute"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the remote user can write to: commands leave their marks here."""
    path = Path(tempfile.mkdtemp(prefix="orca-runs-"))
    path.chmod(0o777)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@pytest.fixture
def cluster_settings(data_dir: Path) -> Iterator[Settings]:
    with fresh_database() as url:
        settings = Settings(
            data_dir=data_dir,
            database_url=url,
            admin_password="admin-pw-cluster",
            secret_key=new_master_key(),
            connect_timeout=10.0,  # a busy CI machine logs in slowly
            rate_limit=UNLIMITED,
            login_rate_limit=UNLIMITED,
            worker_lease_seconds=3.0,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
        env |= settings.to_env()
        subprocess.run([sys.executable, "-m", "orca.cli", "migrate"], env=env, check=True)
        yield settings


def process(settings: Settings, command: str, name: str) -> OrcaServer:
    return OrcaServer(settings, settings.data_dir / f"{name}.log", command=command).start()


def register_systems(api: ApiClient, sshd: SshdHost, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = api.post(
            "/api/systems",
            {
                "name": f"node-{i}",
                "hostname": sshd.host,
                "port": sshd.port,
                "username": sshd.username,
                "password": sshd.password,
            },
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


def wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_apis_and_two_workers_run_each_of_200_executions_exactly_once(
    cluster_settings: Settings, sshd_host: SshdHost, shared_dir: Path
) -> None:
    processes = [
        process(cluster_settings, "api", "api-1"),
        process(cluster_settings, "api", "api-2"),
        process(cluster_settings, "projector", "projector"),
        process(cluster_settings, "worker", "worker-1"),
        process(cluster_settings, "worker", "worker-2"),
    ]
    apis = [processes[0].client(), processes[1].client()]
    api = apis[0]
    try:
        systems = register_systems(api, sshd_host, 10)
        runs = shared_dir / "runs.log"
        jobs = [
            apis[n % 2]
            .post(
                "/api/jobs",
                {"name": f"job-{n}", "command": f"echo job-{n} >> {runs}", "system_ids": systems},
            )
            .json()["id"]
            for n in range(20)
        ]
        # Each API process reads what the other one wrote.
        finished = [apis[(n + 1) % 2].wait_for_job(job, timeout=120) for n, job in enumerate(jobs)]
        failures = [e for j in finished for e in j["executions"] if e["status"] != "completed"]
        assert failures == []
        lines = runs.read_text().split()
        assert len(lines) == 200
        assert all(lines.count(f"job-{n}") == 10 for n in range(20))
        executions = {e["id"] for j in finished for e in j["executions"]}
        assert len(executions) == 200
    finally:
        for client in apis:
            client.close()
        for p in processes:
            p.stop()


def test_a_killed_worker_s_execution_ends_lost_and_never_runs_twice(
    cluster_settings: Settings, sshd_host: SshdHost, shared_dir: Path
) -> None:
    api_process = process(cluster_settings, "api", "api")
    projector = process(cluster_settings, "projector", "projector")
    doomed = process(cluster_settings, "worker", "worker-doomed")
    api = api_process.client()
    survivor = None
    try:
        (system,) = register_systems(api, sshd_host, 1)
        marks = shared_dir / "once.log"
        job = api.post(
            "/api/jobs",
            {"name": "long", "command": f"echo ran >> {marks}; sleep 60", "system_ids": [system]},
        ).json()["id"]
        wait(lambda: api.get(f"/api/jobs/{job}").json()["status"] == "running", 20, "start")
        wait(marks.exists, 10, "the command to run")
        doomed.kill()
        survivor = process(cluster_settings, "worker", "worker-survivor")

        lease = cluster_settings.worker_lease_seconds
        wait(
            lambda: api.get(f"/api/jobs/{job}").json()["status"] == "failed",
            lease + 15,
            "the lost execution to be finished",
        )
        (execution,) = api.get(f"/api/jobs/{job}").json()["executions"]
        assert execution["error_message"] == "worker lost during execution"
        assert marks.read_text() == "ran\n"

        after = api.post(
            "/api/jobs", {"name": "next", "command": "whoami", "system_ids": [system]}
        ).json()["id"]
        assert api.wait_for_job(after, timeout=30)["status"] == "completed"
        time.sleep(lease)
        assert marks.read_text() == "ran\n", "the lost command ran a second time"
    finally:
        api.close()
        for p in (api_process, projector, doomed, survivor):
            if p is not None:
                p.stop()


def test_a_scheduled_job_survives_a_restart_and_runs_once(
    data_dir: Path, sshd_host: SshdHost, shared_dir: Path
) -> None:
    settings = Settings(
        data_dir=data_dir,
        admin_password="admin-pw-schedule",
        secret_key=new_master_key(),
        rate_limit=UNLIMITED,
        login_rate_limit=UNLIMITED,
    )
    server = OrcaServer(settings, data_dir / "orca.log").start()
    api = server.client()
    (system,) = register_systems(api, sshd_host, 1)
    marks = shared_dir / "scheduled.log"
    at = datetime.now(UTC) + timedelta(seconds=4)
    job = api.post(
        "/api/jobs",
        {
            "name": "later",
            "command": f"echo ran >> {marks}",
            "system_ids": [system],
            "schedule_at": at.isoformat(),
        },
    ).json()
    assert job["status"] == "pending" and job["scheduled_at"] is not None
    api.close()
    server.stop()
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 1)
    assert not marks.exists(), "nothing runs while Orca is down"

    server.start()
    api = server.client()
    try:
        finished = api.wait_for_job(job["id"], timeout=30)
        assert finished["status"] == "completed"
        started = datetime.fromisoformat(finished["executions"][0]["started_at"])
        assert started >= at
        time.sleep(2)
        assert marks.read_text() == "ran\n"
    finally:
        api.close()
        server.stop()


def test_a_standby_projector_takes_over_when_the_leader_dies(
    cluster_settings: Settings, sshd_host: SshdHost
) -> None:
    api_process = process(cluster_settings, "api", "api")
    leader = process(cluster_settings, "projector", "projector-1")
    time.sleep(1)  # the first one takes the lock
    standby = process(cluster_settings, "projector", "projector-2")
    worker = process(cluster_settings, "worker", "worker")
    api = api_process.client()
    try:
        (system,) = register_systems(api, sshd_host, 1)
        first = api.post("/api/jobs", {"name": "a", "command": "true", "system_ids": [system]})
        assert api.wait_for_job(first.json()["id"])["status"] == "completed"
        leader.kill()
        second = api.post("/api/jobs", {"name": "b", "command": "true", "system_ids": [system]})
        assert second.status_code == 201, second.text
        assert api.wait_for_job(second.json()["id"])["status"] == "completed"
        assert (
            "another projector leads" in (cluster_settings.data_dir / "projector-2.log").read_text()
        )
    finally:
        api.close()
        for p in (api_process, leader, standby, worker):
            p.stop()


def test_a_worker_runs_a_new_job_while_the_read_models_are_behind(
    cluster_settings: Settings, sshd_host: SshdHost, shared_dir: Path
) -> None:
    """Workers learn of new executions from the event log itself: a stopped projector holds
    back the read models (and the API's answer), not the commands, not even those of a job
    bigger than the worker's slots, which wait for a slot, not for the read models."""
    api_process = process(cluster_settings, "api", "api")
    projector = process(cluster_settings, "projector", "projector-1")
    worker = process(replace(cluster_settings, max_concurrency=1), "worker", "worker")
    api = api_process.client()
    try:
        systems = register_systems(api, sshd_host, 3)
        projector.stop()
        runs = shared_dir / "runs.log"
        body = {"name": "unseen", "command": f"echo ran >> {runs}", "system_ids": systems}
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(api.post, "/api/jobs", body)  # waits for the read models
            wait(
                lambda: runs.exists() and runs.read_text() == "ran\n" * 3,
                15,
                "the commands to run, one after the other",
            )
            projector = process(cluster_settings, "projector", "projector-2")
            assert answer.result().status_code in (201, 503)
        (job,) = api.get("/api/jobs").json()["jobs"]
        finished = api.wait_for_job(job["id"])
        assert [e["status"] for e in finished["executions"]] == ["completed"] * 3
        assert runs.read_text() == "ran\n" * 3  # each once
    finally:
        api.close()
        for p in (api_process, projector, worker):
            p.stop()


def test_a_session_ended_through_one_api_is_refused_by_the_other(
    cluster_settings: Settings,
) -> None:
    """Each API process remembers the sessions it checked until users or sessions change;
    the projector tells every API process when they do, so a logout holds everywhere."""
    apis = [process(cluster_settings, "api", f"api-{n}") for n in (1, 2)]
    projector = process(cluster_settings, "projector", "projector")
    admin = apis[0].client()
    try:
        token = admin.post(
            "/api/auth/token",
            {"username": "admin", "password": cluster_settings.admin_password},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def me(api: OrcaServer) -> int:
            return httpx.get(f"{api.base_url}/api/auth/me", headers=headers).status_code

        assert me(apis[1]) == 200  # api-2 has checked the session, and remembers it
        logout = httpx.post(f"{apis[0].base_url}/api/auth/logout", headers=headers)
        assert logout.status_code == 200, logout.text
        wait(lambda: me(apis[1]) == 401, 10, "api-2 to refuse the ended session")
        assert me(apis[0]) == 401
    finally:
        admin.close()
        for p in (*apis, projector):
            p.stop()
