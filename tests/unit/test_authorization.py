"""Who may do what (issue 12), attack first: each test tries what a caller or someone
with write access to Redis should not get away with, and shows it is refused, where, and
that nothing reached the queue or the cluster.

- scope: the submission service refuses a job outside the identity's namespaces (naming
  the field) and node-level chaos to all but admins; a viewer submits nothing;
- the sealed grant: the runner refuses a record edited in Redis after submission, one
  without a grant, one sealed for another job or with another key, before any request
  reaches the cluster;
- the admin policy, at submission and again in the worker: images, signals, the target
  cap, the longest fault, actions per namespace, the chaos windows (refuse and wait);
- the audit trail: one record per submission, refusals included;
- schedules: creating or changing one needs the scope its template acts in, the policy's
  shortest period holds, and a schedule whose grant was altered in Redis does not fire.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from pystol_api.http.app import create_app, services_of
from pystol_worker.actions import default_registry
from pystol_worker.core.access import (
    AccessDenied,
    ActorKind,
    Grant,
    Identity,
    Permission,
    Role,
    seal,
)
from pystol_worker.core.model import EventKind, JobSpec, JobStatus, Source
from pystol_worker.core.policy import ActionRule, OutsideWindows, Policy
from pystol_worker.core.schedule_model import ScheduleSpec
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import GrantInvalid, check_grant, sealed
from pystol_worker.jobs.submission import (
    ChaosHalted,
    JobInvalid,
    PolicyRefused,
    QueueUnavailable,
    SubmissionService,
)
from pystol_worker.jobs.validation import validate_job
from pystol_worker.schedules.firing import ScheduleFirer
from pystol_worker.schedules.store import ScheduleStore, StoredSchedule
from pystol_worker.store.audit_log import AuditLog
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.job_store import JobStore
from pystol_worker.store.token_store import TokenStore
from tests.support.fake_jobs import FakeJobs, app_deployment, pods_of
from tests.support.grants import ADMIN, operator, viewer
from tests.support.manual_clock import ManualClock
from tests.support.recording_queue import RecordingQueue

SHOP_OPERATOR = operator("ci", "shop")
SHOP_VIEWER = viewer("dash", "shop")
KILL_IN_SHOP: dict[str, Any] = {"action": "pod-kill", "target": {
    "namespaces": ["shop"], "label_selector": "app=web", "mode": "one"}}
KILL_IN_PAYMENTS: dict[str, Any] = {"action": "pod-kill", "target": {
    "namespaces": ["payments"], "label_selector": "app=web", "mode": "one"}}
DRAIN_N1: dict[str, Any] = {"action": "node-drain", "target": {"names": ["n1"]},
                            "duration": "1s"}
SATURDAY = datetime(2025, 6, 14, 10, 0, tzinfo=UTC)
MONDAY_OPENING = datetime(2025, 6, 16, 9, 0, tzinfo=UTC)
WEEKDAYS = ["mon-fri 09:00-17:00"]


def job(document: dict[str, Any], **fields: Any) -> JobSpec:
    return JobSpec.model_validate({**document, **fields})


@dataclass
class Submissions:
    """A submission service on fakeredis with a recording queue and an audit trail."""

    policy: Policy = field(default_factory=Policy)
    clock: ManualClock = field(default_factory=lambda: ManualClock(datetime(2025, 6, 11, 10, 0,
                                                                tzinfo=UTC)))
    queue: Any = field(default_factory=RecordingQueue)

    def __post_init__(self) -> None:
        self.redis = fakeredis.FakeRedis()
        self.store = JobStore(self.redis)
        self.audit = AuditLog(self.redis, max_records=1000, retention_seconds=10 * 365 * 86400,
                              approximate=False)
        self.service = SubmissionService(self.store, self.queue, default_registry(),
                                         Settings(), HaltSwitch(self.redis),
                                         policy=self.policy, audit=self.audit,
                                         clock=self.clock)

    def submit(self, document: dict[str, Any], identity: Identity = ADMIN,
               **fields: Any) -> Any:
        return self.service.submit(job(document, **fields), Source.API, identity)

    def refused(self, error: type[Exception], document: dict[str, Any],
                identity: Identity = ADMIN, **fields: Any) -> Any:
        """The error submitting raised; nothing was stored or queued."""
        stored = [record.id for record in self.store.list().items]
        sent = list(getattr(self.queue, "sent", []))
        with pytest.raises(error) as caught:
            self.submit(document, identity, **fields)
        assert [record.id for record in self.store.list().items] == stored
        assert getattr(self.queue, "sent", []) == sent
        return caught.value

    def policy_locs(self, document: dict[str, Any], **fields: Any) -> list[str]:
        refused = self.refused(PolicyRefused, document, **fields)
        return [problem.loc for problem in refused.problems]


# -- scope: who may submit what, where ------------------------------------------------------


def test_an_operator_of_shop_cannot_run_chaos_in_payments() -> None:
    submissions = Submissions()
    denied = submissions.refused(AccessDenied, KILL_IN_PAYMENTS, SHOP_OPERATOR)
    assert (denied.loc, denied.namespace, denied.permission) == (
        "target.namespaces[0]", "payments", Permission.JOBS_SUBMIT)
    assert "token:ci may not run chaos in namespace 'payments'" in str(denied)
    # Naming its own namespace next to another one does not smuggle the other one in.
    both = {**KILL_IN_PAYMENTS, "target": {**KILL_IN_PAYMENTS["target"],
                                           "namespaces": ["shop", "payments"]}}
    assert submissions.refused(AccessDenied, both, SHOP_OPERATOR).loc == "target.namespaces[1]"
    # Its own namespace it may.
    record, created = submissions.submit(KILL_IN_SHOP, SHOP_OPERATOR)
    assert created and submissions.queue.sent == [record.id]
    assert record.grant.namespaces == ["shop"] and not record.grant.cluster


def test_an_operator_cannot_run_node_level_chaos_even_with_every_namespace() -> None:
    for identity in (SHOP_OPERATOR, operator("everywhere")):
        submissions = Submissions()
        denied = submissions.refused(AccessDenied, DRAIN_N1, identity)
        assert (denied.loc, denied.permission) == ("action", Permission.CLUSTER_CHAOS)
        assert "node-level and cluster-wide chaos is for admins" in str(denied)
        # Stress pinned to a node is node-level too, whatever namespace it names.
        pinned = {"action": "memory-stress", "target": {"namespaces": ["shop"]},
                  "params": {"node": "n1"}, "duration": "1s"}
        assert submissions.refused(AccessDenied, pinned, identity).loc == "action"


def test_an_operator_cannot_probe_urls_without_naming_a_namespace_it_has() -> None:
    submissions = Submissions()
    probe = {"action": "http-probe", "target": {}, "params": {"url": "http://10.0.0.1/"}}
    denied = submissions.refused(AccessDenied, probe, SHOP_OPERATOR)
    assert denied.loc == "target.namespaces"
    record, _ = submissions.submit({**probe, "target": {"namespaces": ["shop"]}},
                                   SHOP_OPERATOR)
    assert record.grant.namespaces == ["shop"]


def test_a_viewer_cannot_submit_even_in_its_own_namespace() -> None:
    submissions = Submissions()
    denied = submissions.refused(AccessDenied, KILL_IN_SHOP, SHOP_VIEWER)
    assert (denied.loc, denied.namespace) == ("target.namespaces[0]", "shop")
    everywhere = viewer("auditor")
    assert submissions.refused(AccessDenied, KILL_IN_SHOP, everywhere).namespace == "shop"
    assert submissions.refused(AccessDenied, DRAIN_N1, everywhere).loc == "action"


def test_an_admin_can_run_chaos_anywhere_and_on_nodes() -> None:
    submissions = Submissions()
    in_payments, _ = submissions.submit(KILL_IN_PAYMENTS, ADMIN)
    drain, _ = submissions.submit(DRAIN_N1, ADMIN)
    assert submissions.queue.sent == [in_payments.id, drain.id]
    assert drain.grant.cluster and drain.actor == ADMIN.actor
    assert in_payments.grant.namespaces == ["payments"]


# -- the sealed grant: a record edited in Redis does not run ----------------------------------


def edit_record(jobs: FakeJobs, job_id: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change a stored job the way anyone who can write to Redis could."""
    key = JobStore._key(job_id)
    document = json.loads(jobs.redis.get(key))
    edit(document)
    jobs.redis.set(key, json.dumps(document))


