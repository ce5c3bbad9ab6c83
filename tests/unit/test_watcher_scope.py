"""A custom resource is an identity: the CR watcher's handlers on fakeredis.

The confused-deputy attacks of issue 12 against the watcher's own code paths (no kopf, no
cluster): a PystolAction acts only in its own namespace, node-level chaos needs a
cluster-scoped PystolClusterAction, a `status.jobId` the object did not write is ignored
and reported, and a status copies nothing but Pystol's own words.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import kopf
import pytest

from pystol_api.watcher import operator
from pystol_api.watcher.cr_mapping import action_status, compact_result
from pystol_api.watcher.kinds import (
    PYSTOL_ACTION,
    PYSTOL_CLUSTER_ACTION,
    PYSTOL_CLUSTER_SCHEDULE,
    PYSTOL_SCHEDULE,
    CrKind,
    cr_identity,
    last_manager,
    owns_job,
)
from pystol_api.watcher.operator import (
    JobFollower,
    WatcherContext,
    abort_action,
    build_registry,
    delete_schedule,
    reconcile_action,
    schedule_id_of,
    sync_schedule,
)
from pystol_worker.actions import default_registry
from pystol_worker.core.access import (
    Actor,
    ActorKind,
    Identity,
    Role,
    RoleAuthority,
)
from pystol_worker.core.model import (
    Change,
    JobRecord,
    JobSpec,
    JobStatus,
    ProbeOutcome,
    Source,
    Target,
    TargetRef,
)
from pystol_worker.core.policy import ActionRule, Policy
from pystol_worker.core.schedule_model import ScheduleSpec
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.submission import SubmissionService
from pystol_worker.schedules import ScheduleNotFound
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from tests.support.recording_queue import RecordingQueue

ADMIN = Identity(Actor(kind=ActorKind.SETTINGS_TOKEN, name="admin"), RoleAuthority(Role.ADMIN))
PROBE_URL = "http://probe.example/healthz"


class Context(WatcherContext):
    """The watcher's context without a cluster: status patches are recorded."""

    patches: list[tuple[str, str | None, str, dict[str, Any]]]

    def patch_status(self, plural: str, namespace: str | None, name: str,
                     status: Any) -> bool:
        self.patches.append((plural, namespace, name, dict(status)))
        return True

    def first_node_address(self) -> str | None:
        return None


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    posted: list[tuple[str, str, bool]] = []

    def event(body: Any, reason: str, message: str, warning: bool = False) -> None:
        posted.append((reason, message, warning))
    monkeypatch.setattr(operator, "_event", event)
    return posted


def make_ctx(policy: Policy | None = None) -> Context:
    client = fakeredis.FakeRedis()
    settings = Settings(protected_namespaces=["kube-system"], allow_protected=False,
                        redis_url="redis://unused")
    store, registry = JobStore(client), default_registry()
    submissions = SubmissionService(store, RecordingQueue(), registry, settings,
                                    HaltSwitch(client), policy=policy)
    ctx = Context(settings=settings, redis=client, store=store, submissions=submissions,
                  registry=registry, follower=JobFollower("redis://unused"),
                  api_client_factory=_no_cluster)
    ctx.patches = []
    return ctx


def _no_cluster() -> Any:
    raise AssertionError("the unit tests talk to no cluster")


@pytest.fixture
def ctx() -> Iterator[Context]:
    yield make_ctx()


def sent(ctx: Context) -> list[str]:
    return ctx.submissions.queue.sent  # type: ignore[attr-defined, no-any-return]


def all_jobs(ctx: Context) -> list[JobRecord]:
    return ctx.store.list(limit=200).items


MANAGED = [
    {"manager": "kubectl-client-side-apply", "operation": "Update",
     "time": "2026-01-02T03:00:00Z"},
    {"manager": "alice-ci", "operation": "Update", "time": "2026-01-02T03:05:00Z"},
    {"manager": "pystol-watcher", "operation": "Update", "subresource": "status",
     "time": "2026-01-02T03:06:00Z"},
    {"manager": "kopf/1.45.2", "operation": "Update", "time": "2026-01-02T03:07:00Z"},
]


