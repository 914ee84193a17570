"""The event log's speed: writing jobs, reading the log raw, rebuilding the read models.

    .venv/bin/python bench/eventlog.py                          # 100,000 jobs x 3 executions
    .venv/bin/python bench/eventlog.py --jobs 5000 --http-jobs 500   # a quick look

On a fresh PostgreSQL database it measures, in one run:
- the write ceiling: the library saving one new aggregate per ``save()``, in a loop, with its
  own PostgreSQL recorder (and, for comparison, with Orca's, which inserts in one round trip);
- Orca creating jobs (a job and its 3 executions in one save) through the application;
- an ``orca projector`` process catching up with that log;
- jobs created over HTTP: ``POST /api/jobs`` from concurrent clients to an ``orca api``
  process (with the projector running: each answer waits for its job to be projected);
- the read floor: a raw psycopg keyset read of the same event rows;
- ``orca rebuild --projection orca`` and ``orca rebuild`` (every projection) over the log.
and prints events/s and the ratios. Targets: rebuild >= 25% of the raw read rate; jobs over
HTTP >= 50% of the single-save rate.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from results import Figure, Results, machine

from orca.application.app import OrcaApplication
from orca.application.jobs import CreateJob, create_job
from orca.application.sealing import new_master_key
from orca.application.systems import Credentials, RegisterSystem, register_system
from orca.bootstrap import build, event_store_env, migrate
from orca.config import Settings
from orca.domain.index import NameIndex

ADMIN_URL = os.environ.get("ORCA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PROGRESS_EVERY = 5000  # jobs
PROJECTION_TIMEOUT_SECONDS = 900

SINGLE_SAVE = "library: one new aggregate per save()"
ORCA_SAVE = "Orca's recorder: one new aggregate per save()"
LIBRARY_RECORDER = "eventsourcing.postgres:PostgresApplicationRecorder"
APP_JOBS = "Orca: jobs created through the application (job + 3 executions a save)"
CATCH_UP = "Orca: orca projector catching up with the log (events/s)"
RAW_READ = "psycopg: raw keyset read of the event rows (events/s)"
REBUILD_MAIN = "Orca: orca rebuild --projection orca (events/s)"
REBUILD_ALL = "Orca: orca rebuild, every projection (events/s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs created through the app")
    parser.add_argument("--http-jobs", type=int, default=2_000, help="jobs created over HTTP")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--baseline-saves", type=int, default=3_000)
    parser.add_argument("--json", type=Path, help="also write the figures there (make bench)")
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
        log_level="warning",
    )
    migrate(settings)
    services = build(settings)
    app = services.app
    figures: dict[str, float] = {}

    # The same loop through the library's own recorder and through Orca's, in turns.
    env = event_store_env(settings, create_tables=False)
    library = OrcaApplication(
        env | {"APPLICATION_RECORDER_TOPIC": LIBRARY_RECORDER}, lambda _: None
    )
    seconds = {SINGLE_SAVE: 0.0, ORCA_SAVE: 0.0}
    turns = 3
    for turn in range(turns):
        for label, saver in ((SINGLE_SAVE, library), (ORCA_SAVE, app)):
            started = time.perf_counter()
            for i in range(args.baseline_saves // turns):
                saver.save(
                    NameIndex(kind="bench", name=f"{label}{turn}.{i}", owner_id=uuid.uuid4())
                )
            seconds[label] += time.perf_counter() - started
    library.close()
    figures |= {label: args.baseline_saves // turns * turns / s for label, s in seconds.items()}

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
        if n % PROGRESS_EVERY == 0 and n:
            rate = n / (time.perf_counter() - started)
            print(f"  created {n}/{args.jobs} jobs ({rate:,.0f}/s)", file=sys.stderr)
    figures[APP_JOBS] = args.jobs / (time.perf_counter() - started)
    services.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    env |= settings.to_env() | {"ORCA_PORT": str(18_000 + os.getpid() % 1000)}
    with orca_processes(env, "projector", "api"):
        figures[CATCH_UP] = wait_for_projection(url)
        http_label = f"Orca: jobs created over HTTP ({args.clients} clients)"
        figures[http_label] = http_jobs(settings, env["ORCA_PORT"], systems, args)
    wait_for_projection(url)  # the projector applied every HTTP job before it stopped

    checkpoint(url)
    events = raw_read(url, figures)
    checkpoint(url)
    figures[REBUILD_MAIN] = orca_rebuild(env, "--projection", "orca")
    checkpoint(url)
    figures[REBUILD_ALL] = orca_rebuild(env)
    report(figures, events, http_label, args)


@contextmanager
def orca_processes(env: dict[str, str], *commands: str) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-m", "orca.cli", c], env=env) for c in commands]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def wait_for_projection(url: str) -> float:
    """Wait until the live read models show every event; return the events/s it took."""
    with psycopg.connect(url, autocommit=True) as conn:

        def lag() -> tuple[int, int]:
            head = conn.execute("SELECT max(notification_id) FROM orca_events").fetchone()
            done = conn.execute(
                "SELECT notification_id FROM orca_tracking WHERE application_name = 'orca'"
            ).fetchone()
            return (head[0] if head else 0) or 0, (done[0] if done else 0) or 0

        head, done = lag()
        deadline = time.perf_counter() + PROJECTION_TIMEOUT_SECONDS
        first: int | None = None  # timed from its first batch on, not from its start-up
        started = time.perf_counter()
        while done < head:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the projector is stuck at {done} of {head} events")
            time.sleep(0.01)
            previous, done = done, lag()[1]
            if first is None and done > previous:
                first, started = done, time.perf_counter()
        seconds = time.perf_counter() - started
        return (done - first) / seconds if first is not None and done > first else 0.0


def http_jobs(
    settings: Settings, port: str, systems: list[uuid.UUID], args: argparse.Namespace
) -> float:
    """Jobs/s of ``args.clients`` clients each POSTing jobs, one after the other, over a
    keep-alive connection (``http.client``: the clients share the 2 cores with the server,
    and httpx would use 3x the CPU)."""
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    login = httpx.post(
        f"http://127.0.0.1:{port}/api/auth/token",
        json={"username": "admin", "password": settings.admin_password},
        trust_env=False,
        timeout=60,
    )
    assert login.status_code == 200, login.text
    headers = {
        "Authorization": f"Bearer {login.json()['access_token']}",
        "Content-Type": "application/json",
    }
    body = json.dumps({"name": "h", "command": "true", "system_ids": [str(s) for s in systems]})
    each = max(1, args.http_jobs // args.clients)

    def post(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
        try:
            for _ in range(count):
                conn.request("POST", "/api/jobs", body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                assert response.status == 201, answer
        finally:
            conn.close()

    post(10)  # warm up: connections, caches
    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(post, [each] * args.clients))
    return each * args.clients / (time.perf_counter() - started)


def checkpoint(url: str) -> None:
    """Write out what the last phase left in memory (a rebuild writes its tables twice: WAL,
    then pages), so that the next phase does not pay for it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def raw_read(url: str, figures: dict[str, float]) -> int:
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
        figures[RAW_READ] = rows / (time.perf_counter() - started)
    return rows


