"""Concurrent API clients that behave like demanding users, and check every answer they get.

Each client, until the load's time is up: creates a job (a unique key, one to three systems,
a command that leaves a line in the runs log and prints the key), follows it until it is
finished, and now and then lists jobs or reads the dashboard. A 503 or a lost connection is
retried (a create with the same ``Idempotency-Key``; a lost connection on the other API
process, as a load balancer would). Whatever else is not what the contract promises is a
*wrong answer*: a 500, an unexpected 4xx, a body that does not match the request, a job that
goes back in status, a completed execution without the key in its stdout.
"""

from __future__ import annotations

import asyncio
import random
import shlex
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from reliability.cluster import Cluster

RANK = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2, "timeout": 2}
FINISHED = {"completed", "failed", "cancelled"}
EXECUTION_STATUSES = set(RANK)
POLL_SECONDS = 0.5
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)
REQUEST_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
KEEPALIVE_SECONDS = 2.0


@dataclass
class Tracked:
    """A job one client asked for, and what it saw of it."""

    key: str
    user: str
    system_ids: list[str]
    command: str
    created_at: float  # seconds after the load started
    id: str | None = None
    statuses: list[str] = field(default_factory=list)
    final: dict[str, Any] | None = None


@dataclass(frozen=True)
class Answer:
    kind: str  # create, get, list, dashboard
    status: int | str  # an HTTP status, or the name of the transport error
    at: float  # seconds after the load started
    seconds: float


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Load:
    def __init__(
        self,
        cluster: Cluster,
        *,
        clients: int,
        seconds: float,
        tag: str,
        system_ids: list[str] | None = None,
        drain_seconds: float = 120,
    ) -> None:
        self.cluster = cluster
        self.clients = clients
        self.seconds = seconds
        self.tag = tag
        self.system_ids = system_ids or list(cluster.systems)
        self.drain_seconds = drain_seconds
        self.jobs: dict[str, Tracked] = {}
        self.answers: list[Answer] = []
        self.wrong: list[str] = []
        self.retries: Counter[str] = Counter()
        self.failovers = 0
        self.events: list[tuple[float, str]] = []  # what the test did, and when
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._http: list[httpx.AsyncClient] = []

    # --- the test's side ------------------------------------------------------------------------

    def start(self) -> Load:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"load {self.tag}", daemon=True)
        self._thread.start()
        return self

    def now(self) -> float:
        return time.monotonic() - self._t0

    def mark(self, what: str) -> float:
        """Note a fault in the load's time line; returns its time."""
        at = self.now()
        self.events.append((at, what))
        return at

    def sleep_until(self, at: float) -> None:
        time.sleep(max(0.0, at - self.now()))

    def join(self) -> Load:
        assert self._thread is not None, "start() the load first"
        self._thread.join(timeout=self.seconds + self.drain_seconds + 120)
        assert not self._thread.is_alive(), "the load's clients did not finish"
        return self

    # --- the clients ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as error:  # a broken client must fail the test, never hide
            self.wrong.append(f"the load itself failed: {error!r}")

    async def _main(self) -> None:
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends: else a request
        # may go out on a connection the server is closing at that moment.
        limits = httpx.Limits(
            max_connections=self.clients + 10,
            max_keepalive_connections=None,
            keepalive_expiry=KEEPALIVE_SECONDS,
        )
        self._http = [
            httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits, trust_env=False)
            for url in self.cluster.api_urls
        ]
        try:
            results = await asyncio.gather(
                *(self._client(n) for n in range(self.clients)), return_exceptions=True
            )
        finally:
            for http in self._http:
                await http.aclose()
        for n, result in enumerate(results):
            if isinstance(result, BaseException):
                self.wrong.append(f"client {n} crashed: {result!r}")

    async def _client(self, n: int) -> None:
        rng = random.Random(f"{self.tag}-{n}")
        users = sorted(self.cluster.tokens)
        user = users[n % len(users)]
        session = _Session(self, n % len(self._http), self.cluster.tokens[user])
        await asyncio.sleep(rng.random() * min(1.0, self.seconds / 10))  # not all at once
        i = 0
        while self.now() < self.seconds:
            i += 1
            key = f"{self.tag}-{n}-{i}"
            spread = min(len(self.system_ids), rng.choice((1, 1, 2, 3)))
            system_ids = rng.sample(self.system_ids, k=spread)
            runs = shlex.quote(str(self.cluster.runs))
            command = f"printf '%s %s\\n' {key} \"$SSH_CONNECTION\" >> {runs}; printf '%s\\n' {key}"
            job = self.jobs[key] = Tracked(key, user, system_ids, command, self.now())
            if await self._create(session, job):
                await self._follow(session, job, rng)
            if rng.random() < 0.5:
                await self._list(session, rng)
            if rng.random() < 0.5:
                await self._dashboard(session)

    def _deadline(self) -> float:
        return self.seconds + self.drain_seconds

    def _wrong(self, text: str) -> None:
        self.wrong.append(f"{self.now():7.2f}s {text}")

    async def _create(self, session: _Session, job: Tracked) -> bool:
        body = {"name": job.key, "command": job.command, "system_ids": job.system_ids}
        response = await session.request(
            "create", "POST", "/api/jobs", json=body, headers={"Idempotency-Key": job.key}
        )
        if response is None:
            self._wrong(f"create {job.key}: gave up retrying")
            return False
        if response.status_code != 201:
            self._wrong(f"create {job.key}: {response.status_code} {response.text[:300]}")
            return False
        created = response.json()
        job.id = created.get("id")
        self._check_job(job, created, "create")
        return job.id is not None

    async def _follow(self, session: _Session, job: Tracked, rng: random.Random) -> None:
        while True:
            response = await session.request("get", "GET", f"/api/jobs/{job.id}")
            if response is None:
                self._wrong(f"get {job.key}: gave up retrying")
                return
            if response.status_code != 200:
                self._wrong(f"get {job.key}: {response.status_code} {response.text[:300]}")
                return
            seen = response.json()
            self._check_job(job, seen, "get")
            if seen.get("status") in FINISHED:
                job.final = seen
                return
            if self.now() > self._deadline():
                self._wrong(f"job {job.key} ({job.id}) still {seen.get('status')} at the end")
                return
            await asyncio.sleep(POLL_SECONDS * (0.5 + rng.random()))

    def _check_job(self, job: Tracked, seen: dict[str, Any], how: str) -> None:
        problems = []
        if seen.get("id") != job.id:
            problems.append(f"id {seen.get('id')} is not {job.id}")
        if seen.get("name") != job.key or seen.get("command") != job.command:
            problems.append("name or command differ from the request")
        executions = seen.get("executions") or []
        if sorted(e.get("system_id") for e in executions) != sorted(job.system_ids):
            problems.append(f"executions on {[e.get('system_id') for e in executions]}")
        status = seen.get("status")
        if status not in RANK:
            problems.append(f"status {status!r}")
        elif job.statuses and RANK[status] < RANK[job.statuses[-1]]:
            problems.append(f"status went back from {job.statuses[-1]} to {status}")
        elif job.statuses and job.statuses[-1] in FINISHED and job.statuses[-1] != status:
            problems.append(f"finished status changed from {job.statuses[-1]} to {status}")
        for e in executions:
            if e.get("status") not in EXECUTION_STATUSES:
                problems.append(f"execution status {e.get('status')!r}")
            if e.get("status") == "completed" and (
                e.get("stdout") != f"{job.key}\n" or e.get("exit_code") != 0
            ):
                problems.append(f"completed with exit {e.get('exit_code')}, {e.get('stdout')!r}")
        if status == "completed" and any(e.get("status") != "completed" for e in executions):
            problems.append("job completed before all its executions")
        if status in RANK:
            job.statuses.append(status)
        if problems:
            self._wrong(f"{how} {job.key}: " + "; ".join(problems))

    async def _list(self, session: _Session, rng: random.Random) -> None:
        limit = rng.choice((10, 20, 50))
        response = await session.request(
            "list", "GET", "/api/jobs", params={"limit": limit, "offset": rng.randrange(0, 40)}
        )
        if response is None or response.status_code != 200:
            self._wrong(f"list: {_said(response)}")
            return
        page = response.json()
        jobs, total = page.get("jobs", []), page.get("total", -1)
        if len(jobs) > limit or page.get("limit") != limit or total < len(jobs):
            self._wrong(f"list: {len(jobs)} jobs, limit {page.get('limit')}, total {total}")
        statuses = [j.get("status") for j in jobs]
        if any(s not in RANK for s in statuses):
            self._wrong(f"list: a job status outside the contract: {statuses}")

    async def _dashboard(self, session: _Session) -> None:
        response = await session.request("dashboard", "GET", "/api/dashboard")
        if response is None or response.status_code != 200:
            self._wrong(f"dashboard: {_said(response)}")
            return
        board = response.json()
        for part, statuses in (
            ("jobs", ("pending", "running", "completed", "failed", "cancelled")),
            ("executions", ("pending", "running", "completed", "failed", "timeout", "cancelled")),
        ):
            counts = board.get(part, {})
            values = [counts.get(s, -1) for s in statuses]
            if min(values) < 0 or sum(values) != counts.get("total"):
                self._wrong(f"dashboard {part}: {counts} do not add up")

    # --- figures ---------------------------------------------------------------------------------

    def statuses(self) -> Counter[str]:
        return Counter(str(a.status) for a in self.answers)

    def latencies(self, kind: str | None = None) -> tuple[float, float, float]:
        """p50, p99 and max in milliseconds (of every attempt, failed ones too)."""
        values = [a.seconds * 1000 for a in self.answers if kind is None or a.kind == kind]
        return percentile(values, 0.5), percentile(values, 0.99), max(values, default=0.0)

    def figures(self) -> dict[str, Any]:
        kinds = Counter(a.kind for a in self.answers)
        executions = sum(len(j.system_ids) for j in self.jobs.values() if j.id)
        spent = max((a.at + a.seconds for a in self.answers), default=0.0)
        figures: dict[str, Any] = {
            "clients": self.clients,
            "load seconds": self.seconds,
            "requests": len(self.answers),
            "requests/s": round(len(self.answers) / spent, 1) if spent else 0.0,
            "by kind": dict(kinds),
            "statuses": dict(sorted(self.statuses().items())),
            "jobs created": sum(1 for j in self.jobs.values() if j.id),
            "executions": executions,
            "retries": dict(self.retries),
            "failovers": self.failovers,
        }
        for kind in ("create", "get", "list", "dashboard", None):
            p50, p99, worst = self.latencies(kind)
            figures[f"latency {kind or 'all'} p50/p99/max ms"] = (
                f"{p50:.0f} / {p99:.0f} / {worst:.0f}"
            )
        return figures