def shop_and_payments(jobs: FakeJobs) -> None:
    app_deployment(jobs.fake, namespace="shop", replicas=2)
    app_deployment(jobs.fake, namespace="payments", replicas=2)
    jobs.fake.requests.clear()


def assert_refused_before_the_cluster(jobs: FakeJobs, record: Any, why: str) -> None:
    assert record.status == JobStatus.FAILED, record.reason
    assert why in (record.reason or ""), record.reason
    assert jobs.fake.requests == []  # not even a read: it stopped before selecting
    assert record.result.changes == [] and jobs.journal_entries() == []


def test_a_record_moved_to_another_namespace_in_redis_is_refused() -> None:
    jobs = FakeJobs()
    shop_and_payments(jobs)
    payments = pods_of(jobs.fake, "payments")
    job_id = jobs.submit(KILL_IN_SHOP, SHOP_OPERATOR)

    def to_payments(document: dict[str, Any]) -> None:
        document["spec"]["target"]["namespaces"] = ["payments"]
    edit_record(jobs, job_id, to_payments)
    record = jobs.run_stored(job_id)

    assert_refused_before_the_cluster(jobs, record, "grant does not match its record")
    assert pods_of(jobs.fake, "payments").keys() == payments.keys()


def test_a_record_whose_grant_was_widened_with_its_spec_is_refused() -> None:
    jobs = FakeJobs()
    shop_and_payments(jobs)
    job_id = jobs.submit(KILL_IN_SHOP, SHOP_OPERATOR)

    def widen(document: dict[str, Any]) -> None:
        document["spec"]["target"]["namespaces"] = ["shop", "payments"]
        document["grant"]["namespaces"] = ["shop", "payments"]
        document["grant"]["cluster"] = True
    edit_record(jobs, job_id, widen)

    assert_refused_before_the_cluster(jobs, jobs.run_stored(job_id),
                                      "grant does not match its record")


