"""PystolExperiment and PystolClusterExperiment: the mapping, the scope rule, the CRDs, and
the watcher's handlers on fakeredis (no kopf loop, no cluster; the experiment service is
the real one, its advances recorded).

Attacks first: a PystolExperiment in `team-a` whose step or probe names `payments`, or a
Node probe, ends Failed/Forbidden and nothing runs; a `status.runId` naming someone
else's run is not followed nor cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
import yaml

from pystol_api.crds import crd_dir
from pystol_api.watcher import experiment_handlers
from pystol_api.watcher.cr_mapping import GROUP, CrInvalid
from pystol_api.watcher.experiment_handlers import abort_experiment, reconcile_experiment
from pystol_api.watcher.experiment_mapping import (
    experiment_spec_from_cr,
    experiment_spec_to_cr,
    scope_problems,
)
from pystol_api.watcher.kinds import PYSTOL_CLUSTER_EXPERIMENT, PYSTOL_EXPERIMENT, CrKind
from pystol_worker.core.experiment_model import ExperimentSpec
from pystol_worker.core.model import Source
from pystol_worker.experiments.service import ExperimentService
from tests.unit.test_watcher_scope import ADMIN, Context, body, make_ctx


def pod_kill(namespace: str | None) -> dict[str, Any]:
    target: dict[str, Any] = {"labelSelector": "app=web"}
    if namespace is not None:
        target["namespaces"] = [namespace]
    return {"action": "pod-kill", "dryRun": True, "target": target}


def cr_spec(step_namespace: str = "team-a", probe_namespace: str = "team-a",
            probe: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "title": "web survives",
        "hypothesis": {"title": "web answers", "probes": [probe or {
            "type": "http", "name": "web-ok", "mode": "edge",
            "service": {"namespace": probe_namespace, "name": "web", "port": 80,
                        "path": "/healthz"},
            "run": {"timeout": "2s", "attempts": 2}}]},
        "method": [{"type": "serial", "name": "first", "steps": [
            {"type": "action", "name": "kill-one", "weight": 20,
             "job": {**pod_kill(step_namespace), "params": {"gracePeriodSeconds": 0}}},
            {"type": "wait", "name": "settle", "duration": "5s"}]}]}


class ExperimentContext(Context):
    advanced: list[str]

    def experiments(self) -> ExperimentService:
        if self._experiments is None:
            self._experiments = ExperimentService(
                self.redis, self.settings, self.submissions.policy, self.submissions,
                self.advanced.append, audit=self.submissions.audit)
        return self._experiments


@pytest.fixture
def ctx() -> ExperimentContext:
    base = make_ctx()
    made = ExperimentContext(settings=base.settings, redis=base.redis, store=base.store,
                             submissions=base.submissions, registry=base.registry,
                             follower=base.follower,
                             api_client_factory=base.api_client_factory)
    made.patches = []
    made.advanced = []
    return made


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    posted: list[tuple[str, str, bool]] = []

    def event(body: Any, reason: str, message: str, warning: bool = False) -> None:
        posted.append((reason, message, warning))
    monkeypatch.setattr(experiment_handlers, "_event", event)
    return posted


def reconcile(ctx: ExperimentContext, obj: dict[str, Any],
              kind: CrKind = PYSTOL_EXPERIMENT) -> dict[str, Any]:
    patch = kopf.Patch()
    reconcile_experiment(ctx, obj, patch, kind)
    return dict(patch.status)


def experiment(name: str, spec: dict[str, Any], namespace: str | None = "team-a",
               kind: CrKind = PYSTOL_EXPERIMENT, **extra: Any) -> dict[str, Any]:
    return body(name, spec, namespace=namespace, kind=kind, **extra)


def runs(ctx: ExperimentContext) -> list[Any]:
    return ctx.experiments().runs(ADMIN).items


# -- attacks: a PystolExperiment acts only in its own namespace ------------------------------


@pytest.mark.parametrize(("spec", "path"), [
    (cr_spec(step_namespace="payments"), "spec.method[0].steps[0].job.target.namespaces[0]"),
    (cr_spec(probe_namespace="payments"), "spec.hypothesis.probes[0]"),
    (cr_spec(probe={"type": "k8s", "name": "node-ok", "object": {
        "kind": "Node", "name": "worker-a"}}), "spec.hypothesis.probes[0]"),
])
def test_other_namespaces_and_node_probes_are_forbidden_and_nothing_runs(
        ctx: ExperimentContext, events: list[Any], spec: dict[str, Any], path: str) -> None:
    status = reconcile(ctx, experiment("exp", spec))
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "Forbidden"
    assert path in status["message"], status["message"]
    assert runs(ctx) == [] and ctx.advanced == []
    assert events[0][0] == "Forbidden" and events[0][2] is True


def test_an_invalid_spec_fails_naming_the_camel_case_field(ctx: ExperimentContext) -> None:
    spec = cr_spec()
    spec["method"][0]["steps"][0]["job"]["dry_run"] = True
    status = reconcile(ctx, experiment("exp", spec))
    assert status["phase"] == "Failed"
    assert "spec.method[0].steps[0].job.dry_run" in status["message"]
    assert runs(ctx) == []


def test_a_spec_that_names_itself_is_refused(ctx: ExperimentContext) -> None:
    status = reconcile(ctx, experiment("exp", {**cr_spec(), "name": "other"}))
    assert status["phase"] == "Failed" and "spec.name" in status["message"]


def test_a_thousand_deep_spec_fails_without_recursion(ctx: ExperimentContext) -> None:
    step: dict[str, Any] = {"type": "wait", "name": "w", "duration": "1s"}
    for depth in range(1000):
        step = {"type": "serial", "name": f"g{depth}", "steps": [step]}
    status = reconcile(ctx, experiment("deep", {"method": [step]}))
    assert status["phase"] == "Failed"
    assert runs(ctx) == []


# -- a run per generation --------------------------------------------------------------------


def test_a_valid_experiment_starts_one_run_as_the_object(ctx: ExperimentContext) -> None:
    obj = experiment("exp", cr_spec())
    status = reconcile(ctx, obj)
    assert status["phase"] == "Pending", status
    [run] = runs(ctx)
    assert status["runId"] == run.id and ctx.advanced == [run.id]
    assert run.actor is not None and run.actor.uid == obj["metadata"]["uid"]
    assert run.source == Source.CR and run.spec.name == "exp"
    assert run.spec.method[0].steps[0].job.params == {"grace_period_seconds": 0}
    # The same generation again (a restarted watcher, status lost): the same run.
    again = reconcile(ctx, experiment("exp", cr_spec()))
    assert again["runId"] == run.id and len(runs(ctx)) == 1
    # A new generation: a new run.
    changed = reconcile(ctx, experiment("exp", cr_spec(), generation=2,
                                        status={"observedGeneration": 1, "phase": "Pending",
                                                "runId": run.id}))
    assert changed["runId"] != run.id and len(runs(ctx)) == 2


def test_a_cluster_experiment_may_span_namespaces(ctx: ExperimentContext) -> None:
    spec = cr_spec(step_namespace="payments", probe_namespace="team-a")
    status = reconcile(ctx, experiment("wide", spec, namespace=None,
                                       kind=PYSTOL_CLUSTER_EXPERIMENT),
                       PYSTOL_CLUSTER_EXPERIMENT)
    assert status["phase"] == "Pending", status
    assert len(runs(ctx)) == 1


def test_delete_cancels_the_own_run_not_a_foreign_status_run_id(ctx: ExperimentContext) -> None:
    other = ctx.experiments().start(ExperimentSpec.model_validate({
        "name": "theirs", "method": [{"type": "action", "name": "k", "job": {
            "action": "pod-kill", "dry_run": True,
            "target": {"namespaces": ["team-b"], "label_selector": "app=web"}}}]}),
        Source.API, ADMIN)
    obj = experiment("exp", cr_spec(), status={"runId": other.id, "phase": "Running",
                                               "observedGeneration": 1})
    # No run of its own yet: deleting it must not touch the foreign run.
    asyncio.run(abort_experiment(ctx, obj, kopf.Patch(), PYSTOL_EXPERIMENT))
    assert not ctx.experiments().run(other.id).status.terminal
    assert ctx.redis.get(f"pystol:xrun:{other.id}:stop") is None


# -- mapping and CRDs ----------------------------------------------------------------------------


def test_camel_case_spec_round_trips() -> None:
    spec = experiment_spec_from_cr(cr_spec(), "exp")
    assert spec.hypothesis is not None
    assert spec.hypothesis.probes[0].run.attempts == 2
    back = experiment_spec_to_cr(spec)
    assert back["method"][0]["type"] == "serial"
    assert back["method"][0]["steps"][0]["job"]["params"] == {"gracePeriodSeconds": 0}
    assert experiment_spec_from_cr(back, "exp") == spec


def test_scope_problems_name_every_outside_namespace() -> None:
    spec = experiment_spec_from_cr(cr_spec(step_namespace="payments",
                                           probe_namespace="payments"), "exp")
    locs = {problem.loc for problem in scope_problems(spec, "team-a")}
    assert locs == {"spec.method[0].steps[0].job.target.namespaces[0]",
                    "spec.hypothesis.probes[0]"}


def test_unknown_fields_are_refused_with_their_path() -> None:
    spec = cr_spec()
    spec["hypothesis"]["probes"][0]["run"]["stop_on_failure"] = True
    with pytest.raises(CrInvalid) as caught:
        experiment_spec_from_cr(spec, "exp")
    assert any(p.loc == "spec.hypothesis.probes[0].run.stop_on_failure"
               and "stopOnFailure" in p.msg for p in caught.value.problems)


def crd(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((crd_dir() / f"{name}.{GROUP}.yaml").read_text())
    return document


def test_experiment_crds_have_verdict_score_run_columns_and_mirror_each_other() -> None:
    source, copy = crd("pystolexperiments"), crd("pystolclusterexperiments")
    assert source["spec"]["scope"] == "Namespaced" and copy["spec"]["scope"] == "Cluster"
    [version], [twin] = source["spec"]["versions"], copy["spec"]["versions"]
    columns = [column["name"] for column in version["additionalPrinterColumns"]
               if not column.get("priority")]
    assert columns == ["Phase", "Verdict", "Score", "Run", "Age"]
    assert version["subresources"] == {"status": {}}
    assert twin["schema"]["openAPIV3Schema"]["properties"] == \
        version["schema"]["openAPIV3Schema"]["properties"]
    assert {k: v for k, v in twin.items() if k != "schema"} == \
        {k: v for k, v in version.items() if k != "schema"}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    from pystol_api.watcher.cr_mapping import to_camel
    assert set(spec) == {to_camel(name) for name in ExperimentSpec.model_fields} - {
        "name", "sourceFormat", "sourceDocument"}
    assert "pexp" in source["spec"]["names"]["shortNames"]


# -- every generation's run is the object's (security review M2) -----------------------------


def stop_requested(ctx: ExperimentContext, run_id: str) -> bool:
    return ctx.redis.get(f"pystol:xrun:{run_id}:stop") is not None


def test_a_new_generation_cancels_the_run_of_the_previous_one(
        ctx: ExperimentContext) -> None:
    """Review M2 (a): after a spec edit, two runs of one object went on side by side."""
    first = reconcile(ctx, experiment("exp", cr_spec()))
    spec = cr_spec()
    spec["title"] = "changed"
    second = reconcile(ctx, experiment("exp", spec, generation=2, status=first))
    assert second["runId"] != first["runId"]
    assert stop_requested(ctx, first["runId"])
    assert not stop_requested(ctx, second["runId"])


def test_a_refused_new_generation_still_cancels_the_earlier_run(
        ctx: ExperimentContext) -> None:
    """Review M2 (b): a refused edit cleared `status.runId`, so deleting the object
    cancelled nothing while generation 1's run went on injecting faults."""
    first = reconcile(ctx, experiment("exp", cr_spec()))
    refused = reconcile(ctx, experiment("exp", cr_spec(step_namespace="payments"),
                                        generation=2, status=first))
    assert refused["phase"] == "Failed" and refused["runId"] is None
    assert stop_requested(ctx, first["runId"])


