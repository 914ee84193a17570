"""`make bench`: run every benchmark, then write docs/benchmarks.md and the fan-out plot.

    .venv/bin/python bench/report.py                 # all of them, about 10 minutes on 2 cores
    .venv/bin/python bench/report.py --only api      # one of them (the others' rows are kept)

Each benchmark runs as its own process with ``--json``; its full output is kept next to the
report (docs/bench-logs/NAME.txt), and its figures become rows of the report: the figure, the
baseline measured in the same run, the ratio (above 1 is better than the baseline) and the
target. Sizes are chosen so that the whole report takes about 10 minutes; each bench script
documents its full-size run (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REPORT = DOCS / "benchmarks.md"
PLOT = DOCS / "fanout.png"
DATA = DOCS / "benchmarks.json"  # the last figures of each bench, so --only keeps the others

JSON_OPTION = re.compile(r" --json \S+")  # where a bench wrote its figures: a temporary file
BENCHES: dict[str, list[str]] = {
    "fanout": ["bench/fanout.py", "--sizes", "10,50,100"],
    "api": ["bench/api.py", "--jobs", "3000", "--duration", "5", "--profile", "off"],
    "eventlog": ["bench/eventlog.py"],  # the size: 100,000 jobs
}


def run(name: str, workdir: Path) -> dict[str, Any]:
    out = workdir / f"{name}.json"
    log = DOCS / "bench-logs" / f"{name}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *BENCHES[name], "--json", str(out)]
    print(f"== {' '.join(BENCHES[name])}", flush=True)
    started = time.monotonic()
    with log.open("w") as sink:
        done = subprocess.run(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    print(f"   {seconds:.0f} s, exit {done.returncode}; output in {log.relative_to(ROOT)}")
    # Exit status 1 is a target missed: the figures are written and the table says which.
    if done.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"{name} failed; see {log}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["seconds"] = round(seconds)
    return result


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| figure | value | baseline (same run) | baseline value | ratio | target | met |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for f in result["figures"]:
        met = {True: "yes", False: "**no**", None: ""}[f["met"]]
        lines.append(
            f"| {f['name']} | {_number(f['value'])} {f['unit']} | {f['baseline']} |"
            f" {_number(f['baseline_value'])} {f['unit']} | {f['ratio']:.2f}x |"
            f" {f['target']} | {met} |"
        )
    return lines


def plot(fanout: dict[str, Any]) -> bool:
    """Fan-out wall time against N, one line per series; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = fanout["series"]
    sizes = series["n"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, times in series.items():
        if label == "n":
            continue
        points = [(n, t) for n, t in zip(sizes, times, strict=True) if t is not None]
        ax.plot([n for n, _ in points], [t for _, t in points], marker="o", label=label)
    ax.set_xlabel("hosts (N)")
    ax.set_ylabel("wall time, s (log)")
    ax.set_yscale("log")
    ax.set_title("`whoami` on N OpenSSH hosts: job created to job finished")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT)
    return True


def write(results: dict[str, dict[str, Any]], plotted: bool) -> None:
    any_result = next(iter(results.values()))
    machine = any_result["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (bench/report.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "Every figure is compared with a baseline measured in the same run, on the same",
        "machine: read the ratios, not the absolute figures. A ratio above 1 is better than",
        "the baseline.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items() if k != "load average"),
        "",
    ]
    for name in BENCHES:
        result = results.get(name)
        if result is None:
            continue
        lines += [
            f"## {name}: `{JSON_OPTION.sub('', result['command'])}`",
            "",
            f"Took {result['seconds']} s; load average at its end:"
            f" {result['machine']['load average']}. Full output: `docs/bench-logs/{name}.txt`.",
            "",
            *table(result),
            "",
            *(f"- {note}" for note in result["notes"]),
            "",
        ]
        if name == "fanout" and plotted:
            lines += [f"![fan-out wall time against N]({PLOT.name})", ""]
    REPORT.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = parser.parse_args(argv)
    DOCS.mkdir(exist_ok=True)
    results: dict[str, dict[str, Any]] = json.loads(DATA.read_text()) if DATA.exists() else {}
    with tempfile.TemporaryDirectory(prefix="orca-bench-report-") as tmp:
        for name in args.only or BENCHES:
            results[name] = run(name, Path(tmp))
            DATA.write_text(json.dumps(results, indent=2) + "\n")
    plotted = "fanout" in results and plot(results["fanout"])
    write(results, plotted)
    print(f"wrote {REPORT.relative_to(ROOT)}", f"and {PLOT.relative_to(ROOT)}" if plotted else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