def test_a_record_turned_into_node_chaos_in_redis_is_refused() -> None:
    jobs = FakeJobs()
    shop_and_payments(jobs)
    job_id = jobs.submit(KILL_IN_SHOP, SHOP_OPERATOR)

    def drain(document: dict[str, Any]) -> None:
        document["spec"] = {**document["spec"], **json.loads(job(DRAIN_N1).model_dump_json())}
    edit_record(jobs, job_id, drain)

    assert_refused_before_the_cluster(jobs, jobs.run_stored(job_id),
                                      "grant does not match its record")


def test_a_record_whose_image_was_changed_in_redis_is_refused() -> None:
    # The worker's policy allows any image, so only the grant stands between the edit
    # and the cluster.
    jobs = FakeJobs(policy=Policy(images=["*"]))
    shop_and_payments(jobs)
    job_id = jobs.submit({"action": "pod-failure", "duration": "1s",
                          "target": {"namespaces": ["shop"], "label_selector": "app=web"}},
                         SHOP_OPERATOR)

    def miner(document: dict[str, Any]) -> None:
        document["spec"]["params"] = {"image": "attacker.example/miner:latest"}
    edit_record(jobs, job_id, miner)
    record = jobs.run_stored(job_id)

    assert_refused_before_the_cluster(jobs, record, "grant does not match its record")
    assert not any(c["image"].startswith("attacker") for pod in pods_of(jobs.fake).values()
                   for c in pod["spec"]["containers"])


def test_a_record_without_a_grant_is_refused() -> None:
    jobs = FakeJobs()
    shop_and_payments(jobs)
    record, _ = jobs.store.create(job(KILL_IN_SHOP), Source.API, "token-test")
    assert_refused_before_the_cluster(jobs, jobs.run_stored(record.id),
                                      "carries no grant from the submission service")


def test_a_grant_copied_from_another_job_is_refused() -> None:
    jobs = FakeJobs()
    shop_and_payments(jobs)
    genuine = jobs.store.get(jobs.submit(KILL_IN_PAYMENTS, ADMIN))
    # Someone writes a job of their own with the same spec, and the admin's grant.
    forged, _ = jobs.store.create(job(KILL_IN_PAYMENTS), Source.API, "token-test",
                                  grant=lambda job_id: genuine.grant)
    assert_refused_before_the_cluster(jobs, jobs.run_stored(forged.id),
                                      "grant does not match its record")


def test_a_grant_sealed_with_another_key_is_refused() -> None:
    jobs = FakeJobs()
    shop_and_payments(jobs)
    spec = job(KILL_IN_PAYMENTS)
    grant = Grant(submitter="token-test", namespaces=["payments"])
    forged, _ = jobs.store.create(spec, Source.API, "token-test", grant=lambda job_id: sealed(
        grant, job_id, spec, b"a key the attacker chose"))
    assert_refused_before_the_cluster(jobs, jobs.run_stored(forged.id),
                                      "grant does not match its record")


def test_an_untouched_record_of_an_operator_runs() -> None:
    jobs = FakeJobs()
    shop_and_payments(jobs)
    record = jobs.run_stored(jobs.submit(KILL_IN_SHOP, SHOP_OPERATOR))
    assert record.status == JobStatus.SUCCEEDED, record.reason
    assert record.actor == SHOP_OPERATOR.actor
    assert {change.target.namespace for change in record.result.changes} == {"shop"}


def test_a_grant_sealed_too_narrow_is_still_refused() -> None:
    """Should a producer ever seal less than the spec needs, the worker still refuses: the
    spec must stay inside the grant, not only match its seal."""
    key = Settings().signing_key_bytes
    registry = default_registry()
    store = JobStore(fakeredis.FakeRedis())
    for document, grant, why in (
            (KILL_IN_PAYMENTS, Grant(submitter="x", namespaces=["shop"]),
             "namespaces payments are outside the grant"),
            (DRAIN_N1, Grant(submitter="x", namespaces=[], cluster=False),
             "does not allow cluster-level chaos")):
        spec = job(document)
        record, _ = store.create(spec, Source.API, "x",
                                 grant=lambda job_id, g=grant, s=spec: sealed(g, job_id, s, key))
        action, params = validate_job(spec, registry, Settings())
        with pytest.raises(GrantInvalid, match=why):
            check_grant(record, action, params, key)


# -- the admin policy -----------------------------------------------------------------------


def pod_failure(image: str) -> dict[str, Any]:
    return {"action": "pod-failure", "duration": "10s", "params": {"image": image},
            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}


