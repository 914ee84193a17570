"""Read throughput of Orca's API against two bare Starlette baselines, on the same machine.

    .venv/bin/python bench/api.py            # 10,000 jobs x 3 executions, 10 s per endpoint
    .venv/bin/python bench/api.py --quick    # 1,000 jobs, 3 s per endpoint

1. Creates a fresh PostgreSQL database, runs Orca's migrate, and loads N jobs x 3 executions
   through the application layer (create_job, start_execution, finish_execution) while a real
   ``orca projector`` process keeps the read models up to date.
2. Starts, one at a time, with the same uvicorn settings (1 worker, uvloop, httptools, no
   access log, 127.0.0.1, a free port):
   - ``orca api`` as shipped (it runs on uvloop and httptools itself);
   - baseline A, the framework ceiling: a constant ~2 KB JSON body;
   - baseline B, the naive read: 50 rows of ``jobs`` with psycopg_pool and ``JSONResponse``.
3. Loads each endpoint with wrk (50 connections, 2 threads, 2 s warm-up, then --duration s).
4. Prints requests/s, p50, p99 and the ratios to the baselines; PASS/MISS for the target
   (``GET /api/jobs?limit=50``: at least baseline B's requests/s, p99 under 50 ms). When the
   target is missed and py-spy is installed, profiles the API under load and prints hot spots.
5. Stops every process it started and drops the database, also on Ctrl-C or an error.

The same file serves the baselines (``--serve ceiling|naive``, used internally).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from types import FrameType
from typing import Any
from uuid import UUID

import psycopg
from results import Figure, Results, machine

HOST = "127.0.0.1"
ADMIN_PASSWORD = "bench-admin-password"
LIMIT = "1000000/second"  # far above what one process serves: the limiter runs, never rejects
SYSTEMS = ("web-01", "web-02", "db-01")
TARGET_RATIO = 1.0
TARGET_P99_MS = 50.0
UVICORN: dict[str, Any] = {
    "host": HOST,
    "workers": 1,
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "log_level": "warning",
}


# --- the baselines (each runs in its own process) -----------------------------------------


def serve_ceiling(port: int) -> None:
    """Baseline A: the framework ceiling, one route answering a constant ~2 KB JSON body."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    item = {"id": "6f1c2a1e-0000-4000-8000-000000000000", "name": "web-01", "status": "ok"}
    body = json.dumps({"items": [item] * 24, "total": 24}).encode()  # ~2 KB

    async def constant(request: Request) -> Response:
        return Response(body, media_type="application/json")

    uvicorn.run(Starlette(routes=[Route("/", constant)]), port=port, **UVICORN)


def serve_naive(port: int, database_url: str) -> None:
    """Baseline B: the naive read, 50 rows of ``jobs`` through a pool and ``JSONResponse``."""
    import uvicorn
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, min_size=10, max_size=10, open=False, kwargs={"row_factory": dict_row}
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    async def jobs(request: Request) -> JSONResponse:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT 50")
            rows = await cur.fetchall()
        return JSONResponse(rows)

    app = Starlette(routes=[Route("/", jobs)], lifespan=lifespan)
    uvicorn.run(app, port=port, **UVICORN)


# --- data ----------------------------------------------------------------------------------

KERNEL = "6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) x86_64 GNU/Linux"


def _journal(host: str, rng: random.Random) -> str:
    lines = [
        f"Feb 14 10:{m:02d}:{rng.randrange(60):02d} {host} app[{rng.randrange(900, 9999)}]: "
        f"GET /api/items/{rng.randrange(10**6)} 200 {rng.randrange(2, 90)}ms"
        for m in range(20)
    ]
    return "\n".join(lines) + "\n"


