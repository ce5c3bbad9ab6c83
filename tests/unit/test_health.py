"""Health files, both sides: `HealthFile.touch` (what worker and beat do) and the freshness
check behind `pystol health` (what the chart's liveness probes run). The real processes
are in tests/integration/test_health.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pystol_api.cli.commands import cli
from pystol_worker.core.settings import Settings, SettingsError, load_settings
from pystol_worker.process.health_file import HealthFile, check_health_file, health_file_path


def aged(path: Path, seconds: float) -> Path:
    """Write `path` as if it was last touched `seconds` ago."""
    path.touch()
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_a_recent_file_is_fresh(tmp_path: Path) -> None:
    assert check_health_file(aged(tmp_path / "h", 2), max_age=5) is None


def test_an_old_file_is_stale_and_says_how_old(tmp_path: Path) -> None:
    path = aged(tmp_path / "h", 30)
    reason = check_health_file(path, max_age=5)
    assert reason is not None
    assert reason.startswith(f"health file {path} is 30.0 s old (at most 5 s)")
    assert "\n" not in reason


def test_freshness_is_measured_against_now(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.touch()
    modified = path.stat().st_mtime
    assert check_health_file(path, max_age=10, now=modified + 10) is None
    assert check_health_file(path, max_age=10, now=modified + 10.5) is not None


def test_a_missing_file_is_not_fresh(tmp_path: Path) -> None:
    reason = check_health_file(tmp_path / "nothing", max_age=60)
    assert reason is not None and reason.startswith("no health file ")


def test_a_file_from_the_future_is_not_fresh(tmp_path: Path) -> None:
    path = aged(tmp_path / "h", -3600)  # the clock was set back an hour
    reason = check_health_file(path, max_age=60)
    assert reason is not None and "in the future" in reason
    assert check_health_file(aged(path, -1), max_age=60) is None  # small skew is fine


def test_touch_creates_the_file_then_refreshes_it(tmp_path: Path) -> None:
    path = tmp_path / "pystol-worker.health"
    health = HealthFile(path)
    health.touch()
    assert check_health_file(path, max_age=1) is None
    aged(path, 120)
    assert check_health_file(path, max_age=60) is not None
    health.touch()
    assert check_health_file(path, max_age=1) is None


def test_touch_never_raises_and_warns_once(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    health = HealthFile(tmp_path / "no-such-dir" / "pystol-beat.health")
    with caplog.at_level(logging.INFO, logger="pystol.health"):
        health.touch()
        health.touch()
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        (tmp_path / "no-such-dir").mkdir()
        health.touch()
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert check_health_file(health.path, max_age=1) is None


def test_each_process_has_its_own_file_and_empty_turns_them_off() -> None:
    assert health_file_path("/tmp", "worker") == Path("/tmp/pystol-worker.health")
    assert health_file_path("/tmp", "beat") == Path("/tmp/pystol-beat.health")
    assert health_file_path("", "worker") is None


def test_settings_defaults_and_bounds() -> None:
    fields = Settings.model_fields
    assert (fields["health_dir"].default, fields["health_interval_seconds"].default) == \
        ("/tmp", 10.0)
    with pytest.raises(SettingsError, match="PYSTOL_HEALTH_INTERVAL_SECONDS"):
        load_settings(health_interval_seconds=0)


# -- pystol health ----------------------------------------------------------------------


def test_cli_exits_0_when_fresh(tmp_path: Path) -> None:
    path = aged(tmp_path / "h", 1)
    result = CliRunner().invoke(cli, ["health", "--file", str(path), "--max-age", "60"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: {path} is fresh\n"


@pytest.mark.parametrize("age", [None, 90.0])
def test_cli_exits_1_with_one_line_when_stale_or_missing(tmp_path: Path,
                                                        age: float | None) -> None:
    path = tmp_path / "h" if age is None else aged(tmp_path / "h", age)
    result = CliRunner().invoke(cli, ["health", "--file", str(path), "--max-age", "60"])
    assert result.exit_code == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and str(path) in line


def test_cli_needs_a_positive_max_age(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["health", "--file", str(tmp_path), "--max-age", "0"])
    assert result.exit_code == 2


def test_cli_health_imports_nothing_heavy(tmp_path: Path) -> None:
    """The probe runs every few seconds in every worker and beat pod: a file's age only."""
    path = aged(tmp_path / "h", 1)
    heavy = ("kubernetes", "celery", "flask", "gunicorn", "requests", "pydantic", "redis")
    code = ("import sys\nfrom pystol_api.cli.commands import cli\n"
            f"try:\n    cli(['health', '--file', {str(path)!r}, '--max-age', '5'])\n"
            "except SystemExit as done:\n"
            f"    print(done.code, [m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "0 []"