def test_an_image_the_policy_does_not_allow_is_refused_for_pod_failure_and_stress() -> None:
    submissions = Submissions()
    assert submissions.policy_locs(pod_failure("attacker.example/miner:1")) == ["params.image"]
    stress = {"action": "cpu-stress", "duration": "10s",
              "target": {"namespaces": ["shop"], "label_selector": "app=web"},
              "params": {"image": "attacker.example/miner:1"}}
    assert submissions.policy_locs(stress) == ["params.image"]
    memory = {**stress, "action": "memory-stress"}
    assert submissions.policy_locs(memory) == ["params.image"]
    # The built-in images are allowed by default; the admin may allow their own.
    assert submissions.submit(pod_failure("registry.k8s.io/pause:3.9"))[1]
    assert submissions.submit(stress, params={"image": "ghcr.io/colinianking/stress-ng:v1"})[1]
    mirror = Submissions(policy=Policy(images=["registry.example/chaos/*"]))
    assert mirror.submit(pod_failure("registry.example/chaos/pause:1"))[1]
    assert mirror.policy_locs(pod_failure("registry.k8s.io/pause:3.9")) == ["params.image"]


def test_a_signal_the_policy_does_not_allow_is_refused() -> None:
    submissions = Submissions(policy=Policy(signals=["SIGTERM"]))
    kill = {"action": "container-kill", "params": {"signal": "SIGKILL"},
            "target": {"namespaces": ["shop"], "label_selector": "app=web"}}
    refused = submissions.refused(PolicyRefused, kill)
    assert [(p.loc, "SIGKILL is not allowed" in p.msg) for p in refused.problems] == [
        ("params.signal", True)]
    assert submissions.submit(kill, params={"signal": "SIGTERM"})[1]


def test_a_fixed_count_above_the_policys_cap_is_refused() -> None:
    submissions = Submissions(policy=Policy(max_targets_per_job=2))
    many = {"action": "pod-kill", "target": {"namespaces": ["shop"], "mode": "fixed",
                                             "value": 3}}
    assert submissions.policy_locs(many) == ["target.value"]
    names = {"action": "node-cordon", "target": {"names": ["n1", "n2", "n3"]},
             "duration": "10s"}
    assert submissions.policy_locs(names) == ["target.names"]
    assert submissions.submit(many, target={"namespaces": ["shop"], "mode": "fixed",
                                            "value": 2})[1]


def test_the_worker_caps_what_a_mode_selects_at_the_policys_limit() -> None:
    """`mode: all` names no count the submission could check: the worker refuses the
    selection before touching anything."""
    jobs = FakeJobs(policy=Policy(max_targets_per_job=2))
    app_deployment(jobs.fake, replicas=3)
    record = jobs.run({"action": "pod-kill", "target": {"namespaces": ["shop"],
                                                        "label_selector": "app=web",
                                                        "mode": "all"}})
    assert record.status == JobStatus.FAILED
    assert "would hit 3 pods; the admin policy allows at most 2" in (record.reason or "")
    assert jobs.fake.called("delete", "pods") == [] and len(pods_of(jobs.fake)) == 3


def test_a_fault_held_longer_than_the_policy_allows_is_refused() -> None:
    submissions = Submissions(policy=Policy(max_fault_duration=60))
    cordon = {"action": "node-cordon", "target": {"names": ["n1"]}}
    assert submissions.policy_locs(cordon, duration="5m") == ["duration"]
    assert submissions.submit(cordon, duration="60s")[1]


def test_an_action_the_policy_does_not_allow_in_a_namespace_is_refused() -> None:
    policy = Policy(actions=[ActionRule(namespaces=["shop"], actions=["pod-kill"]),
                             ActionRule(namespaces=["*"], actions=["node-cordon"])])
    submissions = Submissions(policy=policy)
    assert submissions.policy_locs(KILL_IN_PAYMENTS) == ["target.namespaces[0]"]
    both = {**KILL_IN_SHOP, "target": {"namespaces": ["shop", "payments"]}}
    assert submissions.policy_locs(both) == ["target.namespaces[1]"]
    partition = {"action": "network-partition", "duration": "10s",
                 "target": {"namespaces": ["shop"], "label_selector": "app=web"}}
    assert submissions.policy_locs(partition) == ["target.namespaces[0]"]
    # Node-level chaos needs a rule for every namespace (`*`), admin or not.
    assert submissions.policy_locs(DRAIN_N1) == ["action"]
    assert submissions.submit(KILL_IN_SHOP)[1]
    assert submissions.submit({"action": "node-cordon", "target": {"names": ["n1"]},
                               "duration": "10s"})[1]


def test_outside_the_windows_in_refuse_mode_a_job_is_refused() -> None:
    clock = ManualClock(SATURDAY)
    submissions = Submissions(policy=Policy(windows=WEEKDAYS), clock=clock)
    refused = submissions.refused(PolicyRefused, KILL_IN_SHOP)
    [problem] = refused.problems
    assert problem.loc == "policy.windows"
    assert "chaos is not allowed now" in problem.msg
    assert MONDAY_OPENING.isoformat() in problem.msg
    clock.now = MONDAY_OPENING + timedelta(hours=1)
    assert submissions.submit(KILL_IN_SHOP)[1]


