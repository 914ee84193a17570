"""What must hold after any load or fault: no wrong answer, no lost job, each execution run at
most once (exactly once if it completed), and the dashboard equal to a recount of the log."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reliability.cluster import Cluster
from reliability.load import Load, Tracked

IDEMPOTENCY = "idempotency-key"
JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
EXECUTION_STATUSES = ("pending", "running", "completed", "failed", "timeout", "cancelled")
LOST = "worker lost during execution"
# May a finished execution have failed? (the job it belongs to, the execution) -> yes/no
Allowed = Callable[[Tracked, dict[str, Any]], bool]


def never(job: Tracked, execution: dict[str, Any]) -> bool:
    return False


def read_log(cluster: Cluster) -> list[dict[str, Any]]:
    """Every event, in order, through GET /api/events as an auditor reads it."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        response = cluster.call("GET", "/api/events", after=after, limit=1000)
        assert response.status_code == 200, response.text
        page = response.json()
        events += page["events"]
        if not page["events"]:
            return events
        after = page["next_after"]


@dataclass
class Recount:
    """The dashboard's numbers, counted again from the event log alone."""

    systems: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_names: Counter[str] = field(default_factory=Counter)
    keys: dict[str, str] = field(default_factory=dict)  # "user\0key" -> job id
    problems: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, events: list[dict[str, Any]]) -> Recount:
        r = cls()
        for event in events:
            r.apply(event)
        return r

    def apply(self, event: dict[str, Any]) -> None:
        kind, data, aid = event["event_type"], event["data"], event["aggregate_id"]
        at = datetime.fromisoformat(event["timestamp"])
        if kind == "orca.System.Created":
            self.systems[aid] = {"type": data["system_type"], "active": True, "health": None}
        elif kind == "orca.System.Updated" and "is_active" in data["changes"]:
            self.systems[aid]["active"] = bool(data["changes"]["is_active"])
        elif kind == "orca.System.HealthChecked":
            self.systems[aid]["health"] = data["health_status"]
        elif kind == "orca.System.Deleted":
            self.problems.append(f"system {aid} deleted: the recount does not follow deletions")
        elif kind == "orca.Job.Created":
            self.jobs[aid] = {"executions": [], "cancelled": False}
            self.job_names[data["name"]] += 1
        elif kind == "orca.Job.Cancelled":
            self.jobs[aid]["cancelled"] = True
        elif kind == "orca.Execution.Created":
            self.executions[aid] = {"status": "pending", "started": None, "finished": None}
            self.executions[aid] |= {"job": data["job_id"], "events": Counter()}
            self.jobs[data["job_id"]]["executions"].append(aid)
        elif kind.startswith("orca.Execution."):
            self._execution(kind, data, self.executions[aid], at)
        elif kind == "orca.NameIndex.Created" and data["kind"] == IDEMPOTENCY:
            if data["name"] in self.keys:
                self.problems.append(f"idempotency key {data['name']!r} indexed twice")
            self.keys[data["name"]] = data["owner_id"]
        if kind.startswith("orca.Execution.") and aid in self.executions:
            self.executions[aid]["events"][kind] += 1

    def _execution(self, kind: str, data: dict[str, Any], e: dict[str, Any], at: datetime) -> None:
        if kind == "orca.Execution.Started":
            if e["status"] != "pending":
                self.problems.append(f"execution started while {e['status']}")
            e["status"], e["started"] = "running", at
        elif kind == "orca.Execution.Finished":
            if e["status"] != "running":
                self.problems.append(f"execution finished while {e['status']}")
            e["status"], e["finished"] = data["status"], at
            e["error"] = data.get("error_message")
        elif kind == "orca.Execution.Cancelled":
            e["status"] = "cancelled"

    def job_status(self, job: dict[str, Any]) -> str:
        statuses = [self.executions[e]["status"] for e in job["executions"]]
        if job["cancelled"]:
            return "cancelled"
        if all(s not in ("pending", "running") for s in statuses):
            return "completed" if all(s == "completed" for s in statuses) else "failed"
        started = any(self.executions[e]["started"] is not None for e in job["executions"])
        return "running" if started else "pending"

    def dashboard(self) -> dict[str, Any]:
        """The numbers GET /api/dashboard shows, from the log."""
        systems = self.systems.values()
        job_statuses = Counter(self.job_status(j) for j in self.jobs.values())
        runs = Counter(e["status"] for e in self.executions.values())
        durations = [
            round((e["finished"] - e["started"]).total_seconds(), 3)
            for e in self.executions.values()
            if e["started"] is not None and e["finished"] is not None
        ]
        jobs = {"total": len(self.jobs)} | {s: job_statuses[s] for s in JOB_STATUSES}
        executions = {"total": len(self.executions)} | {s: runs[s] for s in EXECUTION_STATUSES}
        executions["average_duration"] = (
            round(sum(durations) / len(durations), 3) if durations else None
        )
        return {
            "systems": {
                "total": len(self.systems),
                "active": sum(1 for s in systems if s["active"]),
                "healthy": sum(1 for s in systems if s["health"] == "healthy"),
                "linux": sum(1 for s in systems if s["type"] == "linux"),
                "windows": sum(1 for s in systems if s["type"] == "windows"),
            },
            "jobs": jobs,
            "executions": executions,
        }


