"""PystolAction specs <-> the job model: camelCase, field paths, the original Pystol's shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from pystol_api.crds import crd_dir
from pystol_api.watcher.cr_mapping import (
    ACTIONS,
    CLUSTER_ACTIONS,
    CLUSTER_SCHEDULES,
    GROUP,
    JOB_FIELDS,
    LEGACY_FIELDS,
    SCHEDULE_FIELDS,
    SCHEDULES,
    TARGET_FIELDS,
    VERSION,
    CrInvalid,
    action_job_spec,
    action_status,
    camel_path,
    job_spec_from_cr,
    job_spec_to_cr,
    legacy_job_spec,
    refused_status,
    schedule_invalid,
    schedule_spec_from_cr,
    schedule_spec_to_cr,
    schedule_status,
    to_camel,
    to_snake,
)
from pystol_worker.actions.registry import default_registry
from pystol_worker.core.model import (
    Change,
    HttpProbe,
    JobRecord,
    JobSpec,
    JobStatus,
    Source,
    Target,
    TargetMode,
    TargetRef,
)
from pystol_worker.core.probe_model import (
    ErrorBudgetGuard,
    K8sProbe,
    PrometheusProbe,
    RunProperties,
)
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.validation import JobInvalid, validate_job

SETTINGS = Settings()

# Every JobSpec field with a value other than its default (Target.amount is normalised to
# mode fixed by the model, so it has its own test).
FULL_SPEC = JobSpec(
    action="pod-kill",
    target=Target(namespaces=["shop", "payments"], label_selector="app=web,tier!=db",
                  field_selector="status.phase=Running", names=["worker-a"], max_targets=5,
                  min_available="50%", mode=TargetMode.FIXED_PERCENT, value=12.5),
    params={"grace_period_seconds": 0, "distribution": "poisson", "seed": 7},
    duration=90, recovery_timeout="5m",
    probes=[HttpProbe(name="web-ok", mode="sot", url="http://web.shop/healthz",
                      expect_status=204, max_latency="1s", body_contains="ok",
                      status_range=(200, 299), weight=3,
                      run={"timeout": "2.5s", "attempts": 2})],
    guard={"endpoint": "main", "query": "slo:burn_rate5m", "max": 1.0, "on_error": "run"},
    dry_run=True, on_conflict="reject", idempotency_key="key-1")


def crd(name: str) -> dict[str, Any]:
    documents = list(yaml.safe_load_all((crd_dir() / f"{name}.yaml").read_text()))
    return documents[0]


def spec_schema() -> dict[str, Any]:
    version = crd(f"{ACTIONS}.{GROUP}")["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def problems(error: CrInvalid) -> dict[str, str]:
    return {p.loc: p.msg for p in error.problems}


def validated_problems(spec: dict[str, Any]) -> dict[str, str]:
    mapped = action_job_spec(spec)
    with pytest.raises(JobInvalid) as caught:
        validate_job(mapped.spec, default_registry(), SETTINGS)
    return problems(mapped.invalid(caught.value))


# -- names and round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(("snake", "camel"), [
    ("label_selector", "labelSelector"), ("dry_run", "dryRun"), ("action", "action"),
    ("grace_period_seconds", "gracePeriodSeconds"), ("p99_latency", "p99Latency"),
    ("recovery_timeout", "recoveryTimeout"), ("expect_status", "expectStatus")])
def test_names_convert_both_ways(snake: str, camel: str) -> None:
    assert to_camel(snake) == camel
    assert to_snake(camel) == snake
    assert to_snake(snake) == snake


def test_every_job_spec_field_round_trips_in_camel_case() -> None:
    cr = job_spec_to_cr(FULL_SPEC)
    # `experiment` is the engine's link from a step job to its run: never in a CR.
    assert set(cr) == {to_camel(name) for name in JobSpec.model_fields} - {"experiment"}
    assert set(cr["target"]) == {to_camel(n) for n in Target.model_fields} - {"amount"}
    assert set(cr["probes"][0]) == {to_camel(n) for n in HttpProbe.model_fields} \
        - {"type", "service"}
    assert cr["probes"][0]["run"] == {"timeout": "2.5s", "attempts": 2}
    assert cr["probes"][0]["expectStatus"] == 204 and cr["probes"][0]["maxLatency"] == "1s"
    assert cr["guard"]["onError"] == "run"
    assert cr["target"]["labelSelector"] == "app=web,tier!=db"
    assert cr["target"]["minAvailable"] == "50%"
    assert cr["params"] == {"gracePeriodSeconds": 0, "distribution": "poisson", "seed": 7}
    assert cr["duration"] == "90s" and cr["recoveryTimeout"] == "5m"
    assert cr["dryRun"] is True and cr["onConflict"] == "reject"
    back = job_spec_from_cr(cr)
    assert back == FULL_SPEC
    assert job_spec_to_cr(back) == cr


def test_a_minimal_spec_round_trips_and_keeps_defaults_out() -> None:
    spec = JobSpec(action="node-cordon", target=Target(names=["worker-a"]), duration=30)
    cr = job_spec_to_cr(spec)
    assert cr == {"action": "node-cordon", "target": {"names": ["worker-a"]},
                  "duration": "30s"}
    assert job_spec_from_cr(cr) == spec


def test_amount_is_the_original_fixed_count() -> None:
    spec = job_spec_from_cr({"action": "node-drain", "target": {"amount": 2}})
    assert spec.target.mode == TargetMode.FIXED and spec.target.value == 2
    assert job_spec_to_cr(spec)["target"] == {"mode": "fixed", "value": 2}


def test_params_accept_camel_or_snake_keys() -> None:
    camel = job_spec_from_cr({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                              "params": {"gracePeriodSeconds": 3}})
    snake = job_spec_from_cr({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                              "params": {"grace_period_seconds": 3}})
    assert camel.params == snake.params == {"grace_period_seconds": 3}
    with pytest.raises(CrInvalid) as caught:
        job_spec_from_cr({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                          "params": {"gracePeriodSeconds": 3, "grace_period_seconds": 3}})
    assert "spec.params.grace_period_seconds" in problems(caught.value)


# -- field paths in camelCase -------------------------------------------------------------------


@pytest.mark.parametrize(("loc", "path"), [
    ("target.label_selector", "spec.target.labelSelector"),
    ("target.namespaces[0]", "spec.target.namespaces[0]"),
    ("params.grace_period_seconds", "spec.params.gracePeriodSeconds"),
    ("params.containers.1", "spec.params.containers[1]"),
    (("probes", 0, "expect_status"), "spec.probes[0].expectStatus"),
    (("target", "min_available", "int"), "spec.target.minAvailable"),
    ("duration", "spec.duration"), ("", "spec")])
def test_job_paths_become_cr_paths(loc: Any, path: str) -> None:
    assert camel_path(loc) == path


def test_model_errors_name_the_camel_case_fields() -> None:
    with pytest.raises(CrInvalid) as caught:
        job_spec_from_cr({"action": "pod-kill",
                          "target": {"namespaces": ["Shop"], "labelSelector": "x" * 2000,
                                     "mode": "fixed"},
                          "recoveryTimeout": "soon",
                          "probes": [{"url": "ftp://x", "expectStatus": 42}],
                          "onConflict": "panic"})
    found = problems(caught.value)
    assert "not a valid namespace name" in found["spec.target.namespaces[0]"]
    assert "spec.target.labelSelector" in found
    assert "mode fixed needs a value" in found["spec.target.value"]
    assert "invalid duration 'soon'" in found["spec.recoveryTimeout"]
    assert "spec.probes[0].url" in found and "spec.probes[0].expectStatus" in found
    assert "spec.onConflict" in found


def test_unknown_and_snake_case_fields_are_refused_with_a_hint() -> None:
    with pytest.raises(CrInvalid) as caught:
        job_spec_from_cr({"action": "pod-kill", "dry_run": True, "colour": "red",
                          "target": {"namespaces": ["shop"], "label_selector": "app=web"},
                          "probes": [{"url": "http://x", "expect_status": 200}]})
    found = problems(caught.value)
    assert found["spec.dry_run"] == "unknown field (fields are camelCase: dryRun)"
    assert found["spec.target.label_selector"].endswith("labelSelector)")
    assert found["spec.probes[0].expect_status"].endswith("expectStatus)")
    assert found["spec.colour"].startswith("unknown field; known: action, target")


def test_validation_problems_map_to_camel_case_paths() -> None:
    found = validated_problems({
        "action": "pod-kill",
        "target": {"namespaces": ["shop", "kube-system"], "labelSelector": "app in (",
                   "names": ["worker-a"]},
        "params": {"gracePeriodSeconds": -1, "distribution": "poisson"}})
    assert "protected" in found["spec.target.namespaces[1]"]
    assert "spec.target.labelSelector" in found
    assert "labelSelector or fieldSelector" in found["spec.target.names"]
    assert "greater than or equal to 0" in found["spec.params.gracePeriodSeconds"]
    found = validated_problems({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                                "params": {"distribution": "poisson"}})
    assert "needs a duration" in found["spec.params.distribution"]


def test_unknown_action_and_params_are_reported_at_their_fields() -> None:
    assert "unknown action 'pod-explode'" in validated_problems(
        {"action": "pod-explode", "target": {"namespaces": ["shop"]}})["spec.action"]
    found = validated_problems({"action": "pod-kill", "target": {"namespaces": ["shop"]},
                                "params": {"gracePeriod": 1}})
    assert "Extra inputs" in found["spec.params.gracePeriod"]


# -- the CRD mirrors the model ------------------------------------------------------------------


def test_crd_spec_schema_mirrors_the_job_model() -> None:
    schema = spec_schema()
    assert set(schema["properties"]) == (set(JOB_FIELDS) - {"experiment"}) | LEGACY_FIELDS
    assert set(schema["properties"]["target"]["properties"]) == set(TARGET_FIELDS)
    probe = schema["properties"]["probes"]["items"]["properties"]
    # One schema for the three probe kinds: every field of each (the model checks which
    # fields go with which `type`).
    assert set(probe) == {to_camel(name) for model in (HttpProbe, K8sProbe, PrometheusProbe)
                          for name in model.model_fields}
    assert set(probe["run"]["properties"]) == {to_camel(n) for n in RunProperties.model_fields}
    assert set(schema["properties"]["guard"]["properties"]) == {
        to_camel(name) for name in ErrorBudgetGuard.model_fields}
    target = schema["properties"]["target"]["properties"]
    assert target["mode"]["enum"] == [mode.value for mode in TargetMode]
    assert schema["properties"]["onConflict"]["enum"] == ["wait", "reject"]
    assert schema["oneOf"] == [{"required": ["action", "target"]}, {"required": ["role"]}]
    # Every example spec of these tests passes the CRD's own constraints.
    assert target["namespaces"]["maxItems"] == Target.model_fields["namespaces"].metadata[0] \
        .max_length


def test_crds_have_status_printer_columns_and_short_names() -> None:
    action = crd(f"{ACTIONS}.{GROUP}")
    version = action["spec"]["versions"][0]
    assert version["name"] == VERSION and version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [name for name, c in columns.items() if not c.get("priority")] == \
        ["Action", "Phase", "Job", "Age"]
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Age"]["type"] == "date"
    assert "pa" in action["spec"]["names"]["shortNames"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed",
                                       "Aborted", "Cancelled", "Skipped"]
    peering = list(yaml.safe_load_all((crd_dir() / "kopfpeerings.kopf.dev.yaml").read_text()))
    assert {d["metadata"]["name"] for d in peering} == {"clusterkopfpeerings.kopf.dev",
                                                         "kopfpeerings.kopf.dev"}


@pytest.mark.parametrize("namespaced, cluster, kind, short", [
    (ACTIONS, CLUSTER_ACTIONS, "PystolClusterAction", "pca"),
    (SCHEDULES, CLUSTER_SCHEDULES, "PystolClusterSchedule", "pcs"),
])
def test_cluster_scoped_kinds_mirror_the_namespaced_ones(namespaced: str, cluster: str,
                                                         kind: str, short: str) -> None:
    # Node-level and cluster-wide chaos by custom resource: only cluster admins can create
    # a cluster-scoped object. Same spec, status, columns and subresources.
    source, copy = crd(f"{namespaced}.{GROUP}"), crd(f"{cluster}.{GROUP}")
    assert source["spec"]["scope"] == "Namespaced" and copy["spec"]["scope"] == "Cluster"
    assert copy["spec"]["group"] == GROUP and copy["metadata"]["name"] == f"{cluster}.{GROUP}"
    names = copy["spec"]["names"]
    assert names["kind"] == kind and names["plural"] == cluster
    assert names["listKind"] == f"{kind}List" and names["shortNames"] == [short]
    assert names["categories"] == source["spec"]["names"]["categories"]
    [version], [original] = copy["spec"]["versions"], source["spec"]["versions"]
    assert {k: v for k, v in version.items() if k != "schema"} == \
        {k: v for k, v in original.items() if k != "schema"}
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["properties"] == original["schema"]["openAPIV3Schema"]["properties"]
    assert schema["required"] == original["schema"]["openAPIV3Schema"]["required"]


# -- the original Pystol's PystolAction -----------------------------------------------------------

# As the original `pystol run --collection actions --role ... --extra-vars ...` created them
# (pystol-operator/pystol/operator.py: insert_pystol_object), with the extra vars of the
# roles' READMEs (pystol/pystol-galaxy, actions/roles/*/README.md).
KILLPODS_VARS = ('{"pystol_killpods_namespace":"default","pystol_killpods_distribution":'
                 '"poisson","pystol_killpods_amount":3}')
DRAINNODES_VARS = ('{"pystol_drainnodes_amount":1,"pystol_drainnodes_names":["minikube", '
                   '"node2"],"pystol_drainnodes_duration":60}')
ORIGINAL_KILLPODS = """
apiVersion: pystol.org/v1alpha1
kind: PystolAction
metadata:
  name: pystol-action-pystol-actions-killpods-nthkp
