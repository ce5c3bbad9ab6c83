"""The benchmarks' results files: `--render` only reads, the README table comes from them.

No benchmark runs here: the results files are written by `bench.results_file.report` from
made-up rows, which is the same writer every benchmark uses.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from bench import readme_table
from bench.results_file import Provenance, Row, report

BENCHMARKS = ("sim_scale", "pipeline", "throughput", "launch", "safety", "dashboard", "schedules",
              "cr_watcher")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_results(path: Path, benchmark: str, commit: str | None = COMMIT) -> dict:
    rows = [Row("latency p50", "ms", 12.5, 4.0, note="baseline: the bare call"),
            Row("throughput", "req/s", 400.0, 2000.0, rate=True),
            Row("halt latency p50", "ms", -18.6, 100.0, note="signed | may be negative"),
            Row("start-up", "s", 40.6, None)]
    provenance = Provenance(commit=commit, dirty=False, date="2026-12-01T10:20:30Z")
    assert report(benchmark, path, provenance, rows, [("every job ended", True)],
                  {"raw": [1, 2, 3]}, config={"smoke": False}) == 0
    document: dict = json.loads(path.read_text())
    return document


def test_the_results_file_records_commit_date_and_every_row(tmp_path: Path) -> None:
    document = write_results(tmp_path / "pipeline.json", "pipeline")
    assert document["commit"] == COMMIT and document["dirty"] is False
    assert document["date"] == "2026-12-01T10:20:30Z"
    assert [row["metric"] for row in document["table"]] == [
        "latency p50", "throughput", "halt latency p50", "start-up"]
    ratios = [row["ratio"] for row in document["table"]]
    assert ratios[0] == pytest.approx(3.125)
    assert ratios[1] == pytest.approx(5.0)  # a rate: baseline / pystol
    assert ratios[2] == pytest.approx(-0.186)  # signed, not clamped
    assert ratios[3] is None


def test_provenance_names_the_checked_out_commit() -> None:
    provenance = Provenance.now()
    assert provenance.commit is None or len(provenance.commit) == 40
    assert provenance.date.endswith("Z")


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_render_prints_and_never_writes(benchmark: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"{benchmark}.json"
    write_results(path, benchmark)
    capsys.readouterr()
    before, stat = path.read_bytes(), path.stat()
    module = importlib.import_module(f"bench.{benchmark}")
    assert module.main(["--render", str(path)]) == 0
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    printed = capsys.readouterr().out
    assert "latency p50 (ms)" in printed and COMMIT[:12] in printed


def test_the_readme_table_has_every_row_and_the_commit(tmp_path: Path) -> None:
    documents = {name: write_results(tmp_path / f"{name}.json", name)
                 for name in ("sim_scale", "pipeline", "safety", "schedules")}
    no_commit = write_results(tmp_path / "cr_watcher.json", "cr_watcher", commit=None)
    block = readme_table.generate(tmp_path)
    assert block.startswith(readme_table.START) and block.endswith(readme_table.END)
    for document in [*documents.values(), no_commit]:
        for row in document["table"]:
            assert f"| {row['metric']} ({row['unit']}) |" in block
    assert block.count(f"`{COMMIT[:12]}`") == 4
    assert "commit `unknown`" in block
    assert "signed \\| may be negative" in block  # a '|' in a note does not split the cell
    assert "| halt latency p50 (ms) | -18.6 | 100 | -0.186x |" in block
    assert "_smoke" not in block


def test_check_fails_until_the_readme_is_regenerated(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_results(results / "safety.json", "safety")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{readme_table.START}\ntyped by hand\n{readme_table.END}\n"
                      "\n## Next\n")
    args = ["--readme", str(readme), "--results", str(results)]
    assert readme_table.main([*args, "--check"]) == 1
    assert "typed by hand" in readme.read_text()  # --check changes nothing
    assert readme_table.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n") and text.endswith("\n\n## Next\n")
    assert "typed by hand" not in text and "not measured yet" in text
    assert readme_table.main([*args, "--check"]) == 0