def body(name: str, spec: dict[str, Any], namespace: str | None = "team-a",
         kind: CrKind = PYSTOL_ACTION, status: dict[str, Any] | None = None,
         generation: int = 1, uid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid or f"uid-{namespace}-{name}",
                            "generation": generation, "managedFields": MANAGED}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "pystol.org/v1alpha1", "kind": kind.kind, "metadata": meta,
            "spec": spec, "status": status or {}}


def reconcile(ctx: Context, obj: dict[str, Any], kind: CrKind = PYSTOL_ACTION,
              cause: str = "create") -> dict[str, Any]:
    """The status the handler wrote: through kopf's patch, or (a job to follow) itself."""
    patch, before = kopf.Patch(), len(ctx.patches)
    reconcile_action(ctx, obj, patch, cause, kind)
    written = [status for _, _, _, status in ctx.patches[before:]]
    del ctx.patches[before:]
    return {**(written[0] if written else {}), **dict(patch.status)}


def reasons(status: dict[str, Any]) -> set[str]:
    return {c["reason"] for c in status.get("conditions") or ()}


# -- a PystolAction acts only in its own namespace -------------------------------------------


def test_a_pystolaction_naming_another_namespace_fails_forbidden_and_nothing_is_stored(
        ctx: Context, events: list[Any]) -> None:
    status = reconcile(ctx, body("steal", {
        "action": "pod-kill", "target": {"namespaces": ["team-a", "payments"],
                                         "labelSelector": "app=checkout"}}))
    assert status["phase"] == "Failed" and status["jobId"] is None
    assert reasons(status) == {"Forbidden"}
    message = status["message"]
    assert "spec.target.namespaces[1]" in message
    assert "may not run chaos in namespace 'payments'" in message
    assert "PystolAction acts only in its own namespace" in message
    assert all_jobs(ctx) == [] and sent(ctx) == []
    assert [(reason, warning) for reason, _, warning in events] == [("Forbidden", True)]


def test_the_original_shape_is_refused_at_its_variable(ctx: Context, events: list[Any]
                                                       ) -> None:
    status = reconcile(ctx, body("killpods", {
        "role": "killpods", "extra_vars": '{"pystol_killpods_namespace": "payments", '
                                          '"pystol_killpods_amount": 1}'}))
    assert status["phase"] == "Failed" and reasons(status) == {"Forbidden"}
    assert "spec.extra_vars.pystol_killpods_namespace" in status["message"]
    assert all_jobs(ctx) == []


@pytest.mark.parametrize("spec, path", [
    ({"action": "node-drain", "target": {"names": ["worker-b"]}, "dryRun": True},
     "spec.action"),
    ({"action": "node-cordon", "target": {"labelSelector": "pool=a"}, "duration": "1m"},
     "spec.action"),
    ({"action": "cpu-stress", "target": {"namespaces": ["team-a"]}, "duration": "1m",
      "params": {"node": "worker-a"}}, "spec.action"),
    ({"role": "drainnodes", "extra_vars": '{"pystol_drainnodes_amount": 1}'}, "spec.role"),
])
def test_node_level_chaos_by_a_pystolaction_fails_forbidden(ctx: Context, events: list[Any],
                                                            spec: dict[str, Any],
                                                            path: str) -> None:
    status = reconcile(ctx, body("nodes", spec))
    assert status["phase"] == "Failed" and reasons(status) == {"Forbidden"}, status
    assert f"{path}: " in status["message"]
    assert "PystolClusterAction" in status["message"]
    assert all_jobs(ctx) == [] and sent(ctx) == []


def test_a_pystolaction_in_its_own_namespace_runs_as_itself(ctx: Context,
                                                           events: list[Any]) -> None:
    obj = body("kill", {"action": "pod-kill", "target": {"namespaces": ["team-a"]}})
    status = reconcile(ctx, obj)
    assert status["phase"] == "Pending", status
    [record] = all_jobs(ctx)
    assert sent(ctx) == [record.id] and status["jobId"] == record.id
    assert record.submitter == "team-a/kill" and record.source == Source.CR
    assert record.actor == Actor(kind=ActorKind.CUSTOM_RESOURCE, name="team-a/kill",
                                 uid="uid-team-a-kill", resource_kind="PystolAction",
                                 manager="alice-ci")
    assert record.grant is not None and record.grant.namespaces == ["team-a"]
    assert not record.grant.cluster
    assert record.spec.idempotency_key == "pystolaction:uid-team-a-kill:1"


