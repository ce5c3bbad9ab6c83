"""The permissions tables of the README and of the chart's README are the one
`pystol_worker.kube.permissions` generates: a rule added to the code's list and not to a
README (or the reverse) fails here, so what an admin reads before installing is what the
chart grants."""

from __future__ import annotations

from pathlib import Path

import pytest

from pystol_worker.kube.permissions import PERMISSIONS, markdown_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("readme", ["README.md", "charts/pystol/README.md"])
def test_the_readme_shows_the_generated_permissions_table(readme: str) -> None:
    assert markdown_table() in (ROOT / readme).read_text(encoding="utf-8")


def test_the_table_names_every_rule() -> None:
    table = markdown_table()
    for component, rules in PERMISSIONS.items():
        for rule in rules:
            assert f"| {component} | {rule.api_group or 'core'} | {rule.resource}" in table
