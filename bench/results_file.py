"""The results file every benchmark writes, and the one way to print it again.

Why one module: the README's benchmark table is generated from these files
(`python -m bench.readme_table`), so every benchmark must write the same shape, and
a figure is only worth quoting when it says which code it measured and when. Every
file therefore carries:

- `commit`: `git rev-parse HEAD` when the run started, and `dirty`: whether
  `git status --porcelain` showed changes under the measured code (`pystol_api`,
  `pystol_worker`, `pystol_sim`, `bench`, except `bench/results` itself, which the
  benchmarks write) at that moment. A dirty run measured code no commit holds.
- `date`: when the run started (UTC).
- `table`: the rows exactly as the run printed them (metric, unit, pystol, baseline,
  ratio, note) and `labels` for the two value columns. `--render` and the README
  generator read this table; they never recompute it, so a results file keeps saying
  what its own run measured even after the code that wrote it changes.
- `checks`, `config`, `machine` and `details` (the raw figures).

`render()` (every benchmark's `--render FILE`) only reads and prints: a results file
is changed by running its benchmark, by nothing else.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# The code a benchmark measures; the results directory is written by the runs themselves.
MEASURED_PATHS = ("pystol_api", "pystol_worker", "pystol_sim", "bench",
                  ":(exclude)bench/results")
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Provenance:
    """Which code a run measured and when it started."""

    commit: str | None
    dirty: bool | None
    date: str

    @classmethod
    def now(cls) -> Provenance:
        """Take it at the start of a run (the code may be edited while a long run goes on)."""
        date = datetime.datetime.now(datetime.UTC).strftime(DATE_FORMAT)
        head = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--", *MEASURED_PATHS)
        commit = head.strip() if head else None
        dirty = bool(status.strip()) if status is not None else None
        return cls(commit=commit or None, dirty=dirty, date=date)


def _git(*args: str) -> str | None:
    """stdout of a git command in the repository, or None when git cannot answer."""
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=30, check=False)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass
class Row:
    """One line of a benchmark's table: Pystol's figure beside its baseline's."""

    metric: str
    unit: str
    pystol: float | None
    baseline: float | None
    note: str = ""
    rate: bool = False  # higher is better (req/s, events/s): the ratio is baseline / pystol

    @property
    def ratio(self) -> float | None:
        """Pystol's cost in multiples of the baseline's: above 1 means slower or bigger.

        Signed figures keep their sign (a negative halt latency gives a negative ratio);
        there is no ratio without a positive denominator."""
        top, bottom = (self.baseline, self.pystol) if self.rate else (self.pystol,
                                                                        self.baseline)
        if top is None or bottom is None or bottom <= 0:
            return None
        return top / bottom

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "unit": self.unit, "pystol": self.pystol,
                "baseline": self.baseline, "ratio": self.ratio, "note": self.note}


def fmt(value: float | None) -> str:
    """Whole numbers as they are, others to three significant figures (no decimals from
    100 up), with thousands separators; '-' for no value."""
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def fmt_ratio(value: float | None) -> str:
    return f"{fmt(value)}x" if value is not None else "-"


def text_table(rows: list[dict[str, Any]], labels: tuple[str, str]) -> str:
    """The table as the terminal shows it, from stored rows (as written to the file)."""
    header = ("metric", labels[0], labels[1], "ratio")
    body = [(f"{row['metric']} ({row['unit']})", fmt(row["pystol"]), fmt(row["baseline"]),
             fmt_ratio(row["ratio"])) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]
    lines = []
    for index, line in enumerate([header, *body]):
        lines.append("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(line, widths,
                                                                      strict=True))))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def describe_commit(document: dict[str, Any]) -> str:
    """`abcdef123456`, `abcdef123456 + uncommitted changes`, or `unknown`."""
    commit = document.get("commit")
    if not commit:
        return "unknown"
    return f"{commit[:12]}{' + uncommitted changes' if document.get('dirty') else ''}"


def describe_date(document: dict[str, Any]) -> str:
    date = document.get("date")
    if not date:
        return "unknown date"
    try:
        parsed = datetime.datetime.strptime(date, DATE_FORMAT)
    except ValueError:
        return str(date)
    return parsed.strftime("%Y-%m-%d %H:%M UTC")


def print_document(document: dict[str, Any]) -> bool:
    """Print a results document's table and checks; True when every check passed."""
    labels = tuple(document.get("labels") or ("pystol", "baseline"))
    print(f"{document.get('benchmark', '?')}: commit {describe_commit(document)}, "
          f"{describe_date(document)}")
    print()
    print(text_table(document["table"], (labels[0], labels[1])))
    print()
    passed = True
    for check in document.get("checks") or ():
        print(f"  [{'ok' if check['ok'] else 'FAIL'}] {check['check']}")
        passed = passed and bool(check["ok"])
    return passed


def machine_info(**extra: Any) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), **extra}


def report(benchmark: str, output: Path, provenance: Provenance, rows: list[Row],
           verdicts: list[tuple[str, bool]], details: dict[str, Any], *,
           config: dict[str, Any], machine: dict[str, Any] | None = None,
           labels: tuple[str, str] = ("pystol", "baseline")) -> int:
    """Write the results file, print its table and checks; 0 when every check passed."""
    document: dict[str, Any] = {
        "benchmark": benchmark,
        "commit": provenance.commit,
        "dirty": provenance.dirty,
        "date": provenance.date,
        "machine": machine_info(**(machine or {})),
        "config": config,
        "labels": list(labels),
        "table": [row.as_dict() for row in rows],
        "checks": [{"check": text, "ok": ok} for text, ok in verdicts],
        "details": details,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print()
    passed = print_document(document)
    print(f"\nwritten to {output}")
    return 0 if passed else 1


def render(path: Path) -> int:
    """`--render FILE`: print an earlier results file. Reads only, never writes."""
    document = json.loads(path.read_text())
    return 0 if print_document(document) else 1


def default_output(benchmark: str, smoke: bool) -> Path:
    """bench/results/<benchmark>.json, or <benchmark>_smoke.json for a smoke run (which the
    README table leaves out: small sizes, shared CI machines)."""
    return RESULTS_DIR / (f"{benchmark}_smoke.json" if smoke else f"{benchmark}.json")