def test_a_url_action_naming_no_namespace_runs_in_the_objects_namespace(
        ctx: Context, events: list[Any]) -> None:
    status = reconcile(ctx, body("probe", {"action": "http-probe", "target": {},
                                           "params": {"url": PROBE_URL, "count": 1}}))
    assert status["phase"] == "Pending", status
    [record] = all_jobs(ctx)
    assert record.spec.target.namespaces == ["team-a"]
    assert record.grant is not None and record.grant.namespaces == ["team-a"]


def test_a_pod_action_naming_no_namespace_is_still_invalid(ctx: Context,
                                                           events: list[Any]) -> None:
    status = reconcile(ctx, body("nowhere", {"action": "pod-kill", "target": {}}))
    assert status["phase"] == "Failed" and reasons(status) == {"InvalidSpec"}
    assert "spec.target.namespaces" in status["message"]


def test_the_admin_policy_refuses_with_the_field(events: list[Any]) -> None:
    ctx = make_ctx(Policy(actions=[ActionRule(namespaces=["shop"], actions=["pod-kill"])]))
    status = reconcile(ctx, body("kill", {"action": "pod-kill",
                                          "target": {"namespaces": ["team-a"]}}))
    assert status["phase"] == "Failed" and reasons(status) == {"PolicyRefused"}
    assert "spec.target.namespaces[0]: the admin policy does not allow pod-kill in " \
           "namespace 'team-a'" in status["message"]
    assert all_jobs(ctx) == []


# -- cluster-scoped kinds ---------------------------------------------------------------------


def test_a_cluster_action_runs_node_level_chaos_as_an_admin(ctx: Context,
                                                           events: list[Any]) -> None:
    obj = body("drain-b", {"action": "node-drain", "target": {"names": ["worker-b"]},
                           "dryRun": True}, namespace=None, kind=PYSTOL_CLUSTER_ACTION)
    status = reconcile(ctx, obj, PYSTOL_CLUSTER_ACTION)
    assert status["phase"] == "Pending", status
    [record] = all_jobs(ctx)
    assert record.submitter == "drain-b"
    assert record.actor is not None and record.actor.resource_kind == "PystolClusterAction"
    assert record.actor.uid == "uid-None-drain-b" and record.actor.manager == "alice-ci"
    assert record.grant is not None and record.grant.cluster
    assert record.spec.idempotency_key == "pystolclusteraction:uid-None-drain-b:1"
    # Found again on resume: not submitted twice.
    obj["status"] = {}
    assert reconcile(ctx, obj, PYSTOL_CLUSTER_ACTION, "resume")["jobId"] == record.id
    assert len(all_jobs(ctx)) == 1 and sent(ctx) == [record.id]


def test_a_cluster_action_still_meets_protected_namespaces_and_the_policy(
        events: list[Any]) -> None:
    ctx = make_ctx(Policy(actions=[ActionRule(namespaces=["shop"], actions=["*"])]))
    protected = reconcile(ctx, body("sys", {"action": "pod-kill", "target": {
        "namespaces": ["kube-system"]}}, namespace=None, kind=PYSTOL_CLUSTER_ACTION),
        PYSTOL_CLUSTER_ACTION)
    assert reasons(protected) == {"InvalidSpec"} and "protected" in protected["message"]
    nodes = reconcile(ctx, body("drain", {"action": "node-drain", "target": {
        "names": ["worker-b"]}}, namespace=None, kind=PYSTOL_CLUSTER_ACTION),
        PYSTOL_CLUSTER_ACTION)
    assert reasons(nodes) == {"PolicyRefused"}
    assert "spec.action: the admin policy does not allow node-drain at cluster scope" \
        in nodes["message"]
    assert all_jobs(ctx) == []


