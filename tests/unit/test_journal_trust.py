"""Redis is not trusted: the reaper undoes only journal entries Pystol wrote, and an undo
changes only the object its fault marked.

The attack (issue 13): any pod that reaches Redis writes a journal entry for a job with no
heartbeat, whose undo "restores" kube-proxy's image to one of its choosing. Before entries
were sealed, one reaper pass patched it in (the first test fails that way with the seal
check removed from `RevertJournal.read`).
"""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from pystol_worker.actions import default_registry
from pystol_worker.actions.network_partition import delete_policy, policy_name
from pystol_worker.actions.pod_failure import UNDO_RESTORE_IMAGES
from pystol_worker.core.model import TargetRef
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.reaper import MAX_REFUSED_EVENTS, REFUSED_EVENT_REASON, reap_once
from pystol_worker.kube.fake_cluster import FakeCluster
from pystol_worker.safety.revert_journal import FAULT_MARK, JournalEntry, RevertJournal
from pystol_worker.store import metrics
from pystol_worker.store.job_store import JobStore
from tests.support.grants import signed_journal

ATTACKER_IMAGE = "evil.example/kube-proxy:backdoor"
UNDO = default_registry().undo_registry()


def kube_proxy(fake: FakeCluster) -> dict[str, Any]:
    return fake.add_pod("kube-system", "kube-proxy-x1", labels={"k8s-app": "kube-proxy"},
                        containers=[{"name": "kube-proxy",
                                     "image": "registry.k8s.io/kube-proxy:v1.35.0"}])


def restore_entry(pod: dict[str, Any], image: str, job_id: str = "j-forged") -> JournalEntry:
    meta = pod["metadata"]
    return JournalEntry(job_id=job_id, action="pod-failure", undo=UNDO_RESTORE_IMAGES,
                        target=TargetRef(kind="Pod", namespace=meta["namespace"],
                                         name=meta["name"], uid=meta["uid"]),
                        data={"images": {"kube-proxy": image}})


def image_of(fake: FakeCluster, namespace: str, name: str) -> str:
    pod = fake.get("Pod", namespace, name) or {}
    return str(pod["spec"]["containers"][0]["image"])


def refused_count(client: fakeredis.FakeRedis, reason: str) -> int:
    key = metrics.field_key(metrics.JOURNAL_REFUSED, {"reason": reason})
    return int(client.hget(metrics.COUNTERS_KEY, key) or 0)


def genuine_cordon(client: fakeredis.FakeRedis, fake: FakeCluster) -> None:
    """Node n1 cordoned by a job whose worker died, with the journal entry Pystol wrote."""
    fake.add_node("n1")
    node = fake.patch("Node", None, "n1", {"metadata": {"annotations": {
        "chaos.pystol.org/cordoned-by": "j-dead"}}, "spec": {"unschedulable": True}})
    signed_journal(client).record(JournalEntry(
        job_id="j-dead", action="node-cordon", undo="uncordon-node",
        target=TargetRef(kind="Node", name="n1", node="n1", uid=node["metadata"]["uid"]),
        data={"node": "n1", "original_unschedulable": None, "had_annotations": False}))


def reap(client: fakeredis.FakeRedis, fake: FakeCluster,
         journal: RevertJournal | None = None) -> Any:
    journal = journal or RevertJournal(client, Settings().signing_key_bytes, 15.0,
                                       Settings().is_protected)
    return reap_once(JobStore(client), journal, fake, 15.0, UNDO)


def tenant_pod(fake: FakeCluster) -> dict[str, Any]:
    return fake.add_pod("payments", "ledger-0", containers=[{"name": "kube-proxy",
                                                             "image": "payments/ledger:3"}])