def test_delete_cancels_the_runs_of_every_generation(
        ctx: ExperimentContext, monkeypatch: pytest.MonkeyPatch) -> None:
    first = reconcile(ctx, experiment("exp", cr_spec()))
    # Generation 2 whose status lost the first run (a watcher that died mid-update) and
    # whose own handler never ran: the delete must still find generation 1's run.
    gone = experiment("exp", cr_spec(), generation=2,
                      status={"observedGeneration": 2, "phase": "Failed", "runId": None})
    monkeypatch.setattr(experiment_handlers, "DELETE_WAIT_SECONDS", 0.0)
    with pytest.raises(kopf.TemporaryError):  # still reverting: the object waits
        asyncio.run(abort_experiment(ctx, gone, kopf.Patch(), PYSTOL_EXPERIMENT))
    assert stop_requested(ctx, first["runId"])


def test_the_follow_daemon_moves_on_to_the_new_generations_run(
        ctx: ExperimentContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon that followed generation 1's (now cancelled) run must not write that
    run's status over generation 2's."""
    first = reconcile(ctx, experiment("exp", cr_spec()))
    obj = experiment("exp", cr_spec(), status=first)
    second = reconcile(ctx, experiment("exp", cr_spec(), generation=2, status=first))
    monkeypatch.setattr(experiment_handlers, "FOLLOW_POLL_SECONDS", 0.0)

    class StopAfterOneRound:
        """Not stopped for one round; at its start kopf has updated the live body."""

        def __init__(self) -> None:
            self.rounds = 0

        def __bool__(self) -> bool:
            self.rounds += 1
            if self.rounds == 1:
                obj["status"] = {**first, **second}
            return self.rounds > 1

    asyncio.run(experiment_handlers.follow_experiment(ctx, obj, StopAfterOneRound(),
                                                      PYSTOL_EXPERIMENT))
    assert ctx.patches, "the daemon wrote no status"
    assert {patch[3]["runId"] for patch in ctx.patches} == {second["runId"]}
