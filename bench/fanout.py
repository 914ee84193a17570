"""Fan-out of ``whoami`` to N real OpenSSH hosts through Orca's API, against bare asyncssh and
ansible; then the dispatch latency of single-host jobs.

    .venv/bin/python bench/fanout.py                      # N = 10, 50, 100; 200 dispatch jobs
    .venv/bin/python bench/fanout.py --quick              # N = 10, 1 round, 40 dispatch jobs
    .venv/bin/python bench/fanout.py --sizes 10,50 --rounds 5 --no-dispatch
    .venv/bin/python bench/fanout.py --sizes 0 --dispatch-jobs 200   # the dispatch section only

1. Starts one sshd per loopback address 127.0.1.1 .. 127.0.1.(N+1) (OpenSSH's default
   MaxSessions and MaxStartups, as on production hosts), each with its own host and client key;
   the first is a spare host, kept out of the fan-outs.
2. On a fresh PostgreSQL database, registers every host with Orca (password auth, host key
   pinned at registration) and, for each N, in the same run and on the same hosts:
   - floor, cold: a bare asyncssh script connects to all N at once and runs ``whoami``;
   - floor, warm: ``whoami`` again over those already-open connections;
   - Orca, cold: a fresh ``orca serve`` (its pool empty; one job on the spare host first, so
     the process itself is warm) gets ``POST /api/jobs`` with ``whoami`` on all N; the time is
     from just before the POST to the last execution's ``completed_at``;
   - Orca, warm: the same job again, over the connections the first one left in the pool;
   - ansible ad-hoc (``-m raw -a whoami -f N``, key auth, its default ControlPersist): cold
     with fresh control sockets, then warm. ansible-core is installed into a venv of the bench's
     own (.venv/bench-ansible) on first use; without it (no network), the rows say why.
   Each figure is the median of --rounds rounds; a round's warm figure, the median of its five
   warm fan-outs.
3. Prints wall time and client CPU per host (this process's CPU time / N; Orca: the CPU time
   of the ``orca serve`` process, which is the SSH client, / N; ansible: its processes'), the
   ratios Orca / floor and PASS/MISS for the targets: cold within 1.5x of the cold floor, warm
   within 2x of the open-connection floor.
4. Dispatch latency: ``orca api``, ``orca projector`` and ``orca worker`` as separate processes
   (the production topology), then ``orca serve`` alone, get --dispatch-jobs single-host jobs
   one after the other, at random moments; the latency of each is the execution's
   ``started_at`` minus the job's ``created_at`` (both recorded by Orca: no polling in the
   figure). Prints p50, p99 and max; target: p50 under 50 ms.
5. Stops every process it started and drops the database, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncssh
import psycopg
from psycopg import sql
from results import Figure, Results, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from orca.application.sealing import new_master_key  # noqa: E402
from orca.bootstrap import migrate  # noqa: E402
from orca.config import Settings  # noqa: E402
from support.server import ApiClient, OrcaServer  # noqa: E402
from support.sshd import SshdHost  # noqa: E402

DEFAULT_SIZES = (10, 50, 100)
COLD_TARGET = 1.5
WARM_TARGET = 2.0
DISPATCH_TARGET_MS = 50.0
COMMAND = "whoami"
ADMIN_PASSWORD = "bench-admin-password"
ADMIN_URL = os.environ.get("ORCA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
ANSIBLE_VENV = ROOT / ".venv" / "bench-ansible"
JOB_TIMEOUT_SECONDS = 120


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    cpu_per_host_ms: float


@dataclass(frozen=True, slots=True)
class Result:
    cold: Sample
    warm: Sample


# --- hosts ---------------------------------------------------------------------------------------


@contextmanager
def fleet(size: int) -> Iterator[list[SshdHost]]:
    """`size` sshd hosts on 127.0.1.1 ..; all stopped on the way out, whatever happens."""
    started: list[SshdHost] = []
    lock = threading.Lock()

    def start(index: int) -> None:
        host = SshdHost(f"127.0.1.{index}", openssh_defaults=True)
        try:
            host.start()
        finally:
            with lock:
                started.append(host)

    try:
        start(1)  # creates the test user once, before the parallel starts
        with ThreadPoolExecutor(8) as starters:
            list(starters.map(start, range(2, size + 1)))
        yield sorted(started, key=lambda h: int(h.host.rsplit(".", 1)[1]))
    finally:
        with lock:
            for host in started:
                host.stop()


# --- Orca ----------------------------------------------------------------------------------------


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"orca_bench_fanout_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class Orca:
    """Orca's processes on one database, its systems, and an admin client."""

    def __init__(self, url: str, workdir: Path, concurrency: int) -> None:
        self.settings = Settings(
            data_dir=workdir / "var",
            database_url=url,
            admin_password=ADMIN_PASSWORD,
            secret_key=new_master_key(),
            max_concurrency=concurrency,
            rate_limit="100000000/minute",
            login_rate_limit="100000000/minute",
            log_level="warning",
            health_interval=86_400.0,  # no connection tests in the middle of a measurement
        )
        self.workdir = workdir
        self.systems: dict[str, str] = {}  # host address -> system id
        self.server: OrcaServer | None = None  # the one serving the API, while running
        migrate(self.settings)

    @contextmanager
    def running(self, *commands: str) -> Iterator[ApiClient]:
        """Start these ``orca`` commands (the first one serves the API); stop them after."""
        servers = [OrcaServer(self.settings, self.workdir / f"{c}.log", c) for c in commands]
        try:
            for server in reversed(servers):  # the API last: it is what start() waits for
                server.start()
            self.server = servers[0]
            api = servers[0].client("admin", ADMIN_PASSWORD)
            try:
                yield api
            finally:
                api.close()
        finally:
            for server in servers:
                server.stop()

    def register(self, api: ApiClient, hosts: list[SshdHost]) -> None:
        for host in hosts:
            if host.host in self.systems:
                continue
            response = api.post(
                "/api/systems",
                {
                    "name": f"bench-{host.host}",
                    "hostname": host.host,
                    "port": host.port,
                    "username": host.username,
                    "password": host.password,
                    "host_key": host.public_host_key,
                },
            )
            assert response.status_code == 201, response.text
            self.systems[host.host] = response.json()["id"]

    def cpu_seconds(self) -> float:
        """CPU time of the process serving the API (``orca serve``: the SSH client too)."""
        assert self.server is not None
        fields = Path(f"/proc/{self.server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def job(self, api: ApiClient, hosts: list[SshdHost], command: str = COMMAND) -> dict[str, Any]:
        """Run `command` on `hosts` as one job; return it once finished, all completed."""
        ids = [self.systems[h.host] for h in hosts]
        response = api.post("/api/jobs", {"name": "bench", "command": command, "system_ids": ids})
        assert response.status_code == 201, response.text
        job = api.wait_for_job(response.json()["id"], timeout=JOB_TIMEOUT_SECONDS)
        failed = [e for e in job["executions"] if e["status"] != "completed"]
        assert not failed, f"{len(failed)} of {len(ids)} failed: {failed[0]['error_message']}"
        return job

    def fan_out(self, api: ApiClient, hosts: list[SshdHost]) -> Sample:
        cpu, started = self.cpu_seconds(), time.time()
        job = self.job(api, hosts)
        cpu = self.cpu_seconds() - cpu
        finished = max(_epoch(e["completed_at"]) for e in job["executions"])
        return Sample(finished - started, cpu / len(hosts) * 1000)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# Jobs on the spare host before measuring: the process warm (psycopg prepares a statement at
# its fifth use; after one job the warm N = 10 fan-out took 43 ms, after eight 37 ms), the
# pool empty for the measured hosts.
WARM_UP_JOBS = 8
# Warm fan-outs a round, for the floor and for Orca: each round's warm figure is their median.
# One job of 30-40 ms is at the mercy of a passing hiccup of the machine; a median of five is not.
WARM_SAMPLES = 5
# Between two warm samples: about the time Orca's client takes to see its job finished.
WARM_PAUSE_SECONDS = 0.1


def orca_round(orca: Orca, spare: SshdHost, hosts: list[SshdHost]) -> Result:
    with orca.running("serve") as api:
        for _ in range(WARM_UP_JOBS):
            orca.job(api, [spare])
        cold = orca.fan_out(api, hosts)
        return Result(cold, middle([orca.fan_out(api, hosts) for _ in range(WARM_SAMPLES)]))


# --- the asyncssh floor --------------------------------------------------------------------------


async def measure(size: int, work: Callable[[], Awaitable[None]]) -> Sample:
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    return Sample(time.perf_counter() - wall, (time.process_time() - cpu) / size * 1000)


async def floor_connect(host: SshdHost) -> asyncssh.SSHClientConnection:
    # The options Orca's pool connects with, without Orca.
    return await asyncssh.connect(
        host.host,
        host.port,
        username=host.username,
        password=host.password,
        client_keys=None,
        known_hosts=([asyncssh.import_public_key(host.public_host_key)], [], []),
        config=None,
        agent_path=None,
        preferred_auth=["keyboard-interactive", "password"],
        encoding=None,
        connect_timeout=30,
        keepalive_interval=15,
    )


async def floor_whoami(conn: asyncssh.SSHClientConnection, username: str) -> None:
    result = await conn.run(COMMAND, check=True, encoding=None)
    assert result.stdout == f"{username}\n".encode(), result


async def floor_round(hosts: list[SshdHost]) -> Result:
    conns: list[asyncssh.SSHClientConnection] = []

    async def cold_one(host: SshdHost) -> None:
        conn = await floor_connect(host)
        conns.append(conn)
        await floor_whoami(conn, host.username)

    async def cold() -> None:
        await asyncio.gather(*(cold_one(h) for h in hosts))

    async def warm() -> None:
        await asyncio.gather(*(floor_whoami(c, hosts[0].username) for c in conns))

    async def warm_samples() -> list[Sample]:
        samples = []
        for _ in range(WARM_SAMPLES):
            await asyncio.sleep(WARM_PAUSE_SECONDS)
            samples.append(await measure(len(hosts), warm))
        return samples

    try:
        cold_sample = await measure(len(hosts), cold)
        return Result(cold_sample, middle(await warm_samples()))
    finally:
        for conn in conns:
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns))


