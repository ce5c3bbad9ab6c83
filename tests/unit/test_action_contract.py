"""The typed action contract: what an action declares on its class, and what the registry,
the runner, `hold_faults` and the reaper do with it.

No servers: fakeredis and a cluster stub that holds a list of bare pods.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import fakeredis
import pytest
from pydantic import BaseModel

from pystol_worker.actions import (
    Action,
    ActionError,
    ActionRegistry,
    JournalEntry,
    NoParams,
    PermanentError,
    RunContext,
    SelectContext,
    Selection,
)
from pystol_worker.actions.builtin import BUILTIN_ACTIONS
from pystol_worker.actions.node_cordon import uncordon
from pystol_worker.actions.pod_kill import PodKill
from pystol_worker.core.model import JobSpec, JobStatus, Source, TargetKind, TargetRef
from pystol_worker.core.settings import Settings
from pystol_worker.faults.fault_holding import Fault, hold_faults
from pystol_worker.jobs.reaper import reap_once
from pystol_worker.jobs.runner import JobRunner
from pystol_worker.safety.revert_journal import UndoRegistry
from pystol_worker.safety.target_locks import TargetLocks, lock_key
from pystol_worker.store.job_store import JobStore
from tests.support.grants import signed_journal, store_job

# The undo names journal entries carry, by the action that declares them. They are stored
# in Redis: an entry written by an older worker must find its function in a newer one.
BUILTIN_UNDO = {
    "delete-partition-policy": "network-partition",
    "delete-stress-pod": "cpu-stress",
    "remove-partition-label": "network-partition",
    "restore-container-images": "pod-failure",
    "restore-replicas": "deployment-scale",
    "uncordon-node": "node-cordon",
}


class StubCluster:
    """Bare pods (no owner) in namespaces; records deletes. Enough for pod-kill."""

    def __init__(self, pods: dict[str, list[dict[str, Any]]]) -> None:
        self.pods = pods
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def list_pods(self, namespace: str, label_selector: str | None = None,
                  field_selector: str | None = None, *,
                  project: Any = None) -> tuple[list[dict[str, Any]], str]:
        with self.lock:
            return [dict(pod) for pod in self.pods.get(namespace, [])], "1"

    def delete_pod(self, namespace: str, name: str, uid: str | None,
                   grace_period: int | None) -> None:
        with self.lock:
            self.deleted.append(name)
            self.pods[namespace] = [p for p in self.pods[namespace]
                                    if p["metadata"]["name"] != name]

    def replace(self, namespace: str, pods: list[dict[str, Any]]) -> None:
        with self.lock:
            self.pods[namespace] = pods


def bare_pod(name: str, uid: str, namespace: str = "shop") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"nodeName": "worker-a"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def builtin_registry() -> ActionRegistry:
    registry = ActionRegistry()
    for cls in BUILTIN_ACTIONS:
        registry.register(cls)
    return registry


def run_context(client: fakeredis.FakeRedis, cluster: Any, undo: UndoRegistry,
                job_id: str = "j-test") -> RunContext:
    return RunContext(settings=Settings(), cluster=cluster, store=JobStore(client),
                      job_id=job_id, journal=signed_journal(client), locks=TargetLocks(client),
                      undo_functions=undo)


class Quiet(Action[NoParams]):
    name = "quiet"
    description = "test double: selects and changes nothing"
    target_kind = TargetKind.NODES
    Params = NoParams

    def select(self, ctx: SelectContext, spec: JobSpec, params: NoParams) -> Selection:
        return Selection(matched=0, chosen=[])

    def execute(self, ctx: RunContext, spec: JobSpec, params: NoParams,
                selection: Selection) -> None:
        pass


def _not_uncordon(cluster: Any, entry: JournalEntry) -> None:
    raise AssertionError("never called")


# -- what the registry collects ------------------------------------------------------------------

def test_the_registry_collects_every_builtin_undo_under_its_journal_name() -> None:
    undo = builtin_registry().undo_registry()
    assert undo.names() == sorted(BUILTIN_UNDO)
    for name, action in BUILTIN_UNDO.items():
        cls = next(cls for cls in BUILTIN_ACTIONS if cls.name == action)
        assert undo.get(name) is cls.undo[name]


def test_node_drain_and_node_cordon_declare_the_same_uncordon() -> None:
    declared = {cls.name: cls.undo.get("uncordon-node") for cls in BUILTIN_ACTIONS}
    assert declared["node-cordon"] is uncordon and declared["node-drain"] is uncordon
    assert builtin_registry().undo_registry().get("uncordon-node") is uncordon


def test_a_plugin_undo_is_collected_with_the_plugin() -> None:
    def restore(cluster: Any, entry: JournalEntry) -> None:
        pass

    class Plugin(Quiet):
        name = "plugin"
        undo = {"plugin/restore": restore}

    registry = builtin_registry()
    assert "plugin/restore" not in registry.undo_registry()
    registry.register(Plugin)
    assert registry.undo_registry().get("plugin/restore") is restore


def test_an_undo_name_taken_by_another_function_is_refused_and_nothing_is_added() -> None:
    class Thief(Quiet):
        name = "thief"
        undo = {"uncordon-node": _not_uncordon}

    registry = builtin_registry()
    with pytest.raises(ValueError, match=r"uncordon-node.*node-cordon"):
        registry.register(Thief)
    assert "thief" not in registry.names()
    assert registry.undo_registry().get("uncordon-node") is uncordon


def test_a_class_without_a_params_model_is_refused() -> None:
    class NoModel(Quiet):
        name = "no-model"
        Params = dict  # type: ignore[assignment]

    with pytest.raises(TypeError, match="Params"):
        ActionRegistry().register(NoModel)


def test_importing_an_action_module_registers_nothing() -> None:
    assert ActionRegistry().names() == []
    assert ActionRegistry().undo_registry().names() == []


def test_permanent_error_is_the_one_action_error() -> None:
    assert PermanentError is ActionError


# -- the two contexts ----------------------------------------------------------------------------

def test_selecting_sees_no_journal_locks_or_job() -> None:
    assert [f.name for f in dataclasses.fields(SelectContext)] == ["settings", "cluster", "policy"]


def test_running_always_has_journal_locks_store_job_id_and_undo() -> None:
    required = {f.name for f in dataclasses.fields(RunContext)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert {"store", "job_id", "journal", "locks", "undo_functions"} <= required


def test_params_reach_the_action_as_its_own_model() -> None:
    action = builtin_registry().get("pod-kill")
    assert issubclass(action.Params, BaseModel)
    assert type(action).Params is PodKill.Params


# -- undo tables in use --------------------------------------------------------------------------

def test_hold_faults_refuses_an_undo_no_action_declares_before_injecting() -> None:
    client = fakeredis.FakeRedis()
    ctx = run_context(client, StubCluster({}), builtin_registry().undo_registry())
    injected: list[str] = []
    fault = Fault(target=TargetRef(kind="Pod", namespace="shop", name="web-1"),
                  undo="nobody/declares-this", description="a change nobody could revert",
                  inject=lambda: injected.append("web-1"))
    spec = JobSpec.model_validate({"action": "quiet", "target": {"names": ["n1"]}})
    with pytest.raises(ActionError, match="nobody/declares-this"):
        hold_faults(ctx, spec, "quiet", [fault], hold_seconds=None)
    assert injected == []
    assert ctx.journal.count() == 0


def test_the_reaper_reverts_with_the_undo_table_it_is_given() -> None:
    client = fakeredis.FakeRedis()
    journal = signed_journal(client)
    entry = journal.record(JournalEntry(job_id="j-dead", action="plugin",
                                        undo="plugin/restore",
                                        target=TargetRef(kind="Pod", namespace="shop",
                                                         name="web-1")))
    undone: list[str] = []
    table = UndoRegistry({"plugin/restore": lambda cluster, e: undone.append(e.id)})
    report = reap_once(JobStore(client), journal, StubCluster({}), 1.0, table)
    assert undone == [entry.id]
    assert report.reverted == [entry.describe()]
    assert journal.count() == 0


def test_an_entry_whose_undo_nobody_declares_is_kept_and_named_in_the_jobs_reason() -> None:
    """A plug-in uninstalled (or not updated) after it journaled a change: the reaper cannot
    revert it, keeps the entry (and so the target's lock), and the aborted job says which
    undo is missing instead of promising a retry that cannot succeed."""
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    record, _ = store.create(JobSpec.model_validate(
        {"action": "pod-kill", "target": {"namespaces": ["shop"]}}), Source.API, "test")
    store.claim(record.id, "a worker that then died")
    journal = signed_journal(client)
    journal.record(JournalEntry(job_id=record.id, action="gone", undo="gone/restore",
                                target=TargetRef(kind="Pod", namespace="shop", name="web-1")))
    report = reap_once(store, journal, StubCluster({}), 0.0, UndoRegistry({}))
    assert report.reverted == [] and len(report.failed) == 1
    assert journal.count() == 1
    reason = store.get(record.id).reason or ""
    assert store.get(record.id).status == JobStatus.ABORTED
    assert "cannot be reverted: no installed action declares undo gone/restore" in reason
    assert "will be retried" not in reason


# -- record.targets after waiting for a lock (on_conflict: wait) ---------------------------------

def test_a_job_that_waited_for_a_lock_records_the_pods_it_selected_again() -> None:
    """pod-kill selects again after waiting for another job's lock; the record's targets
    (what the dashboard and the topology overlay show) must be the pods it then chose,
    not the ones the other job may have killed meanwhile."""
    client = fakeredis.FakeRedis()
    store = JobStore(client)
    cluster = StubCluster({"shop": [bare_pod("web-old", "u-old")]})
    spec = JobSpec.model_validate({"action": "pod-kill", "on_conflict": "wait",
                                   "target": {"namespaces": ["shop"], "mode": "one"}})
    registry = ActionRegistry()
    registry.register(PodKill)
    record = store_job(store, spec, registry=registry)
    locks = TargetLocks(client)
    held = [lock_key("Pod", "shop", "web-old")]
    assert locks.acquire("j-other", held, 60) == {}

    def the_other_job_ends() -> None:
        time.sleep(0.3)
        cluster.replace("shop", [bare_pod("web-new", "u-new")])  # web-old was killed
        locks.release("j-other", held)
    other = threading.Thread(target=the_other_job_ends)
    other.start()
    status = JobRunner(Settings(), store, registry, lambda: cluster).run(record.id, "test")
    other.join()

    stored = store.get(record.id)
    assert status == JobStatus.SUCCEEDED, stored.reason
    assert cluster.deleted == ["web-new"]
    assert [(t.name, t.uid) for t in stored.targets] == [("web-new", "u-new")]
    assert stored.metrics.targets_selected == 1
    kinds = [event.kind for event in stored.timeline]
    assert kinds.count("selected") == 2 and "waiting" in kinds
    again = [event for event in stored.timeline if event.kind == "selected"][-1]
    assert [target["name"] for target in again.data["chosen"]] == ["web-new"]