def test_identities_of_the_four_kinds() -> None:
    namespaced = cr_identity(PYSTOL_ACTION, body("a", {})["metadata"])
    assert namespaced.authority == RoleAuthority(Role.OPERATOR, frozenset({"team-a"}))
    assert namespaced.actor.submitter == "team-a/a"
    schedule = cr_identity(PYSTOL_SCHEDULE, body("s", {})["metadata"])
    assert schedule.actor.resource_kind == "PystolSchedule"
    assert schedule.authority == RoleAuthority(Role.OPERATOR, frozenset({"team-a"}))
    for kind in (PYSTOL_CLUSTER_ACTION, PYSTOL_CLUSTER_SCHEDULE):
        identity = cr_identity(kind, body("c", {}, namespace=None)["metadata"])
        assert identity.authority == RoleAuthority(Role.ADMIN)
        assert identity.actor.name == "c" and identity.actor.resource_kind == kind.kind


def served(clusterwide: bool) -> set[str]:
    registry = build_registry(make_ctx(), clusterwide=clusterwide)
    return {str(handler.selector.any_name)
            for handlers in (registry._changing, registry._spawning)
            for handler in handlers.get_all_handlers() if handler.selector is not None}


def test_cluster_scoped_kinds_are_served_cluster_wide_only() -> None:
    # A watcher confined to a namespace has neither their RBAC nor their peering.
    assert served(clusterwide=True) == {"pystolactions", "pystolclusteractions",
                                        "pystolschedules", "pystolclusterschedules",
                                        "pystolexperiments", "pystolclusterexperiments"}
    assert served(clusterwide=False) == {"pystolactions", "pystolschedules",
                                         "pystolexperiments"}


def test_last_manager_is_the_latest_change_that_is_not_the_watchers() -> None:
    assert last_manager({"managedFields": MANAGED}) == "alice-ci"
    assert last_manager({"managedFields": list(reversed(MANAGED))}) == "alice-ci"
    assert last_manager({"managedFields": [{"manager": "kubectl", "time": None}]}) == "kubectl"
    assert last_manager({}) is None
    assert last_manager({"managedFields": [MANAGED[2], MANAGED[3]]}) is None


# -- the watcher does not trust status it did not write --------------------------------------


def victim_job(ctx: Context, **params: Any) -> JobRecord:
    spec = JobSpec(action="http-probe", target=Target(namespaces=["payments"]),
                   params={"url": PROBE_URL, "count": 100, **params})
    record, _ = ctx.submissions.submit(spec, Source.API, ADMIN)
    return record


def finish(ctx: Context, job_id: str, status: JobStatus, reason: str) -> None:
    ctx.store.claim(job_id, "worker-1")
    ctx.store.finish(job_id, status, reason, error="Traceback: secret stuff")


def test_ownership_needs_the_objects_uid_or_for_old_records_its_name() -> None:
    meta = body("mine", {})["metadata"]
    spec = JobSpec(action="pod-kill", target=Target(namespaces=["team-a"]))
    base = JobRecord(id="j-1", spec=spec, source=Source.CR, submitter="team-a/mine",
                     created_at=datetime.now(UTC))
    assert owns_job(PYSTOL_ACTION, meta, base)  # written before records had an actor
    assert not owns_job(PYSTOL_ACTION, meta, base.model_copy(update={"submitter": "x/mine"}))
    assert not owns_job(PYSTOL_ACTION, meta, base.model_copy(update={"source": Source.API}))
    mine = Actor(kind=ActorKind.CUSTOM_RESOURCE, name="team-a/mine", uid=meta["uid"],
                 resource_kind="PystolAction")
    assert owns_job(PYSTOL_ACTION, meta, base.model_copy(update={"actor": mine}))
    # Same name, another object (deleted and created again): not its job.
    other = mine.model_copy(update={"uid": "another-uid"})
    assert not owns_job(PYSTOL_ACTION, meta, base.model_copy(update={"actor": other}))
    # A cluster-scoped object never falls back to names.
    cluster_meta = body("mine", {}, namespace=None)["metadata"]
    assert not owns_job(PYSTOL_CLUSTER_ACTION, cluster_meta,
                        base.model_copy(update={"submitter": "mine"}))