COMMANDS: tuple[tuple[str, str, Callable[[str, random.Random], str]], ...] = (
    ("Kernel version", "uname -a", lambda h, r: f"Linux {h} {KERNEL}\n"),
    ("Who am I", "whoami", lambda h, r: "deploy\n"),
    (
        "Disk usage",
        "df -h /",
        lambda h, r: (
            "Filesystem      Size  Used Avail Use% Mounted on\n"
            f"/dev/sda1        50G   {r.randrange(5, 45)}G   {r.randrange(5, 45)}G  "
            f"{r.randrange(10, 95)}% /\n"
        ),
    ),
    (
        "Uptime",
        "uptime",
        lambda h, r: (
            f" 10:{r.randrange(60):02d}:00 up {r.randrange(1, 400)} days,  2 users,  "
            f"load average: 0.{r.randrange(99):02d}, 0.{r.randrange(99):02d}, 0.05\n"
        ),
    ),
    (
        "Nginx status",
        "systemctl status nginx --no-pager",
        lambda h, r: (
            "* nginx.service - A high performance web server and a reverse proxy server\n"
            "     Loaded: loaded (/lib/systemd/system/nginx.service; enabled; preset: enabled)\n"
            f"     Active: active (running) since Mon 2024-02-12 08:{r.randrange(60):02d}:11 UTC\n"
            f"   Main PID: {r.randrange(900, 9999)} (nginx)\n      Tasks: 3 (limit: 4651)\n"
            "     Memory: 6.1M\n        CPU: 1.204s\n"
        ),
    ),
    ("Recent app log", "journalctl -u app -n 20 --no-pager", _journal),
)
FAILURES = (
    (1, "", "Permission denied\n"),
    (2, "", "No such file or directory\n"),
    (127, "", "bash: line 1: systemctl: command not found\n"),
)


@dataclass(frozen=True)
class LoadSlice:
    database_url: str
    secret_key: str
    data_dir: str
    system_ids: tuple[str, ...]
    start: int
    stop: int
    threads: int
    seed: int


def _load_job(services: Any, systems: list[UUID], index: int, seed: int) -> Counter[str]:
    from orca.application.audit import acting
    from orca.application.executions import Outcome, finish_execution, start_execution
    from orca.application.jobs import CreateJob, create_job
    from orca.domain.job import Execution

    rng = random.Random(seed * 1_000_003 + index)
    name, command, output = rng.choice(COMMANDS)
    by = "admin" if rng.random() < 0.7 else "ops-alice"
    app, vault = services.app, services.vault
    tally: Counter[str] = Counter()
    with acting(by):
        saved = create_job(
            app, CreateJob(name=f"{name} #{index}", command=command, system_ids=systems), by=by
        )
    tally["saves"] += 1
    fate = rng.random()
    if fate < 0.04:  # not started yet
        tally["pending"] += len(systems)
        return tally
    with acting("worker:bench/1"):
        for system_id, host in zip(systems, SYSTEMS, strict=True):
            execution_id = Execution.create_id(saved.id, system_id)
            start_execution(app, vault, execution_id, worker_id="bench/1")
            tally["saves"] += 1
            if fate < 0.08:  # still running
                tally["running"] += 1
                continue
            roll = rng.random()
            if roll < 0.82:
                outcome = Outcome(status="completed", exit_code=0, stdout=output(host, rng))
            elif roll < 0.96:
                code, out, err = rng.choice(FAILURES)
                outcome = Outcome(status="failed", exit_code=code, stdout=out, stderr=err)
            elif roll < 0.98:
                outcome = Outcome(
                    status="failed", error_message=f"cannot connect to {host}:22: timed out"
                )
            else:
                outcome = Outcome(status="timeout", error_message="timed out after 3600 s")
            finish_execution(app, execution_id, outcome)
            tally["saves"] += 1
            tally[outcome.status] += 1
    return tally


