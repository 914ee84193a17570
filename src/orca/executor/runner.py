"""The executor: claims due executions, runs them over SSH, records what came back.

Orca is at-most-once: an execution is claimed by saving ``Execution.Started`` (exactly
one worker wins that race), and a claimed execution is never run a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from orca.application.app import OrcaApplication
from orca.application.audit import acting
from orca.application.executions import (
    LOST_MESSAGE,
    News,
    Outcome,
    Work,
    abandon_execution,
    finish_execution,
    finish_executions,
    read_news,
    start_execution,
    start_executions,
)
from orca.application.sealing import Vault
from orca.domain.job import Execution
from orca.executor.probe import test_connection
from orca.executor.remote import Remote
from orca.projections.beacon import Beacon
from orca.projections.queries import Queries
from orca.projections.views import iso
from orca.projections.workers import Workers

log = logging.getLogger(__name__)

IDLE_RECHECK_SECONDS = 1.0
FINISH_RETRY_DELAYS = (0.2, 1.0, 3.0, 10.0, 30.0)
# An end waits this long at most for the ends of its job's other executions running here:
# a job's hosts tend to answer together, and one save of all their ends is done sooner
# than a save of the first ones and another of the rest.
ENDS_LINGER_SECONDS = 0.005
STOPPED_MESSAGE = "Orca stopped while the command was running; the command was killed"
CANCELLED_MESSAGE = "cancelled while running; the command was killed"


HEALTH_CHECKS_AT_ONCE = 4
BACKLOG_MAX = 10_000  # due executions a worker remembers while its slots are full


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    worker_id: str
    max_concurrency: int
    health_interval: float = 0.0  # seconds between connection tests of a system; 0: never


class Executor:
    def __init__(
        self,
        *,
        app: OrcaApplication,
        vault: Vault,
        queries: Queries,
        workers: Workers,
        remote: Remote,
        events: Beacon,
        settings: ExecutorSettings,
    ) -> None:
        self._app = app
        self._vault = vault
        self._queries = queries
        self._workers = workers
        self._events = events
        self._seen: int | None = None  # the log's position up to which its news were read
        # Executions learned of from the log and left pending for their schedule: (when, id).
        # A heap: they are claimed when due, whether or not a projection shows them yet.
        self._scheduled: list[tuple[datetime, str]] = []
        # Executions learned of from the log and due, left for want of a free slot: claimed
        # first when one is freed, so that they too start without waiting for a projection.
        self._backlog: OrderedDict[str, None] = OrderedDict()
        self._settings = settings
        self._remote = remote
        self._running: dict[str, asyncio.Task[None]] = {}
        # The remote command of each running execution: only it is cancelled on request.
        self._commands: dict[str, asyncio.Task[Outcome]] = {}
        self._cancelling: set[str] = set()  # cancelled on request, until their task ends
        self._unsure: set[str] = set()  # claims whose outcome the database did not tell
        # Ends of executions waiting for the next save, and the task that saves them.
        self._ends: dict[UUID, tuple[Execution, Outcome, asyncio.Future[bool]]] = {}
        self._end_arrived = asyncio.Event()
        self._saving_ends: asyncio.Task[None] | None = None
        self._job_of: dict[UUID, UUID] = {}  # the job of each execution running here

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self, stop: asyncio.Event) -> None:
        with acting(f"worker:{self._settings.worker_id}"):
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        news = asyncio.Event()

        # New events (a job saved, a cancel requested) are read from the log at once, before
        # any projection shows them. A full round also reads the read models, for what the log
        # did not tell (claims whose answer was lost, more waiting executions than the backlog
        # keeps): when a slot is freed, when a schedule is due, every IDLE_RECHECK_SECONDS.
        def wake_up() -> None:  # from the thread that moved the beacon
            loop.call_soon_threadsafe(news.set)

        undo = self._events.on_advance(wake_up)
        last_beat = 0.0
        checker = (
            asyncio.create_task(self._check_health(stop), name="health checker")
            if self._settings.health_interval > 0
            else None
        )
        full, last_full, next_at = True, 0.0, None
        try:
            while not stop.is_set():
                news.clear()
                if loop.time() - last_beat >= self._workers.heartbeat_seconds:
                    last_beat = loop.time()
                    await self._beat()
                try:
                    if full or loop.time() - last_full >= IDLE_RECHECK_SECONDS:
                        last_full = loop.time()
                        await self._honour_cancels()
                        next_at = await self._dispatch()
                    else:
                        await self._look()
                except Exception:
                    # The database is away (restart, failover): claim again once it is back.
                    # Letting this escape would end the executor while the process lives on.
                    log.warning("could not claim due executions; retrying", exc_info=True)
                    next_at = None
                if self._scheduled:
                    next_at = min(filter(None, (next_at, self._scheduled[0][0])))
                full = await self._sleep(stop, news, next_at)
        finally:
            undo()
            if checker is not None:
                checker.cancel()
                await asyncio.gather(checker, return_exceptions=True)
            await self._stop_running()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._workers.leave, self._settings.worker_id)

    async def _beat(self) -> None:
        """Renew this worker's lease, and finish the executions of workers that died."""
        try:
            await asyncio.to_thread(
                self._workers.beat,
                self._settings.worker_id,
                self._settings.max_concurrency,
                len(self._running),
            )
            for execution_id in await asyncio.to_thread(self._workers.orphans):
                if await asyncio.to_thread(abandon_execution, self._app, UUID(execution_id)):
                    log.warning("execution %s: %s", execution_id, LOST_MESSAGE)
        except Exception:
            log.warning("worker heartbeat failed", exc_info=True)

    async def _check_health(self, stop: asyncio.Event) -> None:
        """Test each active system's connection every ``health_interval`` seconds."""
        interval = self._settings.health_interval
        gate = asyncio.Semaphore(HEALTH_CHECKS_AT_ONCE)

        async def check(system_id: str) -> None:
            async with gate:
                try:
                    result = await test_connection(self._remote, self._vault, UUID(system_id))
                except Exception:
                    log.warning("health check of system %s failed", system_id, exc_info=True)
                    return
                log.info("system %s health: %s", system_id, result.success)

        while not stop.is_set():
            try:
                due = await asyncio.to_thread(
                    self._queries.systems_to_check,
                    iso(datetime.now(UTC) - timedelta(seconds=interval)),
                    100,
                )
                await asyncio.gather(*(check(s) for s in due))
            except Exception:
                log.warning("health checker failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(interval, 30.0))

    async def _honour_cancels(self) -> None:
        """Cancel the commands the read models say someone asked to stop. The log told of
        each request already (``_look``), unless the execution was not known to run here
        then: a claim whose answer was lost, found to be this worker's only afterwards."""
        if not self._running:
            return
        try:
            wanted = await asyncio.to_thread(
                self._queries.cancel_requests, self._settings.worker_id
            )
        except Exception:
            log.warning("could not read cancel requests", exc_info=True)
            return
        for execution_id in wanted:
            self._cancel(execution_id)

    def _cancel(self, execution_id: str) -> None:
        command = self._commands.get(execution_id)
        if command is not None and execution_id not in self._cancelling:
            self._cancelling.add(execution_id)
            command.cancel(msg="cancel requested")

    async def _dispatch(self) -> datetime | None:
        """Claim what is due and free slots allow; return when the next schedule is due."""
        await self._look()
        free = self._settings.max_concurrency - len(self._running)
        if free <= 0:
            return None
        due, next_at = await asyncio.to_thread(
            self._queries.due_executions, iso(datetime.now(UTC)), free + len(self._running)
        )
        wanted = [d for d in due if d not in self._running and d not in self._unsure]
        # Claims a lost answer left unsure are asked about one by one; the others in one save.
        reclaimed = await asyncio.gather(
            *map(self._reclaim, list(self._unsure)[:free]), return_exceptions=True
        )
        for failure in reclaimed:
            if failure is not None:
                raise failure
        free = self._settings.max_concurrency - len(self._running)
        if wanted[:free]:
            await self._claim(wanted[:free])
        return datetime.fromisoformat(next_at) if next_at else None

    async def _look(self) -> None:
        """Read the log's news: cancel the commands asked to stop, and claim the executions
        created since the last look and the scheduled ones now due, as free slots allow.
        Those left for want of a slot wait in the backlog (beyond ``BACKLOG_MAX``, for a full
        round to find them in the read models)."""
        news = await asyncio.to_thread(self._news)
        for asked in news.cancel_requests:
            self._cancel(str(asked))
        now = datetime.now(UTC)
        backlog = self._backlog
        for execution_id in map(str, news.created):
            backlog[execution_id] = None
        while self._scheduled and self._scheduled[0][0] <= now:
            backlog[heapq.heappop(self._scheduled)[1]] = None
        free = self._settings.max_concurrency - len(self._running)
        wanted: list[str] = []  # out of the backlog: claimed, left for later, or not pending
        while backlog and len(wanted) < free:
            execution_id = backlog.popitem(last=False)[0]
            if execution_id not in self._running:
                wanted.append(execution_id)
        while len(backlog) > BACKLOG_MAX:
            backlog.popitem(last=False)
        if wanted:
            await self._claim(wanted)

    def _news(self) -> News:
        """The log's news since the last look; at the first, none: executions already in
        the log are found by ``due_executions``, and none of them runs here yet."""
        if self._seen is None:
            self._seen = self._app.recorder.max_notification_id() or 0
            return News([], [], self._seen)
        news = read_news(self._app, self._seen)
        self._seen = news.position
        return news

    async def _claim(self, execution_ids: list[str]) -> None:
        """Claim these executions and start running those this worker won."""
        try:
            claims = await asyncio.to_thread(
                start_executions,
                self._app,
                self._vault,
                [UUID(e) for e in execution_ids],
                worker_id=self._settings.worker_id,
            )
        except Exception:
            # The claims may be stored though their answer was lost (the database went away):
            # ask again, or they would stay running, claimed by no one that runs them.
            self._unsure.update(execution_ids)
            raise
        for work in claims.works:
            self._start(work)
        for execution_id, at in claims.later.items():
            heapq.heappush(self._scheduled, (at, str(execution_id)))

    async def _reclaim(self, execution_id: str) -> None:
        work = await asyncio.to_thread(
            start_execution,
            self._app,
            self._vault,
            UUID(execution_id),
            worker_id=self._settings.worker_id,
            unsure=True,
        )
        self._unsure.discard(execution_id)
        if work is not None:
            self._start(work)

    def _start(self, work: Work) -> None:
        key = str(work.execution_id)
        task = asyncio.create_task(self._execute(work), name=f"execution {key}")
        self._running[key] = task
        self._job_of[work.execution_id] = work.job_id
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._running.items()):
            if running is task:
                del self._running[key]
                del self._job_of[UUID(key)]
                self._cancelling.discard(key)

    async def _sleep(
        self, stop: asyncio.Event, news: asyncio.Event, next_at: datetime | None
    ) -> bool:
        """Wait for a reason to look again; False if the only one is news in the log."""
        timeout = IDLE_RECHECK_SECONDS
        if next_at is not None:
            timeout = min(timeout, max(0.0, (next_at - datetime.now(UTC)).total_seconds()))
        full: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        full.extend(asyncio.shield(t) for t in self._running.values())
        fresh: asyncio.Future[object] = asyncio.ensure_future(news.wait())
        done, pending = await asyncio.wait(
            [*full, fresh], timeout=timeout, return_when="FIRST_COMPLETED"
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return done != {fresh}

    async def _execute(self, work: Work) -> None:
        log.info(
            "execution %s started on %s:%s",
            work.execution_id,
            work.connection.hostname,
            work.connection.port,
        )
        key = str(work.execution_id)
        # A request stays visible until the end it caused is projected, so it is read again
        # while that end is being recorded: it may cancel the command, never the recording.
        command = asyncio.create_task(self._run_remote(work), name=f"command {key}")
        self._commands[key] = command
        try:
            outcome = await command
        except asyncio.CancelledError:
            if key not in self._cancelling:  # Orca is stopping: the remote command is dead
                await asyncio.shield(
                    self._record(work, Outcome(status="failed", error_message=STOPPED_MESSAGE))
                )
                raise
            # A requested cancel: the remote command is dead; record it and carry on.
            outcome = Outcome(status="cancelled", error_message=CANCELLED_MESSAGE)
        finally:
            del self._commands[key]
        await self._record(work, outcome)

    async def _run_remote(self, work: Work) -> Outcome:
        result = await self._remote.run(work.connection, work.command, timeout=work.timeout_seconds)
        return Outcome(
            status=result.status,
            exit_code=result.exit_code,
            stdout=result.stdout,
            stderr=result.stderr,
            stdout_truncated=result.stdout_truncated,
            stderr_truncated=result.stderr_truncated,
            error_message=result.error_message,
        )

    async def _record(self, work: Work, outcome: Outcome) -> None:
        """Ends that arrive while a save is under way are saved together by the next one (a
        job's hosts tend to answer at once). Should that save fail, each end is saved on its
        own: finishing must not be lost to a passing database error, so retry with backoff."""
        saved = asyncio.get_running_loop().create_future()
        self._ends[work.execution_id] = (work.execution, outcome, saved)
        self._end_arrived.set()
        if self._saving_ends is None or self._saving_ends.done():
            self._saving_ends = asyncio.create_task(self._save_ends(), name="saving ends")
        if await saved:
            log.info("execution %s %s", work.execution_id, outcome.status)
            return
        for delay in (*FINISH_RETRY_DELAYS, None):
            try:
                position = await asyncio.to_thread(
                    finish_execution, self._app, work.execution_id, outcome
                )
            except Exception:
                if delay is None:
                    log.exception("could not record the end of execution %s", work.execution_id)
                    return
                log.warning("recording execution %s failed; retrying", work.execution_id)
                await asyncio.sleep(delay)
            else:
                if position is None:
                    log.warning("execution %s had ended already", work.execution_id)
                else:
                    log.info("execution %s %s", work.execution_id, outcome.status)
                return

    async def _save_ends(self) -> None:
        while self._ends:
            await self._linger()
            ends, self._ends = self._ends, {}
            try:
                await asyncio.to_thread(
                    finish_executions,
                    self._app,
                    {i: (execution, outcome) for i, (execution, outcome, _) in ends.items()},
                )
            except Exception:
                log.debug("saving %d ends together failed; saving each alone", len(ends))
                saved = False
            else:
                saved = True
            for _, _, future in ends.values():
                future.set_result(saved)

    async def _linger(self) -> None:
        """Wait, up to ``ENDS_LINGER_SECONDS``, until the other executions running here of
        the jobs whose ends wait have ended too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ENDS_LINGER_SECONDS
        jobs = {execution.job_id for execution, _, _ in self._ends.values()}
        while (left := deadline - loop.time()) > 0 and any(
            job in jobs and e not in self._ends for e, job in self._job_of.items()
        ):
            self._end_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._end_arrived.wait(), timeout=left)

    async def _stop_running(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