spec:
  namespace: pystol
  collection: actions
  role: killpods
  source: ""
  extra_vars: '{killpods_vars}'
  action_state: PystolActionCreating
  workflow_state: PystolOperatorWaitingAction
  action_stderr: "{}"
  action_stdout: "{}"
""".replace("{killpods_vars}", KILLPODS_VARS)
ORIGINAL_DRAINNODES = """
apiVersion: pystol.org/v1alpha1
kind: PystolAction
metadata:
  name: pystol-action-pystol-actions-drainnodes-a1b2c
spec:
  namespace: pystol
  collection: actions
  role: drainnodes
  source: ""
  extra_vars: '{drainnodes_vars}'
  action_state: PystolActionCreating
  workflow_state: PystolOperatorWaitingAction
  action_stderr: "{}"
  action_stdout: "{}"
""".replace("{drainnodes_vars}", DRAINNODES_VARS)
# The ClusterServiceVersion's alm-examples (pystol.v0.8.17).
ORIGINAL_PINGTEST = """
apiVersion: pystol.org/v1alpha1
kind: PystolAction
metadata:
  name: pystol-action-pystol-actions-pingtest-8nviz
spec:
  action_state: PystolActionCreating
  workflow_state: PystolOperatorWaitingAction
  source: ""
  namespace: pystol
  collection: actions
  role: pingtest
  extra_vars: "{}"
  action_stderr: "{}"
  action_stdout: "{}"
