"""Limits on everything a job carries (issue 13, "Input that costs nothing to send").

Each limit is refused where the job is described (the job model, which the API, the
custom resources, schedules' templates and the worker all validate with), naming the
field; the limits that depend on the cluster (a scale-up's size, a stress pod's size
against its node) are refused by the worker before anything changes, naming the param.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pystol_api.watcher.cr_mapping import CrInvalid, job_spec_from_cr
from pystol_worker.actions.base import NoParams
from pystol_worker.actions.deployment_scale import DeploymentScaleParams
from pystol_worker.actions.http_probe import HttpProbeParams
from pystol_worker.actions.node_drain import NodeDrainParams
from pystol_worker.core.model import (
    MAX_JOB_DURATION_SECONDS,
    MAX_NODE_NAMES,
    MAX_PARAMS_DEPTH,
    MAX_PROBES,
    JobSpec,
    JobStatus,
)
from pystol_worker.core.policy import Policy
from pystol_worker.core.schedule_model import ConcurrencyPolicy, ScheduleSpec
from pystol_worker.core.settings import Settings
from pystol_worker.kube.fake_cluster import Request
from pystol_worker.process.time_limits import (
    MARGIN_SECONDS,
    JobTimeLimitExceeded,
    job_time_limits,
)
from tests.support.fake_jobs import FakeJobs, app_deployment, pods_of

KILL = {"action": "pod-kill", "target": {"namespaces": ["shop"]}}
PROBE = {"url": "http://web.shop/healthz"}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def refusals(data: dict[str, Any]) -> dict[str, str]:
    """Field path -> message of everything the job model refuses in `data`."""
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(data)
    return {".".join(str(part) for part in item["loc"]): item["msg"]
            for item in caught.value.errors()}


def with_target(**target: Any) -> dict[str, Any]:
    return {**KILL, "target": {"namespaces": ["shop"], **target}}


# -- the job model ------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "field", "fragment"), [
    (with_target(names=[f"node-{i}" for i in range(MAX_NODE_NAMES + 1)]), "target.names",
     "at most 1000 items"),
    (with_target(names=["n" * 254]), "target.names.0", "at most 253 characters"),
    (with_target(names=[""]), "target.names.0", "at least 1 character"),
    ({**KILL, "target": {"namespaces": [f"ns-{i}" for i in range(101)]}}, "target.namespaces",
     "at most 100 items"),
    (with_target(label_selector="a" * 1025), "target.label_selector", "at most 1024"),
    (with_target(field_selector="a" * 1025), "target.field_selector", "at most 1024"),
    (with_target(mode="fixed", value=1_000_001), "target.value", "at most 1,000,000"),
    (with_target(min_available=1_000_001), "target.min_available", "at most 1,000,000"),
    ({**KILL, "probes": [PROBE] * (MAX_PROBES + 1)}, "probes", "at most 20 items"),
    ({**KILL, "probes": [{**PROBE, "timeout": "61s"}]}, "probes.0.http.run.timeout", "at most 1m"),
    ({**KILL, "probes": [{**PROBE, "timeout": 0}]}, "probes.0.http.run.timeout",
     "longer than 0s"),
    ({**KILL, "duration": "169h"}, "duration", "at most 168h (604800s)"),
    ({**KILL, "recovery_timeout": 1e300}, "recovery_timeout", "at most 168h"),
    ({**KILL, "params": nested(MAX_PARAMS_DEPTH + 1)}, "params", "nested more than 8 levels"),
    ({**KILL, "params": {"blob": "x" * 17_000}}, "params", "at most 16,384"),
    # Each field within its own limit, together too big: 130 names of 253 characters.
    (with_target(names=[f"{i:03}" + "n" * 250 for i in range(130)]), "",
     "the job spec is 33,"),
])
def test_each_limit_is_refused_naming_its_field(data: dict[str, Any], field: str,
                                                fragment: str) -> None:
    found = refusals(data)
    assert field in found, found
    assert fragment in found[field], found


def test_a_job_at_every_limit_is_accepted() -> None:
    spec = JobSpec.model_validate({
        "action": "node-cordon",
        "target": {"names": ["n" * 253] * 100, "namespaces": [f"ns-{i}" for i in range(100)],
                   "label_selector": "a" * 1024, "min_available": 1_000_000},
        "probes": [{**PROBE, "timeout": "60s"}] * MAX_PROBES,
        "duration": MAX_JOB_DURATION_SECONDS, "recovery_timeout": "168h",
        "params": nested(MAX_PARAMS_DEPTH)})
    assert len(spec.target.names) == 100 and len(spec.probes) == MAX_PROBES


def test_a_custom_resource_past_a_limit_is_refused_at_its_own_field_path() -> None:
    """What the watcher turns into the PystolAction's `Failed` condition."""
    with pytest.raises(CrInvalid) as caught:
        job_spec_from_cr({"action": "node-cordon", "duration": "200h",
                          "target": {"names": ["n" * 254], "labelSelector": "a" * 2000},
                          "probes": [{"url": "http://x/", "timeout": "5m"}]})
    found = {problem.loc: problem.msg for problem in caught.value.problems}
    assert set(found) == {"spec.duration", "spec.target.names[0]",
                          "spec.target.labelSelector", "spec.probes[0].timeout"}, found
    assert "at most 168h" in found["spec.duration"]