def test_a_foreign_job_id_is_neither_followed_nor_copied(ctx: Context,
                                                         events: list[Any]) -> None:
    victim = victim_job(ctx)
    finish(ctx, victim.id, JobStatus.SUCCEEDED, "victim's private reason")
    obj = body("mine", {"action": "http-probe", "target": {},
                        "params": {"url": PROBE_URL, "count": 1}})
    own = reconcile(ctx, obj)["jobId"]
    finish(ctx, own, JobStatus.SUCCEEDED, "1 of 1 calls answered")
    ctx.mirror.refresh_dirty(ctx)
    obj["status"] = {"jobId": victim.id, "phase": "Running", "observedGeneration": 1}
    events.clear()

    status = reconcile(ctx, obj, cause="resume")  # a watcher (re)starting finds it
    assert status["jobId"] == own  # its own job again, not the victim's
    assert status["phase"] == "Succeeded"
    assert "victim's private reason" not in str(status)
    assert "Traceback" not in str(status)
    trusted = {c["type"]: c for c in status["conditions"]}["JobIdTrusted"]
    assert trusted["status"] == "False" and trusted["reason"] == "ForeignJobId"
    assert victim.id in trusted["message"]
    assert ("ForeignJobId", True) in [(reason, warning) for reason, _, warning in events]
    assert victim.id not in ctx.mirror.following()
    assert not ctx.store.get(victim.id, False).cancel_requested


def test_a_foreign_job_id_without_a_job_of_its_own_is_not_followed(
        ctx: Context, events: list[Any]) -> None:
    victim = victim_job(ctx)
    obj = body("forged", {"action": "pod-kill", "target": {"namespaces": ["team-a"]}},
               status={"jobId": victim.id, "phase": "Running", "observedGeneration": 1})
    status = reconcile(ctx, obj, cause="resume")
    assert status["jobId"] != victim.id and "ForeignJobId" in reasons(status)
    assert ctx.mirror.following() == {status["jobId"]}
    # The victim's job changing writes nothing into this object.
    finish(ctx, victim.id, JobStatus.FAILED, "victim's private reason")
    ctx.mirror.changed(victim.id, json.dumps({"kind": "failed"}))
    ctx.mirror.refresh_dirty(ctx)
    assert ctx.patches == []


# -- one status mirror for the whole watcher (no daemon per object) --------------------------


def said(kind: str) -> str:
    """A timeline message as the job store publishes it (only its kind matters here)."""
    return json.dumps({"at": "2026-01-02T03:04:05Z", "kind": kind, "message": "",
                       "data": {}})


def test_the_mirror_follows_a_queued_job_into_its_status_and_posts_only_the_end(
        ctx: Context, events: list[Any]) -> None:
    obj = body("mine", {"action": "pod-kill", "target": {"namespaces": ["team-a"]},
                        "dryRun": True})
    status = reconcile(ctx, obj)
    job_id = status["jobId"]
    assert status["phase"] == "Pending" and "JobQueued" in reasons(status)
    assert events == []  # queued: the status says so, no Event per object
    assert ctx.mirror.following() == {job_id}
    # Messages that change nothing the status shows cost no read.
    ctx.mirror.changed(job_id, said("queued"))
    ctx.mirror.changed(job_id, said("custom-resource"))
    assert ctx.mirror.take_dirty() == []

    ctx.store.claim(job_id, "worker-1")
    ctx.mirror.changed(job_id, said("started"))
    ctx.mirror.refresh_dirty(ctx)
    [(plural, namespace, name, running)] = ctx.patches
    assert (plural, namespace, name) == ("pystolactions", "team-a", "mine")
    assert running["phase"] == "Running" and running["jobId"] == job_id
    assert running["observedGeneration"] == 1 and "startedAt" in running
    ctx.mirror.changed(job_id, said("selected"))  # nothing the status shows changed
    ctx.mirror.refresh_dirty(ctx)
    assert len(ctx.patches) == 1

    ctx.store.finish(job_id, JobStatus.SUCCEEDED, "done")
    ctx.mirror.changed(job_id, said("succeeded"))
    ctx.mirror.refresh_dirty(ctx)
    assert ctx.patches[-1][3]["phase"] == "Succeeded"
    assert [(reason, warning) for reason, _, warning in events] == [("JobSucceeded", False)]
    assert ctx.mirror.following() == set()