def load_slice(part: LoadSlice) -> Counter[str]:
    """Create jobs [start, stop) in this process, ``threads`` at a time."""
    from orca.bootstrap import build
    from orca.config import Settings

    settings = Settings(
        database_url=part.database_url, secret_key=part.secret_key, data_dir=Path(part.data_dir)
    )
    services = build(settings)
    systems = [UUID(s) for s in part.system_ids]
    total: Counter[str] = Counter()
    try:
        with ThreadPoolExecutor(part.threads) as pool:
            for tally in pool.map(
                lambda i: _load_job(services, systems, i, part.seed), range(part.start, part.stop)
            ):
                total.update(tally)
    finally:
        services.close()
    return total


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@dataclass
class Cleanup:
    """Everything the bench started, undone in reverse order whatever happens."""

    workdir: Path
    processes: list[Process] = field(default_factory=list)
    undo: list[Callable[[], None]] = field(default_factory=list)

    def spawn(self, name: str, cmd: Sequence[str], env: dict[str, str]) -> Process:
        log = self.workdir / f"{name.replace(' ', '-')}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # own session: a Ctrl-C reaches us, and we stop it
                list(cmd), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process = Process(name, proc, log)
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as error:  # keep cleaning up
                print(f"  could not stop {process.name} (pid {process.proc.pid}): {error}")
        self.processes.clear()
        for undo in reversed(self.undo):
            try:
                undo()
            except Exception as error:
                print(f"  cleanup step failed: {error}")
        self.undo.clear()