# -- schedules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("timing", [{"interval": "0.5s"}, {"interval": 0.1},
                                    {"mtbf": "999ms"}])
def test_no_schedule_runs_more_often_than_once_a_second(timing: dict[str, Any]) -> None:
    """Whatever the admin policy allows (its min_schedule_period may be lower)."""
    with pytest.raises(ValidationError, match="between 1s and 366 days"):
        ScheduleSpec.model_validate({**timing, "template": KILL})
    assert ScheduleSpec.model_validate({"interval": "1s", "template": KILL}).interval == 1.0


def test_runs_overlap_only_when_allow_is_chosen() -> None:
    default = ScheduleSpec.model_validate({"interval": "1h", "template": KILL})
    assert default.concurrency_policy == ConcurrencyPolicy.FORBID
    chosen = ScheduleSpec.model_validate({"interval": "1h", "template": KILL,
                                          "concurrency_policy": "Allow"})
    assert chosen.concurrency_policy == ConcurrencyPolicy.ALLOW


def test_a_schedules_template_carries_the_job_limits() -> None:
    with pytest.raises(ValidationError) as caught:
        ScheduleSpec.model_validate({"interval": "1h", "template": {**KILL,
                                                                     "duration": "200h"}})
    assert [item["loc"] for item in caught.value.errors()] == [("template", "duration")]


# -- deployment-scale ------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "field"), [({"replicas": -1}, "replicas"),
                                               ({"replicas": 1001}, "replicas"),
                                               ({"percent": 1001}, "percent"),
                                               ({"percent": -5}, "percent")])
def test_scale_params_out_of_bounds_are_refused(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DeploymentScaleParams.model_validate(params)
    assert [item["loc"] for item in caught.value.errors()] == [(field,)]


@pytest.mark.parametrize(("replicas", "params", "fragment"), [
    (2, {"replicas": 21}, "params.replicas would scale it from 2 to 21 replicas, more than "
                          "10 times"),
    (200, {"percent": 1000}, "params.percent would scale it from 200 to 2000 replicas; at "
                             "most 1000"),
])
def test_a_scale_up_beyond_the_bounds_changes_nothing(replicas: int, params: dict[str, Any],
                                                      fragment: str) -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=replicas, nodes=("n1",))
    record = jobs.run({"action": "deployment-scale", "params": params, "duration": "1s",
                       "target": {"namespaces": ["shop"], "label_selector": "app=web",
                                  "mode": "all"}})
    assert record.status == JobStatus.FAILED
    assert record.reason and record.reason.startswith("no targets") and fragment in \
        record.reason, record.reason
    assert jobs.fake.called("patch", "deployments/scale") == []
    assert (jobs.fake.get("Deployment", "shop", "web") or {})["spec"]["replicas"] == replicas


def test_a_tenfold_scale_up_is_allowed() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=1, nodes=("n1",))
    record = jobs.run({"action": "deployment-scale", "params": {"replicas": 10},
                       "duration": "0.1s", "recovery_timeout": "5s",
                       "target": {"namespaces": ["shop"], "label_selector": "app=web"}})
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert [r.body for r in jobs.fake.called("patch", "deployments/scale")] == [
        {"spec": {"replicas": 10}}, {"spec": {"replicas": 1}}]


# -- stress sizes against the node ----------------------------------------------------------------

def sized_node(jobs: FakeJobs, name: str, cpu: str, memory: str) -> None:
    jobs.fake.add({"kind": "Node", "metadata": {"name": name, "labels": {}}, "spec": {},
                   "status": {"conditions": [{"type": "Ready", "status": "True"}],
                              "capacity": {"cpu": cpu, "memory": memory},
                              "allocatable": {"cpu": cpu, "memory": memory}}})


def stress_pods(jobs: FakeJobs) -> list[dict[str, Any]]:
    return jobs.fake.objects("Pod", label_selector="app.kubernetes.io/managed-by=pystol")


@pytest.mark.parametrize(("spec", "fragment"), [
    # 2 x 4Gi + 64Mi headroom on a node with 8Gi: more than 90% of it.
    ({"action": "memory-stress", "params": {"node": "small", "bytes": "4Gi", "workers": 2}},
     "params.bytes: 2x4Gi memory stress needs a memory limit of 8256Mi, more than 90% of "
     "node small's allocatable memory (8Gi): use fewer bytes or workers"),
    # 3 workers at 100% on a 2-CPU node.
    ({"action": "cpu-stress", "params": {"node": "small", "workers": 3}},
     "params.workers: 3x100% CPU stress needs a CPU limit of 3000m, more than node small's "
     "allocatable CPU (2): use fewer workers"),
])
def test_a_stress_larger_than_its_node_is_refused_before_any_pod(spec: dict[str, Any],
                                                                 fragment: str) -> None:
    jobs = FakeJobs()
    sized_node(jobs, "small", cpu="2", memory="8Gi")
    record = jobs.run({**spec, "target": {}, "duration": "1s"})
    assert record.status == JobStatus.FAILED
    assert record.reason == fragment
    assert jobs.fake.called("create", "pods") == [] and stress_pods(jobs) == []