def test_outside_the_windows_in_wait_mode_a_job_waits_for_the_opening() -> None:
    clock = ManualClock(SATURDAY)
    policy = Policy(windows=WEEKDAYS, outside_windows=OutsideWindows.WAIT)
    submissions = Submissions(policy=policy, clock=clock)
    record, created = submissions.submit(KILL_IN_SHOP)

    assert created and submissions.queue.sent == []
    stored = submissions.store.get(record.id)
    assert stored.status == JobStatus.QUEUED and stored.not_before == MONDAY_OPENING
    assert stored.timeline[-1].kind == EventKind.DEFERRED
    clock.now = MONDAY_OPENING - timedelta(seconds=1)
    assert submissions.service.release_due() == []
    assert submissions.queue.sent == []
    clock.now = MONDAY_OPENING + timedelta(seconds=1)
    assert submissions.service.release_due() == [record.id]
    assert submissions.service.release_due() == []
    assert submissions.queue.sent == [record.id]  # queued once


def test_a_deferred_job_cancelled_meanwhile_is_never_queued() -> None:
    clock = ManualClock(SATURDAY)
    policy = Policy(windows=WEEKDAYS, outside_windows=OutsideWindows.WAIT)
    submissions = Submissions(policy=policy, clock=clock)
    record, _ = submissions.submit(KILL_IN_SHOP)
    submissions.store.request_cancel(record.id, "sre")
    clock.now = MONDAY_OPENING + timedelta(minutes=1)
    assert submissions.service.release_due() == []
    assert submissions.queue.sent == []


def test_the_worker_refuses_a_job_its_policy_does_not_allow() -> None:
    """A job queued under an older, laxer policy (or by a producer that skipped it) meets
    the policy the worker runs under, before it touches anything."""
    today = datetime.now(UTC).date()
    closed = [today - timedelta(days=1), today, today + timedelta(days=1)]
    for policy, document, loc in (
            (Policy(), pod_failure("attacker.example/miner:1"), "params.image"),
            (Policy(excluded_dates=closed), KILL_IN_SHOP, "policy.windows"),
            (Policy(actions=[ActionRule(namespaces=["payments"], actions=["*"])]),
             KILL_IN_SHOP, "target.namespaces[0]")):
        jobs = FakeJobs(policy=policy)
        shop_and_payments(jobs)
        record = jobs.run_stored(jobs.submit(document))
        assert_refused_before_the_cluster(jobs, record,
                                          f"refused by the admin policy: {loc}: ")


def test_in_wait_mode_the_worker_refuses_a_job_sent_while_the_windows_are_closed() -> None:
    """Wait mode defers a job at submission; one that reaches a worker anyway while the
    windows are closed (sent by an older API, adopted early, or put on the queue by hand)
    is refused there, before anything reads the cluster."""
    today = datetime.now(UTC).date()
    closed = [today - timedelta(days=1), today, today + timedelta(days=1)]
    jobs = FakeJobs(policy=Policy(excluded_dates=closed, outside_windows=OutsideWindows.WAIT))
    shop_and_payments(jobs)
    shop = pods_of(jobs.fake, "shop")
    record = jobs.run_stored(jobs.submit(KILL_IN_SHOP, SHOP_OPERATOR))

    assert_refused_before_the_cluster(jobs, record,
                                      "refused by the admin policy: policy.windows: ")
    assert pods_of(jobs.fake, "shop").keys() == shop.keys()


def test_adopting_a_deferred_job_does_not_send_it_before_its_window() -> None:
    """A producer that finds its job again by its idempotency key (the watcher after a
    restart) adopts it: a job deferred to a chaos window stays deferred."""
    clock = ManualClock(SATURDAY)
    policy = Policy(windows=WEEKDAYS, outside_windows=OutsideWindows.WAIT)
    submissions = Submissions(policy=policy, clock=clock)
    record, created = submissions.submit(KILL_IN_SHOP, idempotency_key="cr-uid-1")
    found, again = submissions.submit(KILL_IN_SHOP, idempotency_key="cr-uid-1")
    assert created and not again and found.id == record.id
    assert found.not_before == MONDAY_OPENING

    assert submissions.service.adopt(found) is False
    clock.now = MONDAY_OPENING - timedelta(seconds=1)
    assert submissions.service.adopt(submissions.store.get(record.id)) is False
    assert submissions.queue.sent == []
    assert submissions.store.get(record.id).status == JobStatus.QUEUED
    clock.now = MONDAY_OPENING + timedelta(seconds=1)
    assert submissions.service.release_due() == [record.id]
    assert submissions.queue.sent == [record.id]