"""


def original(manifest: str) -> dict[str, Any]:
    return yaml.safe_load(manifest)["spec"]


def test_killpods_maps_onto_pod_kill() -> None:
    mapped = action_job_spec(original(ORIGINAL_KILLPODS))
    assert mapped.legacy_role == "killpods"
    spec = mapped.spec
    assert spec.action == "pod-kill"
    assert spec.target.namespaces == ["default"]
    assert spec.target.field_selector == "status.phase=Running"  # the original's candidates
    assert (spec.target.mode, spec.target.value) == (TargetMode.FIXED, 3)
    assert spec.params == {"distribution": "poisson"}
    assert spec.duration == 100  # 10 histogram bins, 10 s apart
    validate_job(spec, default_registry(), SETTINGS)


def test_killpods_takes_ansible_style_values_and_short_names() -> None:
    # The role README's local example passes numbers as strings.
    spec = action_job_spec({"role": "killpods", "extra_vars": {
        "namespace": "shop", "amount": "1", "distribution": "uniform", "duration": "30s",
        "ansible_python_interpreter": "/usr/bin/python3",
        "pystol_action_id": "pystol-action-pystol-actions-killpods-nthkp"}}).spec
    assert spec.target.namespaces == ["shop"] and spec.target.value == 1
    assert spec.params == {"distribution": "uniform"} and spec.duration == 30


def test_drainnodes_maps_onto_node_drain_and_names_take_precedence() -> None:
    mapped = action_job_spec(original(ORIGINAL_DRAINNODES))
    spec = mapped.spec
    assert spec.action == "node-drain"
    assert spec.target.names == ["minikube", "node2"]
    assert spec.target.mode == TargetMode.ONE and spec.target.value is None  # amount skipped
    assert spec.duration == 60
    validate_job(spec, default_registry(), SETTINGS)

    by_amount = action_job_spec({"role": "drainnodes", "collection": "actions",
                                 "extra_vars": '{"pystol_drainnodes_amount": 2, '
                                               '"pystol_drainnodes_names": "[]"}'}).spec
    assert by_amount.target.names == []
    assert (by_amount.target.mode, by_amount.target.value) == (TargetMode.FIXED, 2)
    assert by_amount.duration == 60  # the Ansible module's documented default
    validate_job(by_amount, default_registry(), SETTINGS)


def test_pingtest_maps_onto_http_probe() -> None:
    mapped = action_job_spec(original(ORIGINAL_PINGTEST), node_address=lambda: "10.0.0.7")
    spec = mapped.spec
    assert spec.action == "http-probe"
    # The original pinged the first node's InternalIP twice; over HTTP that node answers
    # on kube-proxy's health port.
    assert spec.params == {"url": "http://10.0.0.7:10256/healthz", "count": 2}
    validate_job(spec, default_registry(), SETTINGS)

    with_url = action_job_spec({"role": "pingtest", "extra_vars": {
        "pystol_pingtest_url": "http://web.shop/healthz", "pystol_pingtest_count": 5}},
        node_address=lambda: pytest.fail("not needed"))
    assert with_url.spec.params == {"url": "http://web.shop/healthz", "count": 5}
    ipv6 = action_job_spec({"role": "pingtest"}, node_address=lambda: "fd00::7").spec
    assert ipv6.params["url"] == "http://[fd00::7]:10256/healthz"


def test_pingtest_without_any_address_says_what_to_set() -> None:
    with pytest.raises(CrInvalid) as caught:
        action_job_spec(original(ORIGINAL_PINGTEST), node_address=lambda: None)
    assert "pystol_pingtest_url" in problems(caught.value)[
        "spec.extra_vars.pystol_pingtest_url"]


@pytest.mark.parametrize(("spec", "path", "text"), [
    ({"role": "scaledown", "extra_vars": "{}"}, "spec.role", "unknown role 'scaledown'"),
    ({"role": "killpods", "collection": "mine", "extra_vars": '{"namespace": "a", '
      '"amount": 1}'}, "spec.collection", "not built in"),
    ({"role": "killpods", "extra_vars": "{not json"}, "spec.extra_vars", "not valid JSON"),
    ({"role": "killpods", "extra_vars": '{"pystol_killpods_namespace": "shop"}'},
     "spec.extra_vars.pystol_killpods_amount", "required"),
    ({"role": "killpods", "extra_vars": '{"pystol_killpods_namespace": "shop", '
      '"pystol_killpods_amout": 2, "pystol_killpods_amount": 1}'},
     "spec.extra_vars.pystol_killpods_amout", "unknown variable"),
    ({"role": "killpods", "extra_vars": {"pystol_killpods_namespace": "shop",
                                         "pystol_killpods_amount": 0}},
     "spec.extra_vars.pystol_killpods_amount", "at least 1"),
    ({"role": "killpods", "extra_vars": {"pystol_killpods_namespace": "shop",
                                         "pystol_killpods_amount": 1,
                                         "pystol_killpods_distribution": "gauss"}},
     "spec.extra_vars.pystol_killpods_distribution", "unsupported distribution"),
    ({"role": "drainnodes", "extra_vars": {"pystol_drainnodes_duration": 5}},
     "spec.extra_vars.pystol_drainnodes_amount", "required unless"),
    ({"role": "drainnodes", "extra_vars": {"amount": 1, "pystol_drainnodes_amount": 1}},
     "spec.extra_vars.amount", "given twice"),
    ({"role": "killpods", "extra_vars": {"pystol_killpods_namespace": "Bad_NS",
                                         "pystol_killpods_amount": 1}},
     "spec.extra_vars.pystol_killpods_namespace", "not a valid namespace"),
    ({"role": "killpods", "dryRun": True}, "spec.dryRun", "do not mix"),
    ({"action": "pod-kill", "role": "killpods"}, "spec", "not both"),
])
def test_legacy_problems_point_at_the_original_fields(spec: dict[str, Any], path: str,
                                                      text: str) -> None:
    with pytest.raises(CrInvalid) as caught:
        action_job_spec(spec)
    found = problems(caught.value)
    assert path in found, found
    assert text in found[path]


def test_legacy_validation_problems_point_at_the_variable() -> None:
    mapped = legacy_job_spec({"role": "killpods", "extra_vars": {
        "pystol_killpods_namespace": "kube-system", "pystol_killpods_amount": 1}})
    with pytest.raises(JobInvalid) as caught:
        validate_job(mapped.spec, default_registry(), SETTINGS)
    found = problems(mapped.invalid(caught.value))
    assert "protected" in found["spec.extra_vars.pystol_killpods_namespace"]


# -- status ---------------------------------------------------------------------------------------

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def record(status: JobStatus, **changes: Any) -> JobRecord:
    base = JobRecord(id="j-1", spec=JobSpec(action="pod-kill",
                                            target=Target(namespaces=["shop"])),
                     status=status, source=Source.CR, submitter="shop/kill", created_at=T0)
    return base.model_copy(update=changes)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_status_follows_the_job() -> None:
    queued = action_status(record(JobStatus.QUEUED), 1, now=T0)
    assert queued["phase"] == "Pending" and queued["jobId"] == "j-1"
    assert queued["action"] == "pod-kill" and queued["observedGeneration"] == 1
    assert "result" not in queued
    assert conditions(queued)["Accepted"]["status"] == "True"
    assert conditions(queued)["Succeeded"]["status"] == "Unknown"

    running = action_status(record(JobStatus.RUNNING, started_at=T0, worker="w1"), 1,
                            queued["conditions"], now=T0 + timedelta(seconds=5))
    assert running["phase"] == "Running" and running["startedAt"] == "2026-01-02T03:04:05.678Z"
    assert running["message"] == "job j-1 running on w1"
    # Accepted did not change: its transition time stays.
    assert conditions(running)["Accepted"]["lastTransitionTime"] == "2026-01-02T03:04:05.678Z"

    done = record(JobStatus.SUCCEEDED, started_at=T0, finished_at=T0 + timedelta(seconds=9),
                  reason="1 target(s) affected")
    done.metrics.targets_selected = done.metrics.targets_affected = 1
    done.metrics.recovery_seconds = 2.34567
    done.metrics.injected_at = T0
    done.result.changes = [Change(target=TargetRef(kind="Pod", namespace="shop", name="web-1"),
                                  action="deleted", at=T0)]
    succeeded = action_status(done, 1, running["conditions"], now=T0 + timedelta(seconds=9))
    assert succeeded["phase"] == "Succeeded"
    assert succeeded["message"] == "job j-1 succeeded: 1 target(s) affected"
    assert succeeded["finishedAt"] == "2026-01-02T03:04:14.678Z"
    assert succeeded["result"] == {"targetsSelected": 1, "targetsAffected": 1,
                                   "recoverySeconds": 2.346,
                                   "injectedAt": "2026-01-02T03:04:05.678Z",
                                   "changes": ["deleted Pod shop/web-1"], "changesTotal": 1}
    ready = conditions(succeeded)["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "Succeeded"
    assert ready["lastTransitionTime"] == "2026-01-02T03:04:14.678Z"

    aborted = action_status(record(JobStatus.ABORTED, reason="aborted: cancelled by x"), 2)
    assert aborted["phase"] == "Aborted"
    assert conditions(aborted)["Succeeded"]["status"] == "False"
    assert conditions(aborted)["Succeeded"]["reason"] == "Aborted"


def test_refused_status_is_failed_with_the_reason() -> None:
    status = refused_status("InvalidSpec", "invalid spec: spec.action: unknown", 3, "x")
    assert status["phase"] == "Failed" and status["jobId"] is None
    assert status["message"] == "invalid spec: spec.action: unknown"
    assert status["observedGeneration"] == 3
    assert {c["status"] for c in status["conditions"]} == {"False"}
    assert {c["reason"] for c in status["conditions"]} == {"InvalidSpec"}


# -- PystolSchedule -------------------------------------------------------------------------------


def schedule_crd_spec() -> dict[str, Any]:
    version = crd(f"pystolschedules.{GROUP}")["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_every_schedule_field_round_trips() -> None:
    from pystol_worker.schedules import ScheduleSpec

    spec = ScheduleSpec(cron="*/5 9-17 * * mon-fri", time_zone="Europe/Berlin",
                        windows=["mon-fri 09:00-17:00"], excluded_dates=["2026-12-24"],
                        concurrency_policy="Replace", starting_deadline_seconds=60,
                        history_limit=5, paused=True,
                        template=FULL_SPEC.model_copy(update={"idempotency_key": None}))
    cr = schedule_spec_to_cr(spec)
    assert set(cr) == set(SCHEDULE_FIELDS) - {"interval", "mtbf", "experimentRef"}
    assert cr["schedule"] == "*/5 9-17 * * mon-fri" and cr["suspend"] is True
    assert cr["concurrencyPolicy"] == "Replace" and cr["startingDeadlineSeconds"] == 60
    assert cr["template"]["target"]["labelSelector"] == "app=web,tier!=db"
    assert schedule_spec_from_cr(cr) == spec
    for timing in ({"interval": "30m"}, {"mtbf": "1h"}):
        other = schedule_spec_from_cr({**timing, "template": {
            "action": "pod-kill", "target": {"namespaces": ["shop"]}}})
        assert schedule_spec_from_cr(schedule_spec_to_cr(other)) == other
    # A schedule of a stored experiment: experimentRef instead of a template.
    experiment = schedule_spec_from_cr({"interval": "1h", "experimentRef": "web-survives"})
    assert experiment.experiment == "web-survives" and experiment.template is None
    assert schedule_spec_to_cr(experiment) == {"interval": "1h", "experimentRef": "web-survives"}
    with pytest.raises(CrInvalid):
        schedule_spec_from_cr({"interval": "1h", "experimentRef": "web-survives", "template": {
            "action": "pod-kill", "target": {"namespaces": ["shop"]}}})


def test_schedule_problems_name_the_cr_fields() -> None:
    with pytest.raises(CrInvalid) as caught:
        schedule_spec_from_cr({"schedule": "61 * * * *", "suspend": "maybe",
                               "concurrencyPolicy": "Sometimes", "timeZone": "Mars/Olympus",
                               "template": {"action": "pod-kill", "dry_run": True,
                                            "target": {"namespaces": ["Shop"]}}})
    found = problems(caught.value)
    assert "invalid cron expression" in found["spec.schedule"]
    assert "spec.suspend" in found and "spec.concurrencyPolicy" in found
    assert "unknown time zone" in found["spec.timeZone"]
    assert found["spec.template.dry_run"].endswith("dryRun)")
    with pytest.raises(CrInvalid) as caught:
        schedule_spec_from_cr({"schedule": "@daily", "interval": "5m", "template": {
            "action": "pod-kill", "target": {"namespaces": ["shop"]}}})
    assert "exactly one of schedule, interval or mtbf" in caught.value.problems[0].msg


def test_schedule_validation_problems_name_the_cr_fields() -> None:
    from pystol_worker.schedules import validate_schedule

    spec = schedule_spec_from_cr({"interval": "1h", "template": {
        "action": "pod-kill", "target": {"namespaces": ["kube-system"]},
        "params": {"gracePeriodSeconds": -1}}})
    with pytest.raises(JobInvalid) as caught:
        validate_schedule(spec, default_registry(), SETTINGS)
    found = problems(schedule_invalid(caught.value))
    assert "protected" in found["spec.template.target.namespaces[0]"]
    assert "spec.template.params.gracePeriodSeconds" in found


def test_schedule_crd_mirrors_the_schedule_and_job_models() -> None:
    schema = schedule_crd_spec()
    assert set(schema["properties"]) == set(SCHEDULE_FIELDS)
    template = schema["properties"]["template"]
    action_job = {k: v for k, v in spec_schema()["properties"].items()
                  if k in JOB_FIELDS and k != "idempotencyKey"}
    assert template["properties"] == action_job
    assert template["required"] == ["action", "target"]
    assert schema["properties"]["concurrencyPolicy"]["enum"] == ["Allow", "Forbid", "Replace"]
    version = crd(f"pystolschedules.{GROUP}")["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] \
        == ["Schedule", "Timezone", "Suspend", "Phase", "Last Run", "Next Run", "Age"]


def test_schedule_status_shows_next_and_recent_runs() -> None:
    from pystol_worker.schedules import ScheduleRecord, ScheduleRun

    spec = schedule_spec_from_cr({"interval": "2s", "template": {
        "action": "pod-kill", "target": {"namespaces": ["shop"]}}})
    runs = [ScheduleRun(slot_at=T0 + timedelta(seconds=2), fired_at=T0 + timedelta(seconds=2),
                        decided_at=T0, outcome="skipped", skipped="forbid",
                        reason="previous run still going", count=3),
            ScheduleRun(slot_at=T0, fired_at=T0, decided_at=T0, outcome="started",
                        job_id="j-9", job_status=JobStatus.RUNNING)]
    record = ScheduleRecord(id="cr.shop.s", spec=spec, source=Source.CR, submitter="shop/s",
                            created_at=T0, updated_at=T0,
                            next_run_at=T0 + timedelta(seconds=4), last_runs=runs)
    status = schedule_status(record, 2, now=T0)
    assert status["phase"] == "Active" and status["scheduleId"] == "cr.shop.s"
    assert status["nextRunAt"] == "2026-01-02T03:04:09.678Z"
    assert status["lastRunAt"] == "2026-01-02T03:04:05.678Z" and status["lastJobId"] == "j-9"
    assert status["recentRuns"] == [
        {"slotAt": "2026-01-02T03:04:07.678Z", "outcome": "skipped", "skipped": "forbid",
         "reason": "previous run still going", "count": 3},
        {"slotAt": "2026-01-02T03:04:05.678Z", "outcome": "started", "jobId": "j-9",
         "jobPhase": "Running"}]
    assert status["message"] == "every 2s"
    paused = schedule_status(record.model_copy(update={"spec": spec.model_copy(
        update={"paused": True})}), 2)
    assert paused["phase"] == "Suspended"
