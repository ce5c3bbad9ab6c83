"""Fixtures shared by every test layer: processes the tests start and stop themselves."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sim_process import SimProcess

ROOT = Path(__file__).resolve().parent.parent
# Every process and app the tests build seals and checks grants with the same key, as
# the processes of one install do (`pystol up` and the chart generate one).
os.environ.setdefault("PYSTOL_SIGNING_KEY", "tests-signing-key-0123456789abcdef")
TOOLS_BIN = ROOT / ".tools" / "bin"


def pytest_configure(config: pytest.Config) -> None:
    # kubectl and helm come from the npm package scripts/dev.sh unpacks; put them first on
    # PATH so that no older kubectl the machine may carry is used by mistake.
    if TOOLS_BIN.is_dir():
        os.environ["PATH"] = f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One simulated cluster (the demo scenario at 10x speed) shared by a test session."""
    with SimProcess.start(tmp_path_factory.mktemp("sim"), speed=10.0) as process:
        yield process


@pytest.fixture
def fresh_sim(tmp_path: Path) -> Iterator[SimProcess]:
    """A simulated cluster of the test's own, for tests that change cluster-wide state."""
    with SimProcess.start(tmp_path, speed=10.0) as process:
        yield process


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: run the tests through `bash scripts/dev.sh test`, "
                    "which installs it")
    return path
