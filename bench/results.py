"""What a benchmark hands to the report: each figure next to its baseline from the same run.

Every bench script takes ``--json PATH`` and writes its figures there; ``bench/report.py``
(``make bench``) runs them all and turns the files into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure; ``ratio`` is value / baseline_value, or its inverse for times
    (``lower_is_better``), so that above 1 always means "better than the baseline"."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    target: str = ""
    met: bool | None = None
    lower_is_better: bool = False

    @property
    def ratio(self) -> float:
        if self.lower_is_better:
            return self.baseline_value / self.value if self.value else 0.0
        return self.value / self.baseline_value if self.baseline_value else 0.0


@dataclass
class Results:
    bench: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)  # raw data for plots
    notes: list[str] = field(default_factory=list)

    def write(self, path: Path | None) -> None:
        if path is None:
            return
        body = {
            "bench": self.bench,
            "command": self.command,
            "machine": machine(),
            "figures": [asdict(f) | {"ratio": f.ratio} for f in self.figures],
            "series": self.series,
            "notes": self.notes,
        }
        path.write_text(json.dumps(body, indent=2) + "\n")


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = "unknown"
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_version()} ({sys.executable})",
        "load average": load,
    }