# --- ansible -------------------------------------------------------------------------------------


class Ansible:
    def __init__(self, executable: str, hosts: list[SshdHost], workdir: Path) -> None:
        self.executable = executable
        self.size = len(hosts)
        self.workdir = workdir
        self.inventory = workdir / f"inventory-{self.size}.ini"
        lines = ["[fleet]"]
        for index, host in enumerate(hosts, 1):
            key = workdir / f"key-{host.host}"
            key.write_text(host.private_key)
            key.chmod(0o600)
            lines.append(
                f"h{index} ansible_host={host.host} ansible_port={host.port} "
                f"ansible_user={host.username} ansible_ssh_private_key_file={key}"
            )
        self.inventory.write_text("\n".join(lines) + "\n")

    def round(self) -> Result:
        # Fresh control sockets: the first run connects cold, the second reuses its masters.
        control = Path(tempfile.mkdtemp(prefix="cp-", dir=self.workdir))
        return Result(self._run(control), self._run(control))

    def _run(self, control: Path) -> Sample:
        env = {
            **os.environ,
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_HOST_KEY_CHECKING": "False",  # for ansible only, in this benchmark
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
            "ANSIBLE_SSH_COMMON_ARGS": "-o UserKnownHostsFile=/dev/null",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
        }
        command = [self.executable, "fleet", "-i", str(self.inventory), "-m", "raw"]
        command += ["-a", COMMAND, "-f", str(self.size), "-o"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        ok = done.stdout.count("rc=0")
        if ok != self.size:
            raise RuntimeError(
                f"ansible: {ok} of {self.size} hosts answered\n{done.stdout[-2000:]}"
                f"{done.stderr[-2000:]}"
            )
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return Sample(seconds, cpu / self.size * 1000)


def find_ansible(wanted: str | None) -> tuple[str | None, str]:
    """The ansible executable to use (installed into the bench's venv if need be), or None and
    why not."""
    if shutil.which("ssh") is None:
        return None, "no ssh client (apt-get install -y openssh-client)"
    if wanted:
        return (wanted, "") if os.access(wanted, os.X_OK) else (None, f"{wanted}: not executable")
    for candidate in (shutil.which("ansible"), str(ANSIBLE_VENV / "bin" / "ansible")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate, ""
    print(f"installing ansible-core into {ANSIBLE_VENV} (bench only) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "--quiet", "ansible-core"],
            check=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(ANSIBLE_VENV, ignore_errors=True)
        return None, f"ansible-core could not be installed into {ANSIBLE_VENV}: {exc}"
    return str(ANSIBLE_VENV / "bin" / "ansible"), ""


# --- dispatch latency ----------------------------------------------------------------------------


def dispatch_latencies(orca: Orca, api: ApiClient, host: SshdHost, jobs: int) -> list[float]:
    """Job created to execution running, in ms, for `jobs` single-host jobs one at a time."""
    latencies = []
    for _ in range(jobs):
        time.sleep(random.uniform(0.0, 0.2))  # at any moment of the worker's loop
        job = orca.job(api, [host], "true")
        (execution,) = job["executions"]
        latencies.append((_epoch(execution["started_at"]) - _epoch(job["created_at"])) * 1000)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def bench_dispatch(orca: Orca, host: SshdHost, jobs: int, out: Results) -> bool:
    print(f"\ndispatch latency: job created -> execution running, {jobs} single-host jobs")
    print(f"  {'topology':<40} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    passed = True
    topologies = {
        "orca api + projector + worker": ("api", "projector", "worker"),
        "orca serve": ("serve",),
    }
    for name, commands in topologies.items():
        with orca.running(*commands) as api:
            orca.job(api, [host], "true")  # every process warm
            latencies = dispatch_latencies(orca, api, host, jobs)
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        met = p50 < DISPATCH_TARGET_MS
        passed = passed and met
        print(
            f"  {name:<40} {p50:>8.1f} {p99:>8.1f} {max(latencies):>8.1f}"
            f"  {'PASS' if met else 'MISS'} (target: p50 < {DISPATCH_TARGET_MS:g} ms)"
        )
        out.figures.append(
            Figure(
                f"dispatch latency p50, {name} (PostgreSQL)",
                round(p50, 1),
                "ms",
                "target",
                DISPATCH_TARGET_MS,
                f"< {DISPATCH_TARGET_MS:g} ms",
                met,
                lower_is_better=True,
            )
        )
        out.notes.append(f"dispatch latency, {name}: p99 {p99:.1f} ms, max {max(latencies):.1f} ms")
    return passed


# --- report --------------------------------------------------------------------------------------


def middle(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.seconds for s in samples),
        statistics.median(s.cpu_per_host_ms for s in samples),
    )


def median(results: list[Result]) -> Result:
    return Result(middle([r.cold for r in results]), middle([r.warm for r in results]))


def print_header() -> None:
    print(
        f"{'N':>4}  {'contender':<16} {'cold s':>8} {'cpu/host ms':>12}"
        f" {'warm s':>8} {'cpu/host ms':>12}"
    )


def print_row(size: int, name: str, result: Result) -> None:
    print(
        f"{size:>4}  {name:<16} {result.cold.seconds:>8.3f} {result.cold.cpu_per_host_ms:>12.2f}"
        f" {result.warm.seconds:>8.3f} {result.warm.cpu_per_host_ms:>12.2f}"
    )


def print_ratios(size: int, floor: Result, orca: Result, out: Results) -> bool:
    cold = orca.cold.seconds / floor.cold.seconds
    warm = orca.warm.seconds / floor.warm.seconds
    passed = cold <= COLD_TARGET and warm <= WARM_TARGET
    print(
        f"{size:>4}  {'orca / floor':<16} {cold:>7.2f}x {'':>12} {warm:>7.2f}x {'':>12}"
        f"  {'PASS' if passed else 'MISS'}"
        f" (targets: cold <= {COLD_TARGET}x, warm <= {WARM_TARGET}x)"
    )
    for label, ours, theirs, target in (
        ("cold", orca.cold, floor.cold, COLD_TARGET),
        ("warm", orca.warm, floor.warm, WARM_TARGET),
    ):
        out.figures.append(
            Figure(
                f"N={size}, {label}: Orca job, POST to finished",
                round(ours.seconds, 3),
                "s",
                f"bare asyncssh, {label} ({'fresh' if label == 'cold' else 'open'} connections)",
                round(theirs.seconds, 3),
                f"time <= {target:g}x the baseline's (ratio >= {1 / target:.2g}x)",
                ours.seconds <= target * theirs.seconds,
                lower_is_better=True,
            )
        )
    return passed


# --- main ----------------------------------------------------------------------------------------


def bench_size(
    size: int, hosts: list[SshdHost], orca: Orca, rounds: int, ansible: Ansible | None
) -> tuple[Result, Result, Result | None]:
    spare, measured = hosts[0], hosts[1 : size + 1]
    floors: list[Result] = []
    orcas: list[Result] = []
    asyncio.run(floor_round(measured))  # warm-up: first logins of a host are slower (sshd cache)
    for _ in range(rounds):
        floors.append(asyncio.run(floor_round(measured)))
        orcas.append(orca_round(orca, spare, measured))
    ansibles = [ansible.round() for _ in range(rounds)] if ansible is not None else None
    return median(floors), median(orcas), median(ansibles) if ansibles else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="0: none")
    parser.add_argument("--quick", action="store_true", help="N = 10, 1 round, 40 dispatch jobs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ansible", help="an ansible executable (default: found or installed)")
    parser.add_argument("--no-ansible", action="store_true")
    parser.add_argument("--dispatch-jobs", type=int, default=200)
    parser.add_argument("--no-dispatch", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures there (make bench)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds, args.dispatch_jobs = "10", 1, 40
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip() and int(s) > 0})
    if sizes and max(sizes) > 250:
        parser.error("sizes must be at most 250 (one loopback address per host)")
    if os.geteuid() != 0:
        parser.error("needs root: it starts sshd as root and creates the test user")

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    ansible, why_not = (None, "--no-ansible") if args.no_ansible else find_ansible(args.ansible)
    out = Results("fanout", "bench/fanout.py " + " ".join(argv or sys.argv[1:]))
    out.series = {"n": sizes, "asyncssh floor, cold": [], "Orca, cold": []}
    out.series |= {"asyncssh floor, warm": [], "Orca, warm": [], "ansible ad-hoc, cold": []}
    print(
        f"fan-out of `{COMMAND}`; sizes {sizes}; median of {args.rounds} rounds;"
        f" {os.cpu_count()} cores; load average {machine()['load average']}"
    )
    passed = True
    try:
        with (
            fleet(max(sizes, default=0) + 1) as hosts,
            tempfile.TemporaryDirectory(prefix="orca-fanout-") as work,
            fresh_database() as url,
        ):
            orca = Orca(url, Path(work), max(sizes, default=10))
            with orca.running("serve") as api:
                orca.register(api, hosts)
            print(f"started {len(hosts)} sshd hosts, registered with Orca\n")
            if sizes:
                print_header()
            for size in sizes:
                runner = None
                if ansible is not None:
                    runner = Ansible(ansible, hosts[1 : size + 1], Path(work))
                try:
                    floor, ours, theirs = bench_size(size, hosts, orca, args.rounds, runner)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    if runner is None or not str(exc).startswith("ansible"):
                        raise
                    why_not, ansible = str(exc).splitlines()[0], None
                    floor, ours, theirs = bench_size(size, hosts, orca, args.rounds, None)
                print_row(size, "asyncssh floor", floor)
                print_row(size, "orca job", ours)
                if theirs is None:
                    print(f"{size:>4}  ansible: not available ({why_not})")
                else:
                    print_row(size, "ansible ad-hoc", theirs)
                passed = print_ratios(size, floor, ours, out) and passed
                if theirs is not None:
                    out.figures.append(
                        Figure(
                            f"N={size}, cold: Orca job, POST to finished",
                            round(ours.cold.seconds, 3),
                            "s",
                            "ansible ad-hoc, -m raw -f N (cold)",
                            round(theirs.cold.seconds, 3),
                            lower_is_better=True,
                        )
                    )
                print()
                out.series["asyncssh floor, cold"].append(floor.cold.seconds)
                out.series["asyncssh floor, warm"].append(floor.warm.seconds)
                out.series["Orca, cold"].append(ours.cold.seconds)
                out.series["Orca, warm"].append(ours.warm.seconds)
                out.series["ansible ad-hoc, cold"].append(theirs.cold.seconds if theirs else None)
            if sizes and ansible is None:
                out.notes.append(f"ansible: not available ({why_not})")
            if not args.no_dispatch and args.dispatch_jobs > 0:
                passed = bench_dispatch(orca, hosts[0], args.dispatch_jobs, out) and passed
    except KeyboardInterrupt:
        print("interrupted: every process was stopped", file=sys.stderr)
        return 130
    print(f"\nload average after: {machine()['load average']}")
    out.write(args.json)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