class FlakyQueue(RecordingQueue):
    """A queue whose first `failures` sends raise (a broker that was briefly away)."""

    def __init__(self, failures: int = 1) -> None:
        super().__init__()
        self.failures = failures

    def send(self, job_id: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker down")
        super().send(job_id)


def test_a_deferred_job_the_queue_refuses_at_release_is_released_later() -> None:
    clock = ManualClock(SATURDAY)
    policy = Policy(windows=WEEKDAYS, outside_windows=OutsideWindows.WAIT)
    queue = FlakyQueue()
    submissions = Submissions(policy=policy, clock=clock, queue=queue)
    record, _ = submissions.submit(KILL_IN_SHOP)
    other, _ = submissions.submit(KILL_IN_SHOP, idempotency_key="second")

    clock.now = MONDAY_OPENING + timedelta(seconds=1)
    released = submissions.service.release_due()  # the first send raises; nothing escapes
    assert len(released) == 1 and queue.sent == released
    [refused] = {record.id, other.id} - set(released)
    stored = submissions.store.get(refused)
    assert stored.status == JobStatus.QUEUED, stored.reason  # not failed: deferred again
    assert submissions.service.release_due() == []  # not before the retry is due
    clock.now += timedelta(minutes=1)
    assert submissions.service.release_due() == [refused]
    assert sorted(queue.sent) == sorted([record.id, other.id])
    assert submissions.service.release_due() == []


# -- the audit trail ------------------------------------------------------------------------


def test_every_submission_is_audited_once_refusals_included() -> None:
    submissions = Submissions(policy=Policy(signals=["SIGTERM"]))
    ok, _ = submissions.submit(KILL_IN_SHOP, SHOP_OPERATOR)
    with pytest.raises(AccessDenied):
        submissions.submit(KILL_IN_PAYMENTS, SHOP_OPERATOR)
    with pytest.raises(PolicyRefused):
        submissions.submit({"action": "container-kill", "params": {"signal": "SIGKILL"},
                            "target": {"namespaces": ["shop"]}})
    with pytest.raises(JobInvalid):
        submissions.submit({"action": "no-such-action", "target": {"namespaces": ["shop"]}})
    HaltSwitch(submissions.redis).engage(submissions.store, "sre", "incident")
    with pytest.raises(ChaosHalted):
        submissions.submit(KILL_IN_SHOP)

    records, _ = submissions.audit.read(operation="job.submit")
    assert [(r.outcome, r.actor.submitter) for r in reversed(records)] == [
        ("ok", "token:ci"), ("refused", "token:ci"), ("refused", "token-test"),
        ("invalid", "token-test"), ("refused", "token-test")]
    first, denied, policy, invalid, halted = reversed(records)
    assert first.job_id == ok.id and first.namespaces == ["shop"]
    assert denied.job_id is None and denied.namespaces == ["payments"]
    assert "may not run chaos in namespace 'payments'" in (denied.detail or "")
    assert "params.signal" in (policy.detail or "")
    assert "no-such-action" in (invalid.detail or "")
    assert "halted" in (halted.detail or "")


def test_a_job_the_queue_refuses_is_audited_as_failed_once() -> None:
    class Refusing:
        def send(self, job_id: str) -> None:
            raise ConnectionError("broker down")

    submissions = Submissions(queue=Refusing())
    with pytest.raises(QueueUnavailable) as failed:
        submissions.submit(KILL_IN_SHOP)
    [record], _ = submissions.audit.read()
    assert (record.outcome, record.job_id) == ("failed", failed.value.job_id)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str | None]]:
    """(outcome, job id) of every line logged on `pystol.audit`, oldest first."""
    documents = [getattr(line, "audit") for line in caplog.records  # noqa: B009
                 if line.name == "pystol.audit"]  # `extra={"audit": …}` of AuditLog.log
    return [(document["outcome"], document["job_id"]) for document in documents]


def test_a_job_the_queue_refuses_logs_one_audit_line_failed(
        caplog: pytest.LogCaptureFixture) -> None:
    """The log is the trail a SIEM reads: a refused job must not show there as `ok`."""
    class Refusing:
        def send(self, job_id: str) -> None:
            raise ConnectionError("broker down")

    submissions = Submissions(queue=Refusing())
    caplog.set_level("INFO", logger="pystol.audit")
    with pytest.raises(QueueUnavailable) as failed:
        submissions.submit(KILL_IN_SHOP)
    assert audit_lines(caplog) == [("failed", failed.value.job_id)]


def test_a_queued_and_a_deferred_job_each_log_one_audit_line_ok(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="pystol.audit")
    queued, _ = Submissions().submit(KILL_IN_SHOP)
    waiting = Submissions(policy=Policy(windows=WEEKDAYS, outside_windows=OutsideWindows.WAIT),
                          clock=ManualClock(SATURDAY))
    deferred, _ = waiting.submit(KILL_IN_SHOP)
    assert deferred.not_before is not None
    assert audit_lines(caplog) == [("ok", queued.id), ("ok", deferred.id)]


def test_a_redis_error_after_the_job_was_stored_still_logs_its_ok(
        caplog: pytest.LogCaptureFixture) -> None:
    """The submit script stored the job and its `ok` record; deferring it then fails (Redis
    went away). The stream keeps that `ok`, so the log must say it too."""
    import redis as redis_module

    waiting = Submissions(policy=Policy(windows=WEEKDAYS, outside_windows=OutsideWindows.WAIT),
                          clock=ManualClock(SATURDAY))

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise redis_module.ConnectionError("Redis went away")

    waiting.store.defer = unreachable  # type: ignore[method-assign]
    caplog.set_level("INFO", logger="pystol.audit")
    with pytest.raises(redis_module.ConnectionError):
        waiting.submit(KILL_IN_SHOP)
    stored = waiting.store.list().items
    assert [record.outcome for record in waiting.audit.read()[0]] == ["ok"]
    assert audit_lines(caplog) == [("ok", stored[0].id)]


