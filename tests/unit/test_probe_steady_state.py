"""steady-state: a job that changes nothing and only runs its probes (how an experiment's
hypothesis checks run through the one submission path), and the scope rules it shares."""

from __future__ import annotations

from typing import Any

import pytest

from pystol_worker.actions import default_registry
from pystol_worker.core.model import JobSpec, JobStatus, Verdict
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.validation import JobInvalid, validate_job
from tests.support.fake_jobs import FakeJobs, app_deployment

PODS = {"type": "k8s", "name": "enough-web", "namespace": "shop",
        "pods": {"label_selector": "app=web", "ready": True, "op": "ge", "value": 2}}


def problems(spec: dict[str, Any]) -> dict[str, str]:
    try:
        validate_job(JobSpec.model_validate(spec), default_registry(), Settings())
    except JobInvalid as invalid:
        return {p.loc: p.msg for p in invalid.problems}
    return {}


def test_steady_state_runs_its_probes_and_changes_nothing() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=3)
    record = jobs.run({"action": "steady-state", "target": {"namespaces": ["shop"]},
                       "probes": [PODS]})
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert record.verdict == Verdict.PASSED and record.score == 100.0
    assert [(o.phase, o.ok, o.value) for o in record.result.probes] == [
        ("before", True, 3), ("after", True, 3)]
    assert {r.verb for r in jobs.fake.requests} <= {"get", "list"}
    assert record.result.changes == []


def test_an_unmet_hypothesis_skips_it() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=1)
    record = jobs.run({"action": "steady-state", "target": {"namespaces": ["shop"]},
                       "probes": [PODS]})
    assert record.status == JobStatus.SKIPPED and record.verdict == Verdict.SKIPPED


def test_steady_state_needs_a_probe_or_a_guard_and_lists_its_namespaces() -> None:
    assert "probes" in problems({"action": "steady-state", "target": {}})
    assert problems({"action": "steady-state", "target": {},
                     "guard": {"endpoint": "main", "query": "up", "max": 1}}) == {}
    found = problems({"action": "steady-state", "target": {"namespaces": ["shop"]},
                      "probes": [{**PODS, "namespace": "payments"}]})
    assert "probes[0]" in found and "payments" in found["probes[0]"]
    assert "duration" in problems({"action": "steady-state", "duration": "1m",
                                   "target": {"namespaces": ["shop"]}, "probes": [PODS]})


@pytest.mark.parametrize(("probe", "loc"), [
    ({"service": {"namespace": "kube-system", "name": "dns"}}, "probes[0].service.namespace"),
    ({**PODS, "namespace": "kube-system"}, "probes[0].namespace"),
])
def test_a_probe_in_a_protected_namespace_is_refused(probe: dict[str, Any], loc: str) -> None:
    found = problems({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                      "probes": [probe]})
    assert loc in found and "protected" in found[loc]
