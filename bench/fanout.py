"""Fan-out of ``whoami`` to N real OpenSSH hosts: Orca's SSH adapter against bare asyncssh.

    .venv/bin/python bench/fanout.py                   # N = 10, 50, 100
    .venv/bin/python bench/fanout.py --quick           # N = 10
    .venv/bin/python bench/fanout.py --sizes 10,50 --rounds 5 --ansible /tmp/ansible/bin/ansible

1. Starts one sshd per loopback address 127.0.1.1 .. 127.0.1.N (OpenSSH's default MaxSessions
   and MaxStartups, as on production hosts), each with its own host key and client key.
2. For each N, in the same run and on the same hosts, with pinned host keys and password auth:
   - floor, cold: a bare asyncssh script connects to all N at once and runs ``whoami``;
   - floor, warm: ``whoami`` again over those already-open connections;
   - Orca, cold: ``orca.executor.ssh.run_command`` on all N at once, the pool empty;
   - Orca, warm: the same with the pool filled by the previous round;
   - ansible ad-hoc (``-m raw -a whoami -f N``, key auth, its default ControlPersist), when an
     ``ansible`` executable is found: cold (fresh control sockets), then warm.
   Each figure is the median of --rounds rounds; cold rounds close every connection first.
3. Prints wall time and client CPU per host (this process's CPU time / N; ansible: its child
   processes'), the ratios Orca/floor and PASS/MISS for the targets (cold within 1.5x of the
   cold floor, warm within 2x of the open-connection floor).
4. Stops every sshd it started, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from pathlib import Path
from types import FrameType

import asyncssh

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from orca.executor.ssh import SshLimits, SshTarget, close_pool, run_command  # noqa: E402
from support.sshd import SshdHost  # noqa: E402

DEFAULT_SIZES = (10, 50, 100)
COLD_TARGET = 1.5
WARM_TARGET = 2.0
COMMAND = "whoami"


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


def target_of(host: SshdHost) -> SshTarget:
    return SshTarget(
        host.host,
        host.port,
        host.username,
        password=host.password,
        host_key=host.public_host_key,
    )


# --- contenders ----------------------------------------------------------------------------------


async def measure(size: int, work: Callable[[], Awaitable[None]]) -> Sample:
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    return Sample(time.perf_counter() - wall, (time.process_time() - cpu) / size * 1000)


async def floor_connect(host: SshdHost) -> asyncssh.SSHClientConnection:
    # The same connection options as Orca's adapter, without the adapter.
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

    try:
        return Result(await measure(len(hosts), cold), await measure(len(hosts), warm))
    finally:
        for conn in conns:
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns))


async def orca_round(hosts: list[SshdHost]) -> Result:
    targets = [target_of(h) for h in hosts]
    limits = SshLimits()

    async def fan_out() -> None:
        outcomes = await asyncio.gather(
            *(run_command(t, COMMAND, timeout=30, limits=limits) for t in targets)
        )
        failed = [o for o in outcomes if o.status != "completed"]
        assert not failed, f"{len(failed)} of {len(outcomes)} failed: {failed[0].error_message}"

    await close_pool()  # cold: no connection left from an earlier round
    try:
        return Result(await measure(len(hosts), fan_out), await measure(len(hosts), fan_out))
    finally:
        await close_pool()


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
    """The ansible executable to use, or None and why not."""
    candidates = (
        [wanted]
        if wanted
        else [shutil.which("ansible"), str(Path(sys.executable).parent / "ansible")]
    )
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            if shutil.which("ssh") is None:
                return None, "no ssh client (apt-get install -y openssh-client)"
            return candidate, ""
    if wanted:
        return None, f"{wanted} is not an executable"
    return None, "no ansible executable (pip install ansible-core into a venv; --ansible PATH)"


# --- report --------------------------------------------------------------------------------------


def median(results: list[Result]) -> Result:
    def mid(samples: list[Sample]) -> Sample:
        return Sample(
            statistics.median(s.seconds for s in samples),
            statistics.median(s.cpu_per_host_ms for s in samples),
        )

    return Result(mid([r.cold for r in results]), mid([r.warm for r in results]))


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


def print_ratios(size: int, floor: Result, orca: Result) -> bool:
    cold = orca.cold.seconds / floor.cold.seconds
    warm = orca.warm.seconds / floor.warm.seconds
    passed = cold <= COLD_TARGET and warm <= WARM_TARGET
    print(
        f"{size:>4}  {'orca / floor':<16} {cold:>7.2f}x {'':>12} {warm:>7.2f}x {'':>12}"
        f"  {'PASS' if passed else 'MISS'}"
        f" (targets: cold <= {COLD_TARGET}x, warm <= {WARM_TARGET}x)"
    )
    return passed


# --- main ----------------------------------------------------------------------------------------


async def bench_size(hosts: list[SshdHost], rounds: int) -> tuple[Result, Result]:
    floors: list[Result] = []
    orcas: list[Result] = []
    await floor_round(hosts)  # warm-up: first logins of a host are slower (sshd page cache)
    for _ in range(rounds):
        floors.append(await floor_round(hosts))
        orcas.append(await orca_round(hosts))
    return median(floors), median(orcas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--quick", action="store_true", help="N = 10 only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ansible", help="path of an ansible executable (default: on PATH)")
    args = parser.parse_args(argv)
    sizes = [10] if args.quick else sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not 1 <= max(sizes) <= 254:
        parser.error("sizes must be between 1 and 254 (one loopback address per host)")
    if os.geteuid() != 0:
        parser.error("needs root: it starts sshd as root and creates the test user")

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    ansible, why_not = find_ansible(args.ansible)
    print(
        f"fan-out of `{COMMAND}`; sizes {sizes}; median of {args.rounds} rounds;"
        f" {os.cpu_count()} cores"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    passed = True
    try:
        with fleet(max(sizes)) as hosts, tempfile.TemporaryDirectory(prefix="orca-fanout-") as work:
            print(f"started {len(hosts)} sshd hosts\n")
            print_header()
            for size in sizes:
                floor, orca = asyncio.run(bench_size(hosts[:size], args.rounds))
                print_row(size, "asyncssh floor", floor)
                print_row(size, "orca run_command", orca)
                if ansible is None:
                    print(f"{size:>4}  ansible: not available ({why_not})")
                else:
                    try:
                        runner = Ansible(ansible, hosts[:size], Path(work))
                        print_row(
                            size,
                            "ansible ad-hoc",
                            median([runner.round() for _ in range(args.rounds)]),
                        )
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                        print(f"{size:>4}  ansible: not available ({str(exc).splitlines()[0]})")
                passed = print_ratios(size, floor, orca) and passed
                print()
    except KeyboardInterrupt:
        print("interrupted: every sshd was stopped", file=sys.stderr)
        return 130
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