def test_the_trail_finds_a_job_by_the_namespace_its_probe_reads() -> None:
    """`pystol audit -n payments` must show a job in shop whose probe reads payments."""
    submissions = Submissions()
    reads_payments = {**KILL_IN_SHOP, "probes": [{
        "type": "k8s", "namespace": "payments",
        "object": {"kind": "Deployment", "name": "ledger"}}]}
    ok, _ = submissions.submit(reads_payments)
    with pytest.raises(AccessDenied):
        submissions.submit(reads_payments, SHOP_OPERATOR)
    found, _ = submissions.audit.read(namespace="payments")
    assert [(r.outcome, r.job_id) for r in reversed(found)] == [("ok", ok.id),
                                                                 ("refused", None)]
    assert all(r.namespaces == ["payments", "shop"] for r in found)


# -- schedules ------------------------------------------------------------------------------

T0 = datetime(2025, 6, 11, 10, 0, tzinfo=UTC).timestamp()
EVERY_MINUTE: dict[str, Any] = {"interval": "1m", "template": KILL_IN_SHOP}


@dataclass
class Schedules:
    policy: Policy = field(default_factory=Policy)

    def __post_init__(self) -> None:
        self.redis = fakeredis.FakeRedis()
        self.now = T0
        self.store = ScheduleStore(self.redis, Settings(), clock=lambda: self.now,
                                   rng=random.Random(1), policy=self.policy)
        self.queue = RecordingQueue()
        self.firer = ScheduleFirer(self.store, SubmissionService(
            self.store.jobs, self.queue, self.store.registry, self.store.settings,
            HaltSwitch(self.redis), policy=self.policy))

    def create(self, document: dict[str, Any], identity: Identity = ADMIN,
               schedule_id: str = "s1") -> Any:
        return self.store.create(ScheduleSpec.model_validate(document), Source.API, identity,
                                 schedule_id=schedule_id)

    def fire(self, schedule_id: str = "s1") -> Any:
        aimed = self.store.state(schedule_id).aimed
        assert aimed is not None
        self.now = aimed / 1000 + 0.003
        return self.firer.fire(schedule_id, fired_at=self.now, task_id=f"t-{self.now}")

    def edit(self, schedule_id: str, edit: Callable[[dict[str, Any]], None]) -> None:
        key = self.store.key(schedule_id)
        document = json.loads(self.redis.get(key))
        edit(document)
        self.redis.set(key, json.dumps(document))


def test_an_operator_cannot_schedule_chaos_outside_its_namespaces() -> None:
    schedules = Schedules()
    with pytest.raises(AccessDenied) as denied:
        schedules.create({**EVERY_MINUTE, "template": KILL_IN_PAYMENTS}, SHOP_OPERATOR)
    assert denied.value.loc == "template.target.namespaces[0]"
    with pytest.raises(AccessDenied) as node:
        schedules.create({**EVERY_MINUTE, "template": DRAIN_N1}, SHOP_OPERATOR)
    assert node.value.loc == "template.action"
    with pytest.raises(AccessDenied):
        schedules.create(EVERY_MINUTE, SHOP_VIEWER)
    assert schedules.store.list() == []


def test_an_operator_cannot_move_someone_elses_schedule_into_its_reach() -> None:
    schedules = Schedules()
    schedules.create({**EVERY_MINUTE, "template": KILL_IN_PAYMENTS})
    spec = ScheduleSpec.model_validate(EVERY_MINUTE)  # now aimed at shop, which it has
    with pytest.raises(AccessDenied):
        schedules.store.update("s1", spec, SHOP_OPERATOR)
    with pytest.raises(AccessDenied):
        schedules.store.set_paused("s1", True, SHOP_OPERATOR)
    with pytest.raises(AccessDenied):
        schedules.store.delete("s1", SHOP_OPERATOR)
    assert schedules.store.get("s1").spec.template.target.namespaces == ["payments"]


def test_a_schedule_more_often_than_the_policy_allows_is_refused() -> None:
    schedules = Schedules()
    with pytest.raises(PolicyRefused) as refused:
        schedules.create({**EVERY_MINUTE, "interval": "10s"})
    assert [p.loc for p in refused.value.problems] == ["interval"]
    with pytest.raises(PolicyRefused) as mtbf:
        schedules.create({"mtbf": "30s", "template": KILL_IN_SHOP})
    assert [p.loc for p in mtbf.value.problems] == ["mtbf"]
    with pytest.raises(PolicyRefused) as template:
        schedules.create({**EVERY_MINUTE, "template": pod_failure("attacker.example/x:1")})
    assert [p.loc for p in template.value.problems] == ["template.params.image"]
    assert schedules.create(EVERY_MINUTE).spec.interval == 60