def orca_rebuild(env: dict[str, str], *args: str) -> float:
    """The events/s ``orca rebuild`` reports (from its start-up to its switch)."""
    done = subprocess.run(
        [sys.executable, "-m", "orca.cli", "rebuild", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    # Its rate, not its events over its seconds: those are printed to a tenth of a second.
    match = re.search(r"from \d+ events in [\d.]+ s \(([\d,]+) events/s\)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1).replace(",", ""))


def report(
    figures: dict[str, float], events: int, http_label: str, args: argparse.Namespace
) -> None:
    print()
    print(", ".join(f"{k} {v}" for k, v in machine().items()) + f"; {events:,} events in the log")
    width = max(len(k) for k in figures)
    for label, value in figures.items():
        print(f"{label:<{width}}  {value:>12,.0f}/s")
    print()
    compared = [  # figure, baseline, target ratio, what the line says
        (http_label, SINGLE_SAVE, 0.5, "jobs over HTTP / single saves"),
        (REBUILD_MAIN, RAW_READ, 0.25, "rebuild of orca / raw read"),
        (REBUILD_ALL, RAW_READ, 0.25, "rebuild of all / raw read"),
        (http_label, ORCA_SAVE, None, ""),
        (APP_JOBS, SINGLE_SAVE, None, ""),
        (CATCH_UP, RAW_READ, None, ""),
    ]
    results = Results(
        "eventlog",
        f"bench/eventlog.py --jobs {args.jobs} --http-jobs {args.http_jobs}"
        f" --clients {args.clients}",
        notes=[f"{events:,} events in the log"],
    )
    for label, baseline, target, short in compared:
        ratio = figures[label] / figures[baseline]
        met = None if target is None else ratio >= target
        results.figures.append(
            Figure(
                label, round(figures[label]), "/s", baseline, round(figures[baseline]),
                "" if target is None else f">= {target:g}x", met,
            )
        )  # fmt: skip
        if target is not None:
            verdict = "PASS" if met else "MISS"
            print(f"{short:<30} {ratio:5.2f}  (target >= {target:.2f})  {verdict}")
    results.write(args.json)


if __name__ == "__main__":
    main()
