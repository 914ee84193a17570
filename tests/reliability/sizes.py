"""How big the reliability runs are: a fast subset in ``make test``, the full size in
``make test-reliability`` (``ORCA_RELIABILITY=full``)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    name: str
    clients: int  # concurrent API clients of the load test
    seconds: float  # how long they keep creating jobs
    hosts: int  # OpenSSH hosts, one registered system each
    fault_clients: int  # the load each fault is injected under
    fault_seconds: float
    outage_seconds: float  # how long PostgreSQL, the projector or a worker's lease are away
    command_examples: int  # hypothesis examples of hostile command strings (each a few jobs)
    fuzz_examples: int  # schemathesis examples per route
    drain_seconds: float  # after the load stops: time for the last jobs to finish

    @property
    def title(self) -> str:
        return f"{self.name}: {self.clients} clients x {self.seconds:g} s, {self.hosts} hosts"


FAST = Size(
    name="fast",
    clients=20,
    seconds=10,
    hosts=5,
    fault_clients=8,
    fault_seconds=5,
    outage_seconds=3,
    command_examples=4,
    fuzz_examples=2,
    drain_seconds=90,
)
FULL = Size(
    name="full",
    clients=200,
    seconds=60,
    hosts=20,
    fault_clients=200,
    fault_seconds=40,
    outage_seconds=10,
    command_examples=150,
    fuzz_examples=50,
    drain_seconds=300,
)


def _chosen() -> Size:
    wanted = os.environ.get("ORCA_RELIABILITY", "fast").strip().lower() or "fast"
    sizes = {s.name: s for s in (FAST, FULL)}
    if wanted not in sizes:
        raise RuntimeError(f"ORCA_RELIABILITY must be fast or full, not {wanted!r}")
    return sizes[wanted]


SIZE = _chosen()