def test_a_schedule_runs_as_itself_on_behalf_of_whoever_changed_it() -> None:
    schedules = Schedules()
    # A named token's schedule runs while the token exists (the fire checks the store).
    token, _ = TokenStore(schedules.redis, Settings().signing_key_bytes).create(
        "ci", Role.OPERATOR, ["shop"], None, "test")
    schedules.create(EVERY_MINUTE, Identity(token.actor(), token.authority()))
    result = schedules.fire()
    assert result.outcome == "started", result.reason
    record = schedules.store.jobs.get(result.job_id)
    assert record.actor is not None
    assert (record.actor.kind, record.actor.name, record.actor.on_behalf_of) == (
        ActorKind.SCHEDULE, "s1", "token:ci")
    assert record.grant is not None and record.grant.namespaces == ["shop"]
    assert not record.grant.cluster
    assert schedules.queue.sent == [result.job_id]


@pytest.mark.parametrize("alteration", ["grant", "template", "both", "signature"])
def test_a_schedule_altered_in_redis_fails_its_fire(alteration: str) -> None:
    schedules = Schedules()
    schedules.create(EVERY_MINUTE, SHOP_OPERATOR)

    def alter(document: dict[str, Any]) -> None:
        if alteration in ("grant", "both"):
            document["grant"]["namespaces"] = ["shop", "payments"]
        if alteration in ("template", "both"):
            document["spec"]["template"]["target"]["namespaces"] = ["payments"]
        if alteration == "signature":  # sealed, but with a key Pystol does not hold
            stored = StoredSchedule.model_validate(document)
            grant = Grant.model_validate(document["grant"])
            document["grant"]["signature"] = seal(b"a key the attacker chose",
                                                  stored.sealed_payload(grant))
    schedules.edit("s1", alter)
    result = schedules.fire()

    assert result.outcome == "failed"
    assert "grant does not verify" in result.reason
    assert result.job_id is None
    assert schedules.store.jobs.list().items == [] and schedules.queue.sent == []
    [run] = schedules.store.get("s1").last_runs
    assert "grant does not verify" in (run.reason or "")


def test_resuming_a_schedule_grants_it_again_for_who_resumed_it() -> None:
    """The way out the fire's reason names: a schedule whose grant no longer verifies is
    granted again by whoever may change it, and then runs on their behalf."""
    schedules = Schedules()
    schedules.create(EVERY_MINUTE, SHOP_OPERATOR)
    schedules.edit("s1", lambda document: document.update(grant=None))
    assert schedules.fire().outcome == "failed"
    schedules.store.set_paused("s1", True, ADMIN)
    schedules.store.set_paused("s1", False, ADMIN)
    result = schedules.fire()
    assert result.outcome == "started", result.reason
    actor = schedules.store.jobs.get(result.job_id).actor
    assert actor is not None and actor.on_behalf_of == "token-test"


# -- who sees a job spanning namespaces ------------------------------------------------------


def test_a_job_spanning_two_namespaces_is_hidden_from_a_reader_of_one() -> None:
    """A job in `shop` and `payments` tells about both (its targets, its timeline): a
    viewer or operator of `shop` alone neither reads nor lists nor cancels it."""
    app = create_app(Settings(api_tokens=["admin-token-0123456789"], kubernetes_auth=False),
                     redis_client=fakeredis.FakeRedis(), queue=RecordingQueue(),
                     registry=default_registry())
    tokens = services_of(app).tokens

    def bearer(name: str, role: Role, *namespaces: str) -> dict[str, str]:
        _, secret = tokens.create(name, role, list(namespaces), None, "test")
        return {"Authorization": f"Bearer {secret}"}
    admin = {"Authorization": "Bearer admin-token-0123456789"}
    shop_viewer = bearer("dash", Role.VIEWER, "shop")
    shop_operator = bearer("ci", Role.OPERATOR, "shop")
    both_viewer = bearer("auditor", Role.VIEWER, "shop", "payments")
    client = app.test_client()
    spanning = client.post("/api/v1/jobs", headers=admin, json={
        **KILL_IN_SHOP, "target": {**KILL_IN_SHOP["target"], "namespaces": ["shop",
                                                                            "payments"]},
        "dry_run": True})
    assert spanning.status_code == 202, spanning.json
    job_id = spanning.json["id"]
    in_shop = client.post("/api/v1/jobs", headers=admin, json={**KILL_IN_SHOP,
                                                               "dry_run": True}).json["id"]

    for headers in (shop_viewer, shop_operator):
        for path in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/events"):
            hidden = client.get(path, headers=headers)
            assert hidden.status_code == 404, (path, hidden.json)
        assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers).status_code \
            == 404
        listed = client.get("/api/v1/jobs", headers=headers)
        assert [item["id"] for item in listed.json["items"]] == [in_shop]
    # Whoever may read both namespaces sees it.
    assert client.get(f"/api/v1/jobs/{job_id}", headers=both_viewer).status_code == 200
    listed = client.get("/api/v1/jobs", headers=both_viewer).json["items"]
    assert {item["id"] for item in listed} == {job_id, in_shop}