def test_a_followed_jobs_first_status_is_written_before_the_mirror_may_write(
        ctx: Context, events: list[Any]) -> None:
    """kopf PATCHes after the handler returns, perhaps after the mirror wrote a fast job's
    Succeeded: the handler must not leave the Pending status to kopf's PATCH."""
    obj = body("mine", {"action": "pod-kill", "target": {"namespaces": ["team-a"]},
                        "dryRun": True})
    patch = kopf.Patch()
    reconcile_action(ctx, obj, patch, "create", PYSTOL_ACTION)
    assert not patch.status
    [(_, _, _, first)] = ctx.patches
    assert first["phase"] == "Pending" and ctx.mirror.following() == {first["jobId"]}


def test_a_change_before_the_job_is_followed_is_not_lost(ctx: Context,
                                                         events: list[Any]) -> None:
    obj = body("mine", {"action": "pod-kill", "target": {"namespaces": ["team-a"]},
                        "dryRun": True})
    status = reconcile(ctx, obj)
    job_id = status["jobId"]
    ctx.mirror.unfollow(job_id)  # as if the worker started it before `follow` ran
    ctx.store.claim(job_id, "worker-1")
    ctx.mirror.changed(job_id, said("started"))
    assert ctx.mirror.take_dirty() == []
    ctx.mirror.follow(PYSTOL_ACTION, obj, job_id, status)
    ctx.mirror.refresh_dirty(ctx)
    [(_, _, _, running)] = ctx.patches
    assert running["phase"] == "Running"


def test_resume_follows_a_job_that_ended_while_no_watcher_ran(ctx: Context,
                                                              events: list[Any]) -> None:
    obj = body("mine", {"action": "pod-kill", "target": {"namespaces": ["team-a"]},
                        "dryRun": True})
    obj["status"] = reconcile(ctx, obj)
    job_id = obj["status"]["jobId"]
    ctx.mirror.unfollow(job_id)  # the watcher went away
    finish(ctx, job_id, JobStatus.SUCCEEDED, "done")
    assert reconcile(ctx, obj, cause="resume") == {}
    assert ctx.mirror.following() == {job_id}
    ctx.mirror.refresh_dirty(ctx)
    assert ctx.patches[-1][3]["phase"] == "Succeeded"
    assert ("JobSucceeded", False) in [(reason, warning) for reason, _, warning in events]
    assert ctx.mirror.following() == set()


def test_a_reconnected_subscription_rereads_every_followed_job(ctx: Context,
                                                                events: list[Any]) -> None:
    jobs = [reconcile(ctx, body(f"cr-{index}", {
        "action": "pod-kill", "target": {"namespaces": ["team-a"]}, "dryRun": True}))["jobId"]
        for index in range(3)]
    ctx.mirror.changed(None)
    assert sorted(ctx.mirror.take_dirty()) == sorted(jobs)


def test_deleting_an_object_with_a_foreign_job_id_does_not_cancel_that_job(
        ctx: Context, events: list[Any]) -> None:
    victim = victim_job(ctx)
    obj = body("mine", {"action": "pod-kill", "target": {"namespaces": ["team-a"]},
                        "dryRun": True})
    own = reconcile(ctx, obj)["jobId"]
    obj["status"] = {"jobId": victim.id, "phase": "Succeeded", "observedGeneration": 1}
    ctx.store.request_cancel(own, "test: end own job")  # queued: cancelled at once
    patch = kopf.Patch()
    asyncio.run(abort_action(ctx, obj, patch, PYSTOL_ACTION))
    record = ctx.store.get(victim.id, False)
    assert record.status == JobStatus.QUEUED and not record.cancel_requested
    assert "ForeignJobId" in [reason for reason, _, _ in events]
    assert dict(patch.status).get("jobId") in (None, own)