class _Session:
    """One client's connection to the API: its token, the API process it sticks to, and the
    retry rules of a demanding user."""

    def __init__(self, load: Load, api: int, token: str) -> None:
        self.load = load
        self.api = api
        self.headers = {"Authorization": f"Bearer {token}"}

    async def request(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """The first answer that is not a 503 or a lost connection; None past the deadline."""
        load = self.load
        attempt = 0
        while True:
            http = load._http[self.api]
            sent = load.now()
            try:
                response = await http.request(
                    method, path, json=json, params=params, headers=self.headers | (headers or {})
                )
            except httpx.TransportError as error:
                load.answers.append(Answer(kind, type(error).__name__, sent, load.now() - sent))
                load.retries[f"{kind} after {type(error).__name__}"] += 1
                self.api = (self.api + 1) % len(load._http)  # as a load balancer would
                load.failovers += 1
            else:
                load.answers.append(Answer(kind, response.status_code, sent, load.now() - sent))
                if response.status_code != 503:
                    if response.status_code >= 500:
                        load._wrong(f"{kind} {path}: {response.status_code} {response.text[:300]}")
                    return response
                _check_unavailable(load, kind, response)
                load.retries[f"{kind} after 503"] += 1
            if load.now() > load._deadline():
                return None
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1


def _said(response: httpx.Response | None) -> str:
    return "no answer" if response is None else f"{response.status_code} {response.text[:300]}"


def _check_unavailable(load: Load, kind: str, response: httpx.Response) -> None:
    """A 503 must say what is wrong, in the one error shape, and when to come back."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if body.get("error_type") != "ServiceUnavailable" or not body.get("detail"):
        load._wrong(f"{kind}: a 503 without a clear error: {response.text[:300]}")
