"""`helm template` of the Pystol chart, for tests that read what it renders (no cluster)."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.conftest import ROOT, require_tool

CHART = ROOT / "charts" / "pystol"
RELEASE, NAMESPACE = "rel", "pystol"


def render(*sets: str) -> list[dict[str, Any]]:
    """The chart's documents with `--set` values applied; fails the test if helm refuses."""
    helm = require_tool("helm")
    args = [helm, "template", RELEASE, str(CHART), "-n", NAMESPACE]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