@pytest.mark.parametrize("how", ["unsigned", "other key", "altered"])
def test_a_journal_entry_pystol_did_not_write_is_never_undone(how: str) -> None:
    client, fake = fakeredis.FakeRedis(), FakeCluster()
    pod = tenant_pod(fake)
    entry = restore_entry(pod, ATTACKER_IMAGE)
    if how == "other key":
        RevertJournal(client, b"the-attackers-own-key-0123").record(entry)
    elif how == "altered":
        # A genuine entry (with a harmless image), then the attacker edits its image.
        genuine = signed_journal(client).record(restore_entry(pod, "registry.k8s.io/"
                                                               "kube-proxy:v1.35.0"))
        raw = json.loads(client.hget("pystol:journal", genuine.id) or b"")
        raw["data"]["images"]["kube-proxy"] = ATTACKER_IMAGE
        client.hset("pystol:journal", genuine.id, json.dumps(raw))
        entry = genuine
    else:
        client.hset("pystol:journal", entry.id, entry.model_dump_json())
        client.sadd(f"pystol:journal:job:{entry.job_id}", entry.id)

    report = reap(client, fake)

    assert image_of(fake, "payments", "ledger-0") != ATTACKER_IMAGE
    assert report.reverted == [] and len(report.refused) == 1
    # Out of the journal (not retried every pass), kept aside for people, and counted.
    assert client.hlen("pystol:journal") == 0
    kept = json.loads(client.hget("pystol:journal:refused", entry.id) or b"")
    reason = "unsigned" if how == "unsigned" else "altered"
    assert kept["reason"] == reason and ATTACKER_IMAGE in kept["entry"]
    assert refused_count(client, reason) == 1
    # The owners of the object it named see a Warning Event on it.
    [event] = fake.events(REFUSED_EVENT_REASON)
    assert event["type"] == "Warning"
    assert event["involvedObject"]["name"] == "ledger-0"
    assert event["metadata"]["namespace"] == "payments"


@pytest.mark.parametrize("key, value", [
    # A signature that is no hex: hmac.compare_digest raised TypeError on it.
    ("r-x", '{"id":"r-x","job_id":"j","action":"a","undo":"u","target":{"kind":"Pod",'
            '"name":"p"},"signature":"\u00e9"}'),
    (b"\xff\xfe", b"x"),                    # a field name that is no UTF-8
    ("r-y", b"\xff{not utf-8"),               # a value that is no UTF-8
    ("r-z", "[" * 5000 + "]" * 5000),         # JSON nested deeper than any parser likes
])
def test_no_crafted_entry_stops_the_reaper_from_undoing_the_genuine_ones(
        key: Any, value: Any) -> None:
    """One entry a Redis writer crafted used to raise out of the journal read, every pass:
    the reaper never undid anything again."""
    client, fake = fakeredis.FakeRedis(), FakeCluster()
    genuine_cordon(client, fake)
    client.hset("pystol:journal", key, value)

    report = reap(client, fake)

    assert len(report.reverted) == 1 and len(report.refused) == 1
    assert not (fake.get("Node", None, "n1") or {})["spec"].get("unschedulable")
    assert client.hlen("pystol:journal") == 0


def test_refused_entries_post_a_bounded_number_of_events_and_none_where_pystol_may_not_act(
        ) -> None:
    client, fake = fakeredis.FakeRedis(), FakeCluster()
    pod, proxy = tenant_pod(fake), kube_proxy(fake)
    for _ in range(50):
        entry = restore_entry(pod, ATTACKER_IMAGE)
        client.hset("pystol:journal", entry.id, entry.model_dump_json())
    entry = restore_entry(proxy, ATTACKER_IMAGE)
    client.hset("pystol:journal", entry.id, entry.model_dump_json())

    report = reap(client, fake)

    assert len(report.refused) == 51 and refused_count(client, "unsigned") == 51
    events = fake.events(REFUSED_EVENT_REASON)
    assert len(events) == MAX_REFUSED_EVENTS
    assert {event["metadata"]["namespace"] for event in events} == {"payments"}


def test_an_unreadable_entry_is_refused_and_the_genuine_ones_still_reverted() -> None:
    client, fake = fakeredis.FakeRedis(), FakeCluster()
    genuine_cordon(client, fake)
    client.hset("pystol:journal", "r-junk", "{not json")

    report = reap(client, fake)

    assert len(report.reverted) == 1 and len(report.refused) == 1
    assert not (fake.get("Node", None, "n1") or {})["spec"].get("unschedulable")
    assert refused_count(client, "unreadable") == 1
    assert client.hlen("pystol:journal") == 0