def test_a_colocated_stress_is_checked_against_its_targets_node() -> None:
    jobs = FakeJobs()
    sized_node(jobs, "small", cpu="2", memory="1Gi")
    app_deployment(jobs.fake, replicas=1, nodes=("small",))
    record = jobs.run({"action": "memory-stress", "params": {"bytes": "1Gi"}, "duration": "1s",
                       "target": {"namespaces": ["shop"], "label_selector": "app=web"}})
    assert record.status == JobStatus.FAILED
    assert record.reason and record.reason.startswith("params.bytes:"), record.reason
    assert "node small's allocatable memory (1Gi)" in record.reason
    assert stress_pods(jobs) == [] and len(pods_of(jobs.fake)) == 1


def test_a_stress_that_fits_its_node_runs() -> None:
    jobs = FakeJobs()
    sized_node(jobs, "big", cpu="3920m", memory="16Gi")
    held = jobs.during_hold(lambda: stress_pods(jobs))
    record = jobs.run({"action": "memory-stress", "target": {}, "duration": "0.2s",
                       "params": {"node": "big", "bytes": "7Gi", "workers": 2}})
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert len(held[-1]) == 1 and stress_pods(jobs) == []


# -- time limits -----------------------------------------------------------------------------------

SETTINGS = Settings(max_job_seconds=3600, recovery_timeout_seconds=300, kube_qps=20)


def limits(data: dict[str, Any], params: Any = None, policy: Policy | None = None,
           settings: Settings = SETTINGS) -> tuple[float, float]:
    spec = JobSpec.model_validate(data)
    found = job_time_limits(spec, params or NoParams(), settings, policy or Policy())
    return found.soft, found.hard


def test_the_time_limit_is_the_jobs_own_length_plus_a_margin() -> None:
    # 60s held, 30s to recover, a 5s probe before and after, one target (0.2s of requests).
    soft, hard = limits({**KILL, "duration": "60s", "recovery_timeout": "30s",
                         "probes": [{**PROBE, "timeout": "5s"}]})
    margin = MARGIN_SECONDS + 4 / 20
    assert soft == pytest.approx(60 + 30 + 10 + margin)
    assert hard == pytest.approx(soft + margin)


def test_the_default_recovery_timeout_and_the_targets_count() -> None:
    soft, _ = limits(with_target(mode="fixed", value=100))
    assert soft == pytest.approx(300 + MARGIN_SECONDS + 4 * 100 / 20)
    soft, _ = limits(with_target(mode="all"), policy=Policy(max_targets_per_job=50))
    assert soft == pytest.approx(300 + MARGIN_SECONDS + 4 * 50 / 20)


def test_an_actions_own_waiting_counts() -> None:
    probe = HttpProbeParams(url="http://x/", count=100, interval=2.0, timeout=1.0)
    soft, _ = limits({"action": "http-probe", "target": {}}, probe)
    assert soft == pytest.approx(300 + (100 * 1.0 + 99 * 2.0) + MARGIN_SECONDS + 0.2)
    drain = NodeDrainParams(eviction_timeout=120)
    soft, _ = limits({"action": "node-drain", "target": {"names": ["a", "b"]},
                      "duration": "10s"}, drain)
    assert soft == pytest.approx(10 + 300 + 120 + MARGIN_SECONDS + 4 * 2 / 20)


def test_no_time_limit_exceeds_max_job_seconds() -> None:
    settings = Settings(max_job_seconds=600)
    soft, hard = limits({**KILL, "duration": "590s", "recovery_timeout": "10s"},
                        settings=settings)
    assert soft == 600
    assert hard == pytest.approx(600 + MARGIN_SECONDS + 0.2)
    assert hard <= 2 * 600


def test_a_job_past_its_soft_limit_reverts_and_ends_aborted_naming_the_limit() -> None:
    """The soft limit raises JobTimeLimitExceeded wherever the job is (here: the drain's
    pod listing, hanging); the fault is reverted on the way out, as for a cancel."""
    jobs = FakeJobs()
    app_deployment(jobs.fake, replicas=2, nodes=("n1", "n2"))

    def hang(request: Request) -> Any:
        raise JobTimeLimitExceeded(42.5, jobs.settings)
    jobs.fake.prepend_reactor("list", "pods", hang)
    record = jobs.run({"action": "node-drain", "target": {"names": ["n1"]}, "duration": "60s"})

    assert record.status == JobStatus.ABORTED
    assert record.reason == ("aborted: the job ran past its time limit of 42.5s (its duration, "
                             "recovery timeout and probes plus a margin, at most "
                             "PYSTOL_MAX_JOB_SECONDS=3600)")
    [cordon] = record.result.changes
    assert cordon.reverted_at is not None
    assert not (jobs.fake.get("Node", None, "n1") or {})["spec"].get("unschedulable")
    assert jobs.journal_entries() == []