def shown_dashboard(cluster: Cluster) -> dict[str, Any]:
    response = cluster.call("GET", "/api/dashboard")
    assert response.status_code == 200, response.text
    board = response.json()
    return {part: board[part] for part in ("systems", "jobs", "executions")}


def runs_on_hosts(cluster: Cluster) -> Counter[tuple[str, str]]:
    """(key, host:port) of every command that ran, from the lines the commands appended."""
    runs: Counter[tuple[str, str]] = Counter()
    if not cluster.runs.exists():
        return runs
    for line in cluster.runs.read_text().splitlines():
        key, _client, _client_port, server, server_port = line.split()
        runs[(key, f"{server}:{server_port}")] += 1
    return runs


def verify(
    cluster: Cluster,
    loads: list[Load],
    *,
    allowed_failure: Allowed = never,
    extra_keys: Counter[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Everything that must hold once the loads are over; returns the figures it counted."""
    wrong = [w for load in loads for w in load.wrong]
    assert not wrong, f"{len(wrong)} wrong answers, the first ones:\n" + "\n".join(wrong[:30])
    health = cluster.wait_settled()
    assert health["projections"]["failed_events"] == 0, health

    jobs = [job for load in loads for job in load.jobs.values()]
    unfinished = [j.key for j in jobs if j.final is None]
    assert not unfinished, f"{len(unfinished)} jobs never seen finished: {unfinished[:20]}"

    # Each execution: completed ones ran exactly once, failed ones at most once, none twice.
    runs = runs_on_hosts(cluster)
    twice = {run: n for run, n in runs.items() if n > 1}
    assert not twice, f"commands that ran more than once: {list(twice.items())[:20]}"
    expected: set[tuple[str, str]] = set()
    failed: list[str] = []
    for job in jobs:
        assert job.final is not None
        for execution in job.final["executions"]:
            run = (job.key, cluster.system_address(execution["system_id"]))
            expected.add(run)
            if execution["status"] == "completed":
                assert runs[run] == 1, f"{run} completed but ran {runs[run]} times"
            elif allowed_failure(job, execution):
                failed.append(f"{job.key}: {execution['error_message']}")
            else:
                raise AssertionError(f"{job.key}: execution {execution['status']}: {execution}")
    strangers = set(runs) - expected - set(extra_keys or ())
    assert not strangers, f"commands ran that no client asked for: {sorted(strangers)[:20]}"

    # The log: one job per idempotency key, each execution started and finished once.
    events = read_log(cluster)
    recount = Recount.of(events)
    assert not recount.problems, recount.problems[:20]
    for job in jobs:
        assert recount.job_names[job.key] == 1, f"{job.key}: {recount.job_names[job.key]} jobs"
        assert recount.keys.get(f"{job.user}\x00{job.key}") == job.id, f"{job.key}: key -> job"
    for execution_id, e in recount.executions.items():
        finished = e["events"]["orca.Execution.Finished"] + e["events"]["orca.Execution.Cancelled"]
        assert finished == 1, f"execution {execution_id} finished {finished} times: {e}"
        assert e["events"]["orca.Execution.Started"] <= 1, f"{execution_id} started twice"

    # The dashboard's counters equal the recount.
    shown, counted = shown_dashboard(cluster), recount.dashboard()
    average = ("executions", "average_duration")
    shown_average = shown[average[0]].pop(average[1])
    counted_average = counted[average[0]].pop(average[1])
    assert shown == counted, f"dashboard {shown} != recount of the log {counted}"
    if counted_average is None:
        assert shown_average is None
    else:
        assert abs(shown_average - counted_average) <= 0.002, (shown_average, counted_average)
    return {
        "events in the log": len(events),
        "jobs in the log": len(recount.jobs),
        "executions in the log": len(recount.executions),
        "runs on the hosts": sum(runs.values()),
        "executions failed (allowed)": len(failed),
        "dashboard = recount": f"jobs {counted['jobs']}, executions {counted['executions']}",
    }


class Report:
    """Prints what a test tried and, once checked, what survived (shown by ``pytest -s`` or
    ``-rP``, and for a failing test); with ``ORCA_RELIABILITY_FIGURES=path`` the figures are
    also appended there as one JSON line per test."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.figures: dict[str, dict[str, Any]] = {}

    def tried(self, figures: dict[str, Any]) -> None:
        self._section("tried", figures)

    def survived(self, figures: dict[str, Any]) -> None:
        self._section("survived", figures)
        path = os.environ.get("ORCA_RELIABILITY_FIGURES")
        if path:
            with open(path, "a") as out:
                out.write(json.dumps({"test": self.title} | self.figures) + "\n")

    def _section(self, heading: str, figures: dict[str, Any]) -> None:
        self.figures[heading] = figures
        if heading == "tried":
            print(f"\n=== {self.title}")
        print(f"  {heading}:")
        for name, value in figures.items():
            print(f"    {name}: {value}")


def failures_of(loads: list[Load]) -> dict[str, int]:
    """Finished executions by error message, for the report."""
    messages: dict[str, int] = defaultdict(int)
    for load in loads:
        for job in load.jobs.values():
            for e in (job.final or {}).get("executions", []):
                if e["status"] != "completed":
                    messages[f"{e['status']}: {e['error_message']}"] += 1
    return dict(messages)