def test_a_genuine_entry_in_a_protected_namespace_is_refused() -> None:
    client, fake = fakeredis.FakeRedis(), FakeCluster()
    pod = kube_proxy(fake)
    fake.patch("Pod", "kube-system", "kube-proxy-x1", {"metadata": {"annotations": {
        FAULT_MARK: "j-old"}}})
    # Sealed with the real key (e.g. written while an admin allowed protected namespaces).
    signed_journal(client).record(restore_entry(pod, ATTACKER_IMAGE, job_id="j-old"))

    report = reap(client, fake)

    assert image_of(fake, "kube-system", "kube-proxy-x1") != ATTACKER_IMAGE
    assert report.reverted == [] and refused_count(client, "protected") == 1
    assert client.hlen("pystol:journal") == 0


def test_replaying_an_old_genuine_pod_failure_entry_changes_nothing() -> None:
    """The undo acts only while the pod carries this job's mark; the real undo removed it."""
    client, fake = fakeredis.FakeRedis(), FakeCluster()
    pod = fake.add_pod("shop", "web-1", containers=[{"name": "app", "image": "shop/web:2"}])
    entry = restore_entry(pod, "shop/web:1", job_id="j-old")
    entry.data = {"images": {"app": "shop/web:1"}}  # what it ran a release ago
    signed_journal(client).record(entry)  # captured by someone who could read Redis then

    reap(client, fake)

    assert image_of(fake, "shop", "web-1") == "shop/web:2"


def test_pod_failure_undo_needs_the_same_pod_and_the_mark() -> None:
    fake = FakeCluster()
    pod = fake.add_pod("shop", "web-1", containers=[{"name": "app", "image": "pause"}])
    fake.patch("Pod", "shop", "web-1", {"metadata": {"annotations": {FAULT_MARK: "j-1"}}})
    entry = restore_entry(pod, "shop/web:1", job_id="j-1")
    entry.data = {"images": {"app": "shop/web:1"}}
    other_uid = entry.model_copy(deep=True)
    other_uid.target.uid = "another-pod"
    UNDO.get(UNDO_RESTORE_IMAGES)(fake, other_uid)
    assert image_of(fake, "shop", "web-1") == "pause"

    UNDO.get(UNDO_RESTORE_IMAGES)(fake, entry)
    restored = fake.get("Pod", "shop", "web-1") or {}
    assert image_of(fake, "shop", "web-1") == "shop/web:1"
    assert FAULT_MARK not in (restored["metadata"].get("annotations") or {})


def test_delete_policy_deletes_only_the_policy_named_for_its_job() -> None:
    fake = FakeCluster()
    fake.add({"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
              "metadata": {"name": "default-deny", "namespace": "shop"},
              "spec": {"podSelector": {}}})
    entry = JournalEntry(job_id="j-abc-123456", action="network-partition",
                         undo="delete-partition-policy",
                         target=TargetRef(kind="NetworkPolicy", namespace="shop",
                                          name="default-deny"),
                         data={"namespace": "shop", "name": "default-deny"})
    delete_policy(fake, entry)
    assert fake.get("NetworkPolicy", "shop", "default-deny") is not None

    fake.add({"kind": "NetworkPolicy", "apiVersion": "networking.k8s.io/v1",
              "metadata": {"name": policy_name(entry.job_id), "namespace": "shop"},
              "spec": {"podSelector": {}}})
    entry.data["name"] = policy_name(entry.job_id)
    delete_policy(fake, entry)
    assert fake.get("NetworkPolicy", "shop", policy_name(entry.job_id)) is None


def test_restore_replicas_leaves_a_workload_someone_rescaled_since() -> None:
    fake = FakeCluster()
    deployment = fake.add_deployment("shop", "web", replicas=5)
    entry = JournalEntry(job_id="j-1", action="deployment-scale", undo="restore-replicas",
                         target=TargetRef(kind="Deployment", namespace="shop", name="web",
                                          uid=deployment["metadata"]["uid"]),
                         data={"replicas": 3, "scaled_to": 1})
    UNDO.get("restore-replicas")(fake, entry)  # at 5, not the 1 this job set
    assert (fake.get("Deployment", "shop", "web") or {})["spec"]["replicas"] == 5

    fake.set_scale("Deployment", "shop", "web", 1)
    UNDO.get("restore-replicas")(fake, entry)
    assert (fake.get("Deployment", "shop", "web") or {})["spec"]["replicas"] == 3


def test_the_journal_refuses_to_run_without_a_key() -> None:
    with pytest.raises(ValueError, match="PYSTOL_SIGNING_KEY"):
        RevertJournal(fakeredis.FakeRedis(), b"")