def test_resume_with_a_foreign_job_id_reports_it_and_runs_its_own_job(
        ctx: Context, events: list[Any]) -> None:
    victim = victim_job(ctx)
    obj = body("mine", {"action": "pod-kill", "target": {"namespaces": ["team-a"]}},
               status={"jobId": victim.id, "phase": "Running", "observedGeneration": 1})
    status = reconcile(ctx, obj, cause="resume")
    own = [r for r in all_jobs(ctx) if r.id != victim.id]
    assert len(own) == 1 and status["jobId"] == own[0].id
    assert own[0].actor is not None and own[0].actor.uid == "uid-team-a-mine"
    assert "ForeignJobId" in reasons(status)
    assert "ForeignJobId" in [reason for reason, _, _ in events]
    # A spec change with its own job id in status: a PystolAction still runs once.
    obj["metadata"]["generation"] = 2
    obj["status"] = {"jobId": own[0].id, "phase": "Pending", "observedGeneration": 1}
    events.clear()
    assert reconcile(ctx, obj, cause="update") == {"observedGeneration": 2}
    assert [reason for reason, _, _ in events] == ["SpecChangeIgnored"]


# -- status leaks nothing ----------------------------------------------------------------------


def test_status_copies_no_error_text_or_action_output() -> None:
    now = datetime.now(UTC)
    record = JobRecord(id="j-1", spec=JobSpec(action="pod-kill",
                                              target=Target(namespaces=["team-a"])),
                       status=JobStatus.FAILED, source=Source.CR, submitter="team-a/x",
                       created_at=now, finished_at=now, reason="1 of 2 target(s) failed",
                       error="Traceback (most recent call last): token=s3cr3t")
    record.result.changes = [Change(target=TargetRef(kind="Pod", namespace="team-a",
                                                     name="web-1"),
                                    action="killed", at=now,
                                    error="exec output: s3cr3t")]
    record.result.probes = [ProbeOutcome.model_validate(
        {"phase": "after", "probe": {"url": PROBE_URL}, "ok": False, "status": 500,
         "error": "body: s3cr3t", "started_at": now.isoformat()})]
    status = action_status(record, 1)
    assert "s3cr3t" not in str(status)
    assert status["message"] == "job j-1 failed: 1 of 2 target(s) failed"
    result = compact_result(record)
    assert result["changes"] == ["killed Pod team-a/web-1, revert failed"]
    assert result["probes"] == [f"after {PROBE_URL}: failed (500)"]


# -- schedules -----------------------------------------------------------------------------------


def schedule_body(name: str, template: dict[str, Any], namespace: str | None = "team-a",
                  kind: CrKind = PYSTOL_SCHEDULE, **fields: Any) -> dict[str, Any]:
    return body(name, {"interval": "5m", **fields, "template": template},
                namespace=namespace, kind=kind)


def sync(ctx: Context, obj: dict[str, Any], kind: CrKind = PYSTOL_SCHEDULE) -> dict[str, Any]:
    patch = kopf.Patch()
    sync_schedule(ctx, obj, patch, "change", kind)
    return dict(patch.status)


def test_a_pystolschedule_naming_another_namespace_is_refused(ctx: Context,
                                                              events: list[Any]) -> None:
    status = sync(ctx, schedule_body("steal", {"action": "pod-kill",
                                               "target": {"namespaces": ["payments"]}}))
    assert status["phase"] == "Failed" and reasons(status) == {"Forbidden"}
    assert "spec.template.target.namespaces[0]" in status["message"]
    assert "payments" in status["message"]
    assert not ctx.schedule_store().exists("cr.team-a.steal")


