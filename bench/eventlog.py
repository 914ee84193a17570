"""The event log's speed: writing jobs, reading the log raw, rebuilding the read models.

    .venv/bin/python bench/eventlog.py               # 100,000 jobs x 3 executions
    .venv/bin/python bench/eventlog.py --jobs 20000  # quicker

On a fresh PostgreSQL database it measures, in one run:
- the write ceiling: the library saving one new aggregate per ``save()``, in a loop;
- Orca creating jobs (a job and its 3 executions in one save) through the application,
  and through the HTTP API (``orca api`` + ``orca projector``, several clients);
- the read floor: a raw psycopg keyset read of the same event rows;
- ``orca rebuild`` over the whole log.
and prints events/s and the ratios. Targets: rebuild >= 25% of the raw read rate; jobs over
HTTP >= 50% of the single-save rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from orca.application.jobs import CreateJob, create_job
from orca.application.sealing import new_master_key
from orca.application.systems import Credentials, RegisterSystem, register_system
from orca.bootstrap import build, migrate
from orca.config import Settings
from orca.domain.index import NameIndex
from orca.projections.rebuild import rebuild

ADMIN_URL = os.environ.get("ORCA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
CHUNK = 200  # jobs saved per progress line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--http-jobs", type=int, default=2_000)
    parser.add_argument("--baseline-saves", type=int, default=3_000)
    args = parser.parse_args()
    name = f"orca_bench_log_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        run(args, url)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run(args: argparse.Namespace, url: str) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="orca-bench-"))
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        admin_password="bench-admin-pw",
        secret_key=new_master_key(),
        rate_limit="100000000/minute",
    )
    migrate(settings)
    services = build(settings)
    app = services.app
    figures: dict[str, float] = {}

    started = time.perf_counter()
    for i in range(args.baseline_saves):
        app.save(NameIndex(kind="bench", name=f"n{i}", owner_id=uuid.uuid4()))
    figures["library: one new aggregate per save()"] = args.baseline_saves / (
        time.perf_counter() - started
    )

    systems = [
        register_system(
            app,
            services.vault,
            RegisterSystem(
                name=f"bench-{i}", hostname="127.0.0.1", port=22, system_type="linux",
                username="u", credentials=Credentials(password="pw"),
            ),
            by="bench",
        ).id
        for i in range(3)
    ]  # fmt: skip
    started = time.perf_counter()
    for n in range(args.jobs):
        create_job(app, CreateJob(name=f"j{n}", command="true", system_ids=systems), by="bench")
        if n % (CHUNK * 25) == 0 and n:
            rate = n / (time.perf_counter() - started)
            print(f"  created {n}/{args.jobs} jobs ({rate:,.0f}/s)", file=sys.stderr)
    seconds = time.perf_counter() - started
    figures["Orca: jobs created through the application (job + 3 executions a save)"] = (
        args.jobs / seconds
    )
    events = app.recorder.max_notification_id() or 0
    services.close()

    figures["Orca: jobs created over HTTP (8 clients)"] = http_jobs(settings, systems, args)

    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        position, rows = 0, 0
        while True:
            batch = conn.execute(
                "SELECT notification_id, topic, state FROM orca_events"
                " WHERE notification_id > %s ORDER BY notification_id LIMIT 10000",
                (position,),
            ).fetchall()
            if not batch:
                break
            rows += len(batch)
            position = batch[-1][0]
        figures["psycopg: raw keyset read of the event rows (events/s)"] = rows / (
            time.perf_counter() - started
        )

    services = build(settings)
    started = time.perf_counter()
    applied = rebuild(services.app, settings.postgres, settings.sqlite_path, lambda *a: None)
    figures["Orca: rebuild of the read models (events/s)"] = applied / (
        time.perf_counter() - started
    )
    services.close()

    report(figures, events)


def http_jobs(settings: Settings, systems: list[uuid.UUID], args: argparse.Namespace) -> float:
    port = 18_000 + os.getpid() % 1000
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    env |= settings.to_env() | {"ORCA_PORT": str(port), "ORCA_LOG_LEVEL": "warning"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "orca.cli", cmd], env=env)
        for cmd in ("api", "projector")
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/health", trust_env=False)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        login = httpx.post(
            f"{base}/api/auth/token",
            json={"username": "admin", "password": settings.admin_password},
            trust_env=False,
            timeout=60,
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        body = {"name": "h", "command": "true", "system_ids": [str(s) for s in systems]}

        def post(count: int) -> None:
            with httpx.Client(
                base_url=base,
                headers={"Authorization": f"Bearer {token}"},
                trust_env=False,
                timeout=60,
            ) as client:
                for _ in range(count):
                    assert client.post("/api/jobs", json=body).status_code == 201

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, [args.http_jobs // 8] * 8))
        return (args.http_jobs // 8 * 8) / (time.perf_counter() - started)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


def report(figures: dict[str, float], events: int) -> None:
    print()
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()},"
          f" Python {platform.python_version()}, {events:,} events in the log")  # fmt: skip
    width = max(len(k) for k in figures)
    for label, value in figures.items():
        print(f"{label:<{width}}  {value:>12,.0f}/s")
    single = figures["library: one new aggregate per save()"]
    http = figures["Orca: jobs created over HTTP (8 clients)"]
    raw = figures["psycopg: raw keyset read of the event rows (events/s)"]
    rebuilt = figures["Orca: rebuild of the read models (events/s)"]
    print()
    print(f"jobs over HTTP / single-save rate: {http / single:.2f}  (target >= 0.50)"
          f"  {'PASS' if http / single >= 0.5 else 'MISS'}")  # fmt: skip
    print(f"rebuild / raw read rate:           {rebuilt / raw:.2f}  (target >= 0.25)"
          f"  {'PASS' if rebuilt / raw >= 0.25 else 'MISS'}")  # fmt: skip


if __name__ == "__main__":
    main()
