"""`pystol rehearse`'s tables: what a person reads before a change window."""

from __future__ import annotations

import click

from pystol_api.cli.rehearse import report_lines

REPORT = {
    "experiment": "shop-survives", "snapshot": "cluster.yaml", "speed": 3.0,
    "duration_seconds": 12.4, "verdict": "passed", "score": 100.0, "reason": None,
    "predicted": [
        {"path": "method[0]", "action": "pod-kill", "matched": 3, "chosen": 1, "error": None,
         "workloads": [{"workload": {"kind": "Deployment", "namespace": "shop",
                                     "name": "slow-0"},
                        "target_kind": "Pod", "chosen": 1, "desired": 3}]},
        {"path": "method[1]", "action": "deployment-scale", "matched": 1, "chosen": 1,
         "error": None,
         "workloads": [{"workload": {"kind": "Deployment", "namespace": "shop", "name": "api"},
                        "target_kind": "Deployment", "chosen": 1, "desired": 2}]},
        {"path": "method[2]", "action": "pod-kill", "matched": 0, "chosen": 0,
         "error": "no targets: nothing matched the target", "workloads": []}],
    "blast_radius": [{"workload": {"kind": "Deployment", "namespace": "shop",
                                   "name": "slow-0"}, "desired": 3, "min_ready": 2, "lost": 1}],
    "budgets": [{"namespace": "shop", "name": "slow-0-all", "min_available": 3,
                 "min_healthy": 2, "blocked_evictions": 0, "violated": True}],
    "recovery": [{"workload": {"kind": "Deployment", "namespace": "shop", "name": "slow-0"},
                  "step": "method[0]", "recovered": True, "measured_seconds": 5.01,
                  "simulated_seconds": 15.03}],
    "not_rehearsed": ["hypothesis.probes: probe prom: a prometheus probe"],
    "notes": [],
}


def plain(lines: list[str]) -> str:
    return "\n".join(click.unstyle(line) for line in lines)


def test_the_tables_say_targets_blast_radius_budgets_and_recovery() -> None:
    text = plain(report_lines(REPORT))
    assert text.startswith("rehearsal of shop-survives on cluster.yaml at 3x (took 12s)\n"
                           "verdict passed  score 100.00")
    assert "method[0]  pod-kill          3        1       1 of 3 pods of Deployment " \
           "shop/slow-0" in text
    # A step that targets the workload itself is not counted in pods.
    assert "1       Deployment shop/api" in text
    assert "no targets: nothing matched the target" in text
    assert "Deployment shop/slow-0  3        2          1" in text
    assert "shop/slow-0-all  3              2            0                  yes" in text
    assert "RECOVERY (seconds on the real cluster)" in text
    assert "Deployment shop/slow-0  method[0]  yes        15.0" in text
    assert "NOT REHEARSED\n- hypothesis.probes: probe prom" in text
    assert "NOTES" not in text


def test_an_empty_rehearsal_says_so_rather_than_printing_empty_tables() -> None:
    text = plain(report_lines({**REPORT, "predicted": [], "blast_radius": [], "budgets": [],
                               "recovery": [], "not_rehearsed": [], "verdict": "skipped",
                               "score": None, "duration_seconds": None,
                               "reason": "steady state not met before"}))
    assert "verdict skipped  score -  (steady state not met before)" in text
    assert "(no action steps)" in text and "(no workload lost a ready pod)" in text
    assert "(nothing to recover)" in text and "DISRUPTION BUDGETS" not in text