def test_a_pystolschedule_in_its_namespace_is_stored_as_itself(ctx: Context,
                                                               events: list[Any]) -> None:
    obj = schedule_body("nightly", {"action": "pod-kill",
                                    "target": {"namespaces": ["team-a"]}})
    status = sync(ctx, obj)
    assert status["phase"] == "Active", status
    record = ctx.schedule_store().get("cr.team-a.nightly")
    assert record.submitter == "team-a/nightly"
    assert record.changed_by is not None and record.changed_by.uid == "uid-team-a-nightly"
    assert record.changed_by.resource_kind == "PystolSchedule"
    # A node-level template is refused, and the earlier spec stops firing.
    obj["spec"]["template"] = {"action": "node-cordon", "target": {"names": ["worker-a"]},
                               "duration": "1m"}
    status = sync(ctx, obj)
    assert status["phase"] == "Failed" and reasons(status) == {"Forbidden"}
    assert not ctx.schedule_store().exists("cr.team-a.nightly")


def test_a_cluster_schedule_may_hold_node_level_chaos(ctx: Context,
                                                      events: list[Any]) -> None:
    obj = schedule_body("cordon", {"action": "node-cordon", "target": {"names": ["worker-a"]},
                                   "duration": "10s"},
                        namespace=None, kind=PYSTOL_CLUSTER_SCHEDULE)
    status = sync(ctx, obj, PYSTOL_CLUSTER_SCHEDULE)
    assert status["phase"] == "Active", status
    schedule_id = schedule_id_of(PYSTOL_CLUSTER_SCHEDULE, None, "cordon", "uid")
    assert status["scheduleId"] == schedule_id == "cr-cluster.cordon"
    record = ctx.schedule_store().get(schedule_id)
    assert record.changed_by is not None
    assert record.changed_by.resource_kind == "PystolClusterSchedule"
    delete_schedule(ctx, obj, PYSTOL_CLUSTER_SCHEDULE)
    assert not ctx.schedule_store().exists(schedule_id)


def test_deleting_a_schedule_ignores_a_foreign_schedule_id(ctx: Context,
                                                           events: list[Any]) -> None:
    store = ctx.schedule_store()
    victim = store.create(ScheduleSpec.model_validate({
        "interval": "5m", "template": {"action": "pod-kill",
                                       "target": {"namespaces": ["payments"]}}}),
        Source.API, ADMIN, schedule_id="payments-nightly")
    obj = schedule_body("mine", {"action": "pod-kill", "target": {"namespaces": ["team-a"]}})
    sync(ctx, obj)
    obj["status"] = {"scheduleId": victim.id, "phase": "Active", "observedGeneration": 1}
    delete_schedule(ctx, obj, PYSTOL_SCHEDULE)
    assert store.exists(victim.id)
    with pytest.raises(ScheduleNotFound):
        store.get("cr.team-a.mine")


def test_a_refused_change_of_a_schedule_is_audited_as_an_update_and_its_removal(
        ctx: Context, events: list[Any]) -> None:
    from pystol_worker.store.audit_log import AuditLog

    trail = AuditLog(ctx.redis, max_records=100, retention_seconds=3600, approximate=False)
    ctx.submissions.audit = trail
    obj = schedule_body("nightly", {"action": "pod-kill", "target": {"namespaces": ["team-a"]}})
    sync(ctx, obj)
    # The object is changed to ask for what it may not: the stored schedule goes.
    obj["spec"]["template"] = {"action": "pod-kill", "target": {"namespaces": ["payments"]}}
    assert sync(ctx, obj)["phase"] == "Failed"
    assert not ctx.schedule_store().exists("cr.team-a.nightly")

    records, _ = trail.read()
    assert [(r.operation, r.outcome) for r in reversed(records)] == [
        ("schedule.create", "ok"), ("schedule.update", "refused"), ("schedule.delete", "ok")]
    assert {r.schedule_id for r in records} == {"cr.team-a.nightly"}
    assert {(r.actor.name, r.actor.uid) for r in records} == {
        ("team-a/nightly", "uid-team-a-nightly")}
    assert "payments" in (records[0].detail or "")

    # A new object refused from the start is a refused create, and nothing is removed.
    sync(ctx, schedule_body("steal", {"action": "pod-kill",
                                      "target": {"namespaces": ["payments"]}}))
    newest, _ = trail.read(limit=1)
    assert [(r.operation, r.outcome, r.schedule_id) for r in newest] == [
        ("schedule.create", "refused", "cr.team-a.steal")]
