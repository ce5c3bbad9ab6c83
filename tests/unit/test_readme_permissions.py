"""The README's permissions table is the one `pystol_worker.kube.permissions` generates: a
rule added to the code's list and not to the README (or the reverse) fails here, so what
an admin reads before installing is what the chart grants."""

from __future__ import annotations

from pathlib import Path

from pystol_worker.kube.permissions import PERMISSIONS, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_shows_the_generated_permissions_table() -> None:
    assert markdown_table() in README.read_text(encoding="utf-8")


def test_the_table_names_every_rule() -> None:
    table = markdown_table()
    for component, rules in PERMISSIONS.items():
        for rule in rules:
            assert f"| {component} | {rule.api_group or 'core'} | {rule.resource}" in table