def http(
    url: str, *, body: dict[str, str] | None = None, token: str | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_ready(process: Process, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
        with contextlib.suppress(OSError):
            if http(url, timeout=2)[0] < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{process.name} did not answer {url} in {timeout:.0f} s:\n{process.tail()}")


def loaded_modules(pid: int) -> str:
    """Which of uvloop and httptools a process has loaded (a hint of what it runs on)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown"
    found = [name for name in ("uvloop", "httptools") if f"/{name}/" in maps]
    return "+".join(found) if found else "neither uvloop nor httptools"


# --- wrk -----------------------------------------------------------------------------------

WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_RESULT %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Result:
    server: str
    endpoint: str
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    bytes_per_response: float
    errors: int
    server_cpu_ms: float  # CPU time of the server process per request
    pg_cpu_ms: float  # CPU time of the PostgreSQL backends of the bench database per request


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class CpuMeter:
    """CPU used by the server process and by the backends connected to the bench database."""

    database_url: str

    def _backends(self) -> list[int]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return [int(r[0]) for r in rows]

    def snapshot(self, server_pid: int) -> tuple[float, dict[int, float]]:
        return cpu_seconds(server_pid), {pid: cpu_seconds(pid) for pid in self._backends()}

    def since(self, server_pid: int, before: tuple[float, dict[int, float]]) -> tuple[float, float]:
        server, backends = self.snapshot(server_pid)
        pg = sum(max(0.0, cpu - before[1].get(pid, 0.0)) for pid, cpu in backends.items())
        return server - before[0], pg


@dataclass(frozen=True)
class Wrk:
    binary: str
    connections: int
    threads: int
    duration: float
    warmup: float
    workdir: Path
    meter: CpuMeter

    def script(self, token: str | None, requests: str = "") -> Path:
        """wrk's Lua: the bearer token, an optional ``request`` function, the result line."""
        path = self.workdir / f"{'auth' if token else 'plain'}-{len(requests)}.lua"
        header = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
        path.write_text(header + requests + WRK_DONE)
        return path

    def _run(self, url: str, script: Path, seconds: float) -> list[float]:
        cmd = [
            self.binary,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        match = re.search(r"^BENCH_RESULT (.+)$", out.stdout, re.MULTILINE)
        if out.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed on {url}:\n{out.stdout}\n{out.stderr}")
        return [float(v) for v in match.group(1).split()]

    def measure(
        self, server: str, pid: int, endpoint: str, url: str, token: str | None, requests: str = ""
    ) -> Result:
        status, body = http(url, token=token)
        if status != 200:
            raise RuntimeError(f"{server} {endpoint}: HTTP {status}: {body[:300]!r}")
        script = self.script(token, requests)
        if self.warmup > 0:
            self._run(url, script, self.warmup)
        before = self.meter.snapshot(pid)
        requests, duration_us, size, p50, p99, worst, bad, errors = self._run(
            url, script, self.duration
        )
        server_cpu, pg_cpu = self.meter.since(pid, before)
        per_request = 1000 / max(1.0, requests)
        return Result(
            server=server,
            endpoint=endpoint,
            rps=requests / (duration_us / 1e6),
            p50_ms=p50 / 1000,
            p99_ms=p99 / 1000,
            max_ms=worst / 1000,
            bytes_per_response=size / max(1.0, requests),
            errors=int(bad + errors),
            server_cpu_ms=server_cpu * per_request,
            pg_cpu_ms=pg_cpu * per_request,
        )


# --- profile -------------------------------------------------------------------------------


def profile(pyspy: str, process: Process, wrk: Wrk, url: str, token: str, seconds: float) -> None:
    """Sample the API under load on ``url`` with py-spy; print where its threads spend time."""
    raw = wrk.workdir / f"profile-{process.proc.pid}.txt"
    load = subprocess.Popen(
        [
            wrk.binary,
            f"-t{wrk.threads}",
            f"-c{wrk.connections}",
            f"-d{round(seconds) + 3}s",
            "-s",
            str(wrk.script(token)),
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        cmd = [pyspy, "record", "-p", str(process.proc.pid), "-d", str(round(seconds))]
        cmd += ["-r", "200", "-f", "raw", "--function", "-o", str(raw)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        load.wait()
    if done.returncode != 0 or not raw.exists():
        print(f"  py-spy failed: {done.stderr.strip()[-500:]}")
        return
    print_profile(raw)


# A sample whose innermost frame is one of these is a thread waiting, not computing.
WAITING = {
    "Condition.wait": "worker threads idle (waiting for work)",
    "Queue.get": "worker threads idle (waiting for work)",
    "_worker": "worker threads idle (waiting for work)",
    "Connection.wait": "waiting for PostgreSQL (psycopg, GIL released)",
    "EpollSelector.select": "event loop waiting for sockets",
    "Runner.run": "uvloop native code (mostly waiting for sockets)",
}


# Frames every request passes through on its way in: they tell nothing about hot spots.
OUTER = re.compile(
    r"runpy|asyncio/(runners|base_events|events)\.py|threading\.py|orca/cli\.py|api\.py|"
    r"_backends/_asyncio\.py\)$|httptools_impl\.py|middleware/(errors|exceptions)\.py|"
    r"starlette/(applications|routing|_exception_handler)\.py"
)


def _frame(frame: str) -> tuple[str, str]:
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    return (match.group(1), match.group(2)) if match else (frame, "")


def _short(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return "/".join(parts[-2:])


def _package(path: str) -> str:
    short = _short(path)
    head = short.split("/", 1)[0]
    if "/" in short and head not in ("asyncio", "concurrent", "json", "http"):
        return head
    return "python stdlib"


def print_profile(raw: Path, *, top: int = 20) -> None:
    """Samples split into waiting and running; for running ones, the hot functions."""
    states: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = running = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        leaf, leaf_path = frames[-1]
        if leaf in WAITING:
            states[WAITING[leaf]] += count
            continue
        running += count
        states["running Python or C code"] += count
        own[f"{leaf}  ({_short(leaf_path)})"] += count
        packages[_package(leaf_path)] += count
        for key in {f"{name}  ({_short(path)})" for name, path in frames}:
            if not OUTER.search(key):
                inclusive[key] += count
    if not total:
        print("  py-spy recorded no samples")
        return
    print(f"  py-spy: {total} samples of all threads (200 Hz), by what the thread was doing:")
    for state, n in states.most_common():
        print(f"    {100 * n / total:5.1f}%  {state}")
    if not running:
        return
    print(f"  of the {running} running samples, self time by package:")
    print("    " + ", ".join(f"{p} {100 * n / running:.0f}%" for p, n in packages.most_common(10)))
    print(f"  top {top} functions by self time (% of running samples):")
    for key, n in own.most_common(top):
        print(f"    {100 * n / running:5.1f}%  {key}")
    print(f"  top {top + 5} functions by inclusive time (% of running samples, server frames out):")
    for key, n in inclusive.most_common(top + 5):
        print(f"    {100 * n / running:5.1f}%  {key}")


# --- the run -------------------------------------------------------------------------------


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("uvicorn", "starlette", "uvloop", "httptools", "psycopg", "msgspec"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} NOT INSTALLED")
    return ", ".join(found)


def orca_revision() -> str:
    """The commit of the Orca under test, and whether src/ differs from it (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}" + (" + uncommitted changes in src/" if dirty else "")


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    return env | extra


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    wrk_binary = shutil.which("wrk")
    if wrk_binary is None:
        print("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu), brew install wrk")
        return 2
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    jobs = args.jobs if args.jobs is not None else (1000 if args.quick else 10_000)
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGHUP, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="orca-bench-"))
    cleanup = Cleanup(workdir)
    cleanup.undo.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    try:
        return _run(args, cleanup, wrk_binary, pyspy, jobs, duration)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up")
        return 130
    finally:
        cleanup.close()


def _run(
    args: argparse.Namespace,
    cleanup: Cleanup,
    wrk_binary: str,
    pyspy: str | None,
    jobs: int,
    duration: float,
) -> int:
    from orca.application.audit import acting
    from orca.application.sealing import new_master_key
    from orca.application.systems import Credentials, RegisterSystem, register_system
    from orca.bootstrap import build, migrate
    from orca.config import Settings

    workdir = cleanup.workdir
    dbname = f"orca_bench_{os.getpid()}"
    server_url = args.pg.rstrip("/")
    database_url = f"{server_url}/{dbname}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as admin:
        pg_version = str(admin.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        admin.execute(f'CREATE DATABASE "{dbname}"')

    def drop_database() -> None:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        print(f"dropped database {dbname}")

    cleanup.undo.append(drop_database)

    print("== machine")
    for key, value in machine().items():
        print(f"  {key}: {value}")
    print(f"  PostgreSQL {pg_version} at {server_url}; {versions()}")
    print(f"  Orca at {orca_revision()}")
    print(f"  wrk {wrk_binary}; py-spy {pyspy or 'not installed'}")

    secret_key = new_master_key()
    settings = Settings(
        database_url=database_url,
        secret_key=secret_key,
        admin_password=ADMIN_PASSWORD,
        data_dir=workdir / "var",
    )
    orca_env = clean_env(
        {
            "ORCA_DATABASE_URL": database_url,
            "ORCA_SECRET_KEY": secret_key,
            "ORCA_DATA_DIR": str(workdir / "var"),
            "ORCA_HOST": HOST,
            "ORCA_RATE_LIMIT": LIMIT,
            "ORCA_LOGIN_RATE_LIMIT": LIMIT,
            "ORCA_LOG_LEVEL": args.orca_log_level,
        }
    )

    # 1. schema, admin, data ------------------------------------------------------------
    print(f"\n== data: database {dbname}, {jobs} jobs x {len(SYSTEMS)} executions")
    started = time.perf_counter()
    migrate(settings)
    services = build(settings)
    cleanup.undo.append(services.close)
    with acting("bench"):
        system_ids = tuple(
            str(
                register_system(
                    services.app,
                    services.vault,
                    RegisterSystem(
                        name=name,
                        hostname=f"{name}.bench.internal",
                        port=22,
                        system_type="linux",
                        username="deploy",
                        credentials=Credentials(password="bench-secret"),
                        description=f"bench system {name}",
                    ),
                    by="bench",
                ).id
            )
            for name in SYSTEMS
        )
    projector = cleanup.spawn(
        "orca projector", [sys.executable, "-m", "orca.cli", "projector"], orca_env
    )
    print(
        f"  migrated and registered {len(SYSTEMS)} systems in "
        f"{time.perf_counter() - started:.1f} s; `orca projector` (pid {projector.proc.pid}) "
        "follows the load"
    )
    tally = load(args, services, database_url, secret_key, workdir, system_ids, jobs)
    loaded = time.perf_counter() - started
    saves = tally.pop("saves", 0)
    print(
        f"  loaded {jobs} jobs in {loaded:.1f} s: {jobs / loaded:.1f} jobs/s, "
        f"{saves / loaded:.0f} application saves/s ({saves} saves)"
    )
    print("  executions: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    wait_projected(services, projector)
    projected = time.perf_counter() - started
    events = services.app.recorder.max_notification_id() or 0
    print(
        f"  read models complete after {projected:.1f} s ({projected - loaded:.1f} s after the"
        f" last save): {events} events, {events / projected:.0f} events/s end to end"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        n_jobs, n_executions = conn.execute(
            "SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM executions)"
        ).fetchone() or (0, 0)
        job_id = conn.execute(
            "SELECT id FROM jobs WHERE status = 'completed' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        conn.execute("VACUUM (ANALYZE)")
    if n_jobs != jobs or n_executions != jobs * len(SYSTEMS) or job_id is None:
        raise RuntimeError(f"read models hold {n_jobs} jobs and {n_executions} executions")
    print(f"  read models: {n_jobs} jobs, {n_executions} executions (then VACUUM ANALYZE)")

    # 2-3. servers, one at a time -------------------------------------------------------
    wrk = Wrk(
        wrk_binary,
        args.connections,
        args.threads,
        duration,
        args.warmup,
        workdir,
        CpuMeter(database_url),
    )
    print(
        f"\n== load: wrk -t{wrk.threads} -c{wrk.connections}, {wrk.warmup:g} s warm-up,"
        f" {wrk.duration:g} s measured, per endpoint"
    )
    results: list[Result] = []
    # Each page read once stays encoded until the read models move; a random offset per
    # request mostly misses that memory (it holds about 500 such pages) and reads the models.
    random_pages = (
        "request = function()\n"
        f'  return wrk.format(nil, "/api/jobs?limit=50&offset=" .. math.random(0, {jobs - 50}))\n'
        "end\n"
    )
    orca_endpoints = (
        ("GET /api/jobs?limit=50", "/api/jobs?limit=50", ""),
        ("GET /api/jobs/{id}", f"/api/jobs/{job_id[0]}", ""),
        ("GET /api/dashboard", "/api/dashboard", ""),
        ("GET /api/jobs, random page", "/api/jobs?limit=50&offset=0", random_pages),
    )
    variants = [("orca api", [sys.executable, "-m", "orca.cli", "api"])]
    token = ""
    for label, cmd in variants:
        port = free_port()
        api = cleanup.spawn(label, cmd, orca_env | {"ORCA_PORT": str(port)})
        base = f"http://{HOST}:{port}"
        wait_ready(api, f"{base}/health")
        if not token:  # a login is settled by the projector; the token serves every variant
            status, body = http(
                f"{base}/api/auth/token", body={"username": "admin", "password": ADMIN_PASSWORD}
            )
            if status != 200:
                raise RuntimeError(f"login failed: HTTP {status}: {body[:300]!r}")
            token = json.loads(body)["access_token"]
            cleanup.stop(projector)  # GETs need no projector: keep the CPUs for the API
        print(f"  {label} (pid {api.proc.pid}, {loaded_modules(api.proc.pid)} loaded)")
        for endpoint, path, requests in orca_endpoints:
            result = wrk.measure(label, api.proc.pid, endpoint, base + path, token, requests)
            results.append(result)
            print(f"    {endpoint:<28} {result.rps:9.0f} req/s  p99 {result.p99_ms:7.2f} ms")
        cleanup.stop(api)

    baselines = (
        ("A ceiling", "GET / (constant 2 KB)", ["--serve", "ceiling"]),
        ("B naive read", "GET / (50 rows, psycopg)", ["--serve", "naive", "--dsn", database_url]),
    )
    for label, endpoint, extra in baselines:
        port = free_port()
        cmd = [sys.executable, __file__, *extra, "--port", str(port)]
        server = cleanup.spawn(label, cmd, clean_env({}))
        wait_ready(server, f"http://{HOST}:{port}/")
        result = wrk.measure(label, server.proc.pid, endpoint, f"http://{HOST}:{port}/", None)
        results.append(result)
        print(
            f"  {label} (pid {server.proc.pid}, {loaded_modules(server.proc.pid)} loaded)\n"
            f"    {endpoint:<28} {result.rps:9.0f} req/s  p99 {result.p99_ms:7.2f} ms"
        )
        cleanup.stop(server)

    # 4. the table ----------------------------------------------------------------------
    missed = report(results, jobs, duration)
    print(f"  load average now {machine()['load average']}")
    summary(results, jobs, duration).write(args.json)

    if args.profile == "on" or (args.profile == "auto" and missed):
        if pyspy is None:
            print("\n(py-spy is not installed: .venv/bin/pip install py-spy, then run again)")
        else:
            for label, cmd in variants:
                port = free_port()
                api = cleanup.spawn(f"{label} profiled", cmd, orca_env | {"ORCA_PORT": str(port)})
                base = f"http://{HOST}:{port}"
                wait_ready(api, f"{base}/health")
                url = base + orca_endpoints[0][1]
                print(f"\n== profile: {label} (pid {api.proc.pid}) under load on {url}")
                profile(pyspy, api, wrk, url, token, args.profile_seconds)
                cleanup.stop(api)
    return 0


def load(
    args: argparse.Namespace,
    services: Any,
    database_url: str,
    secret_key: str,
    workdir: Path,
    system_ids: tuple[str, ...],
    jobs: int,
) -> Counter[str]:
    """Create the jobs in ``--load-procs`` processes of ``--load-threads`` threads each."""
    procs = max(1, min(args.load_procs, jobs))
    bounds = [jobs * i // procs for i in range(procs + 1)]
    parts = [
        LoadSlice(
            database_url=database_url,
            secret_key=secret_key,
            data_dir=str(workdir / "var"),
            system_ids=system_ids,
            start=bounds[i],
            stop=bounds[i + 1],
            threads=args.load_threads,
            seed=args.seed,
        )
        for i in range(procs)
    ]
    total: Counter[str] = Counter()
    # Leaving the block terminates the loaders, also on Ctrl-C, SIGTERM or an error.
    with get_context("spawn").Pool(procs) as pool:
        pending = pool.map_async(load_slice, parts)
        last = time.monotonic()
        while not pending.ready():
            pending.wait(0.5)
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                print(f"    ... {progress(services)}", flush=True)
        for tally in pending.get():
            total.update(tally)
    return total


def progress(services: Any) -> str:
    head = services.app.recorder.max_notification_id() or 0
    done = services.store.max_tracking_id(services.app.name) or 0
    return f"{head} events recorded, {done} projected ({datetime.now(UTC):%H:%M:%S})"


def wait_projected(services: Any, projector: Process, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while services.projection_lag() > 0:
        if projector.proc.poll() is not None:
            raise RuntimeError(f"orca projector exited:\n{projector.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the read models did not catch up: {progress(services)}")
        if time.monotonic() - last >= 15:
            last = time.monotonic()
            print(f"    ... {progress(services)}", flush=True)
        time.sleep(0.2)


def summary(results: list[Result], jobs: int, duration: float) -> Results:
    """The figures for ``--json``: each Orca endpoint against baseline B, and the list's p99."""
    naive = next(r for r in results if r.server == "B naive read")
    ceiling = next(r for r in results if r.server == "A ceiling")
    out = Results(
        "api",
        f"bench/api.py --jobs {jobs} --duration {duration:g}",
        notes=[f"framework ceiling (baseline A): {ceiling.rps:.0f} requests/s"],
    )
    for r in results:
        if not r.server.startswith("orca"):
            continue
        listed = r.endpoint == "GET /api/jobs?limit=50"
        out.figures.append(
            Figure(
                f"{r.endpoint}, requests/s",
                round(r.rps),
                "req/s",
                "naive 50-row read (B), requests/s",
                round(naive.rps),
                f">= {TARGET_RATIO:g}x" if listed else "",
                r.rps >= TARGET_RATIO * naive.rps if listed else None,
            )
        )
        if listed:
            out.figures.append(
                Figure(
                    f"{r.endpoint}, p99 latency",
                    round(r.p99_ms, 1),
                    "ms",
                    "naive 50-row read (B), p99",
                    round(naive.p99_ms, 1),
                    f"< {TARGET_P99_MS:g} ms",
                    r.p99_ms < TARGET_P99_MS,
                    lower_is_better=True,
                )
            )
    return out


def report(results: list[Result], jobs: int, duration: float) -> bool:
    """Print the table; return whether the target was missed by ``orca api`` as shipped."""
    by_server = {r.server: r for r in results}
    ceiling, naive = by_server.get("A ceiling"), by_server.get("B naive read")
    print(f"\n== results ({jobs} jobs, {duration:g} s per endpoint)")
    header = (
        f"  {'server':<16} {'endpoint':<28} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'max ms':>7} {'KB':>6} {'errors':>6} {'vs B':>5} {'vs A':>5}"
        f" {'srv cpu':>7} {'pg cpu':>6}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in results:
        vs_b = f"{r.rps / naive.rps:5.2f}" if naive else "    -"
        vs_a = f"{r.rps / ceiling.rps:5.2f}" if ceiling else "    -"
        print(
            f"  {r.server:<16} {r.endpoint:<28} {r.rps:7.0f} {r.p50_ms:7.1f} {r.p99_ms:7.1f}"
            f" {r.max_ms:7.1f} {r.bytes_per_response / 1000:6.1f} {r.errors:6d} {vs_b} {vs_a}"
            f" {r.server_cpu_ms:7.2f} {r.pg_cpu_ms:6.2f}"
        )
    print(
        "  (KB per response; srv cpu / pg cpu: CPU ms per request used by the server process /"
        " by the PostgreSQL backends of the bench database)"
    )
    missed = False
    print(
        f"\n  target: GET /api/jobs?limit=50 at >= {TARGET_RATIO:g}x baseline B, p99 <"
        f" {TARGET_P99_MS:g} ms"
    )
    for r in results:
        if not r.server.startswith("orca") or not r.endpoint.startswith("GET /api/jobs?"):
            continue
        ratio = r.rps / naive.rps if naive else 0.0
        ok_ratio, ok_p99 = ratio >= TARGET_RATIO, r.p99_ms < TARGET_P99_MS
        verdict = "PASS" if ok_ratio and ok_p99 else "MISS"
        cpu = r.server_cpu_ms + r.pg_cpu_ms
        cpu_ratio = (naive.server_cpu_ms + naive.pg_cpu_ms) / cpu if naive and cpu else 0.0
        print(
            f"  {verdict}  {r.server:<16} ratio {ratio:.2f} ({'ok' if ok_ratio else 'low'}),"
            f" p99 {r.p99_ms:.1f} ms ({'ok' if ok_p99 else 'high'}); by CPU per request"
            f" (server + PostgreSQL) {cpu_ratio:.2f}x baseline B"
        )
        if r.server == "orca api" and verdict == "MISS":
            missed = True
    return missed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="jobs to load (default 10000, --quick 1000)")
    parser.add_argument("--duration", type=float, help="measured seconds per endpoint (10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    parser.add_argument("--quick", action="store_true", help="1000 jobs, 3 s per endpoint")
    parser.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server URL"
    )
    parser.add_argument("--load-procs", type=int, default=2, help="loader processes (2)")
    parser.add_argument("--load-threads", type=int, default=4, help="threads per loader (4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument(
        "--orca-log-level",
        default="warning",
        help="ORCA_LOG_LEVEL of the API (warning: Orca's own access log off, like uvicorn's)",
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "on", "off"),
        default="auto",
        help="py-spy the API under load: auto = when the target is missed",
    )
    parser.add_argument("--profile-seconds", type=float, default=8.0, help="py-spy seconds (8)")
    parser.add_argument("--json", type=Path, help="also write the figures there (make bench)")
    parser.add_argument("--serve", choices=("ceiling", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve == "ceiling":
        serve_ceiling(args.port)
        return 0
    if args.serve == "naive":
        serve_naive(args.port, args.dsn)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
