"""The sim's store: its label index, lists at an earlier resourceVersion, ResourceQuota.

The label index must never change what a list returns, only how fast: so the property
tests compare the store's answer with a plain model of the same writes (a dict of
labels, filtered by the selector's own `matches`), after random creates, relabels and
deletes. The same model, frozen at a resourceVersion, is what a paged list must keep
returning however the objects change afterwards.
"""

from __future__ import annotations

import base64
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystol_sim import paging
from pystol_sim import store as store_module
from pystol_sim.errors import ApiError
from pystol_sim.resources import Catalogue, ResourceType
from pystol_sim.selectors import LabelSelector, Requirement, parse_label_selector
from pystol_sim.store import Store

CATALOGUE = Catalogue()


def core_type(plural: str) -> ResourceType:
    rtype = CATALOGUE.get("", "v1", plural)
    assert rtype is not None
    return rtype


PODS = core_type("pods")
QUOTAS = core_type("resourcequotas")
CONFIGMAPS = core_type("configmaps")

NAMESPACES = ("a", "b")
NAMES = tuple(f"o{i}" for i in range(12))
LABEL_KEYS = ("app", "tier", "n")
LABEL_VALUES = ("x", "y", "z", "1", "7")

labels_strategy = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES),
                                  max_size=3)
key_strategy = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(NAMES))
# ("put", key, labels) creates or relabels; ("delete", key, None) deletes if present
write_strategy = st.one_of(
    st.tuples(st.just("put"), key_strategy, labels_strategy),
    st.tuples(st.just("delete"), key_strategy, st.none()))


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(st.sampled_from(LABEL_KEYS))
    operator = draw(st.sampled_from(("=", "!=", "in", "notin", "exists", "!", "gt", "lt")))
    if operator in ("exists", "!"):
        return Requirement(key, operator, ())
    if operator in ("in", "notin"):
        return Requirement(key, operator, tuple(draw(st.sets(st.sampled_from(LABEL_VALUES),
                                                              min_size=1, max_size=3))))
    if operator in ("gt", "lt"):
        return Requirement(key, operator, (draw(st.sampled_from(("0", "3", "9"))),))
    return Requirement(key, operator, (draw(st.sampled_from(LABEL_VALUES)),))


selector_strategy = st.lists(requirements(), min_size=1, max_size=3).map(LabelSelector)


def write(store: Store, model: dict[tuple[str, str], dict[str, str]], rtype: ResourceType,
          op: str, key: tuple[str, str], labels: dict[str, str] | None) -> None:
    """Apply one write to the store and to the model."""
    ns, name = key
    if op == "delete":
        if key in model:
            store.delete(rtype, ns, name)
            del model[key]
        return
    assert labels is not None
    current = store.find(rtype, ns, name)
    if current is None:
        store.create(rtype, {"metadata": {"name": name, "labels": labels}}, ns)
    else:
        current["metadata"]["labels"] = labels
        store.update(rtype, current)
    model[key] = dict(labels)


def expected_keys(model: dict[tuple[str, str], dict[str, str]], namespace: str | None,
                  selector: LabelSelector) -> list[tuple[str, str]]:
    return sorted(key for key, labels in model.items()
                  if (namespace is None or key[0] == namespace) and selector.matches(labels))


@pytest.mark.parametrize("index_share", [store_module.INDEX_SHARE, 1.0])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(write_strategy, max_size=40), selector=selector_strategy,
       namespace=st.sampled_from((None, *NAMESPACES)))
def test_a_selected_list_returns_exactly_what_a_scan_returns(
        index_share: float, writes: list[tuple[str, tuple[str, str], Any]],
        selector: LabelSelector, namespace: str | None) -> None:
    """With the default threshold and with one that makes every indexable selector use
    the index: creates, relabels and deletes must all be reflected, in key order."""
    store, model = Store(), dict[tuple[str, str], dict[str, str]]()
    with mock.patch.object(store_module, "INDEX_SHARE", index_share):
        for op, key, labels in writes:
            write(store, model, CONFIGMAPS, op, key, labels)
        got = [key for key, _ in store.select(CONFIGMAPS, namespace, selector)]
    assert got == expected_keys(model, namespace, selector)


def test_an_equality_list_touches_only_the_indexed_objects() -> None:
    """The point of the index: selecting 3 objects among 300 does not match 300 label maps."""
    store = Store()
    for i in range(300):
        store.create(CONFIGMAPS, {"metadata": {"name": f"cm-{i:03d}",
                                               "labels": {"app": f"app-{i % 100}"}}}, "ns")
    selector = parse_label_selector("app=app-7")
    with mock.patch.object(LabelSelector, "matches", autospec=True,
                           side_effect=LabelSelector.matches) as matches:
        got = [key[1] for key, _ in store.select(CONFIGMAPS, None, selector)]
    assert got == ["cm-007", "cm-107", "cm-207"]
    assert matches.call_count <= 3


@settings(max_examples=150, deadline=None)
@given(before=st.lists(write_strategy, max_size=30), after=st.lists(write_strategy, max_size=30),
       selector=st.none() | selector_strategy, namespace=st.sampled_from((None, *NAMESPACES)),
       start=st.none() | key_strategy)
def test_a_list_at_an_earlier_resource_version_shows_the_objects_as_they_were(
        before: list[tuple[str, tuple[str, str], Any]],
        after: list[tuple[str, tuple[str, str], Any]], selector: LabelSelector | None,
        namespace: str | None, start: tuple[str, str] | None) -> None:
    """What every page after the first of a paged list is served from: the objects, their
    bytes and the remaining count as of the first page's resourceVersion."""
    store, model = Store(), dict[tuple[str, str], dict[str, str]]()
    for op, key, labels in before:
        write(store, model, CONFIGMAPS, op, key, labels)
    pinned = store.rv
    frozen = {key: store.stored(CONFIGMAPS, *key).raw for key in model}  # type: ignore[union-attr]
    frozen_labels = dict(model)
    for op, key, labels in after:
        write(store, model, CONFIGMAPS, op, key, labels)
    got = list(store.select_at(CONFIGMAPS, pinned, namespace, selector, start=start))
    wanted = [key for key in expected_keys(frozen_labels, namespace,
                                           selector or LabelSelector())
              if start is None or key >= start]
    assert [key for key, _ in got] == wanted
    assert all(raw == frozen[key] for key, raw in got)
    if start is not None and selector is None:
        assert store.count_at(CONFIGMAPS, pinned, namespace, start) == len(wanted)


def test_a_list_at_a_compacted_or_aged_out_revision_is_expired() -> None:
    store = Store(history_size=3)
    store.create(CONFIGMAPS, {"metadata": {"name": "one"}}, "ns")
    pinned = store.rv
    assert [k for k, _ in store.select_at(CONFIGMAPS, pinned)] == [("ns", "one")]
    for i in range(3):  # the window (3 events) still holds every write after `pinned`
        store.create(CONFIGMAPS, {"metadata": {"name": f"more-{i}"}}, "ns")
    assert [k for k, _ in store.select_at(CONFIGMAPS, pinned)] == [("ns", "one")]
    store.create(CONFIGMAPS, {"metadata": {"name": "more-3"}}, "ns")  # now it does not
    with pytest.raises(ApiError) as aged:
        store.select_at(CONFIGMAPS, pinned)
    assert aged.value.code == 410 and aged.value.reason == "Expired"

    store = Store()
    store.create(CONFIGMAPS, {"metadata": {"name": "one"}}, "ns")
    pinned = store.rv
    store.create(CONFIGMAPS, {"metadata": {"name": "two"}}, "ns")
    store.compact()
    with pytest.raises(ApiError) as compacted:
        store.select_at(CONFIGMAPS, pinned)
    assert compacted.value.code == 410
    assert [k for k, _ in store.select_at(CONFIGMAPS, store.rv)] == [("ns", "one"), ("ns", "two")]


# ------------------------------------------------------------------------ continue tokens


def test_a_continue_token_round_trips_and_starts_after_the_last_key() -> None:
    text = paging.encode_continue(42, ("shop", "web-1"), "", namespaced=True)
    token = paging.decode_continue(text, "", namespaced=True, current_rv=50)
    assert token.rv == 42
    assert token.start > ("shop", "web-1") and token.start < ("shop", "web-10")
    in_namespace = paging.decode_continue(paging.encode_continue(42, ("shop", "web-1"), "shop",
                                                                 namespaced=True),
                                          "shop", namespaced=True, current_rv=50)
    assert in_namespace.start == token.start


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.mark.parametrize("text", [
    "not base64 at all!",
    b64("not json")[:-3] + "{{{",
    base64.urlsafe_b64encode(b"not json").decode(),
    b64(["a", "b"]),
    paging.encode_text(0, "web-1\x00"),
    paging.encode_text(5, ""),
    paging.encode_text(5, "../../secrets/x"),
    paging.encode_text(10**6, "web-1\x00"),  # from a server further along than this one
    b64({"v": "meta.k8s.io/v2", "rv": 5, "start": "x"}),
    b64({"v": "meta.k8s.io/v1", "rv": "ten", "start": "x"}),
    b64({"v": "meta.k8s.io/v1", "rv": True, "start": "x"}),
    b64({"v": "meta.k8s.io/v1", "rv": 5, "start": 7}),
])
def test_a_tampered_or_foreign_continue_token_is_a_bad_request(text: str) -> None:
    with pytest.raises(ApiError) as error:
        paging.decode_continue(text, "shop", namespaced=True, current_rv=100)
    assert error.value.code == 400
    assert error.value.message.startswith("invalid continue token: continue key is not valid")


def test_an_expired_continue_offers_a_token_for_the_rest_at_the_latest_state() -> None:
    token = paging.decode_continue(paging.encode_continue(7, ("shop", "web-1"), "shop", True),
                                   "shop", True, 100)
    status = paging.ExpiredContinue(token).status()
    assert status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith("The provided continue parameter is too old to display "
                                        "a consistent list result.")
    offered = paging.decode_continue(status["metadata"]["continue"], "shop", True, 100)
    assert offered.rv == paging.LATEST and offered.start == token.start


# ------------------------------------------------------------------------ ResourceQuota


def pod(name: str, phase: str | None = None, cpu: str = "100m") -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": name}, "spec": {"containers": [
        {"name": "c", "image": "pause", "resources": {"requests": {"cpu": cpu},
                                                      "limits": {"memory": "64Mi"}}}]}}
    if phase:
        body["status"] = {"phase": phase}
    return body


def quota_store(hard: dict[str, str]) -> Store:
    store = Store()
    store.create(QUOTAS, {"metadata": {"name": "q"}, "spec": {"hard": hard}}, "shop")
    return store


def test_a_pod_over_the_quota_is_forbidden_with_the_apiservers_message() -> None:
    store = quota_store({"pods": "2"})
    store.create(PODS, pod("one"), "shop")
    store.create(PODS, pod("two"), "shop")
    with pytest.raises(ApiError) as refused:
        store.create(PODS, pod("three"), "shop")
    assert refused.value.code == 403 and refused.value.reason == "Forbidden"
    assert refused.value.message == ('pods "three" is forbidden: exceeded quota: q, requested: '
                                     "pods=1, used: pods=2, limited: pods=2")
    assert store.find(PODS, "shop", "three") is None
    with pytest.raises(ApiError):  # a dry run is refused the same way
        store.create(PODS, pod("three"), "shop", dry_run=True)
    store.create(PODS, pod("elsewhere"), "other")  # other namespaces are not limited


def test_finished_pods_do_not_count_and_deleting_a_pod_frees_its_place() -> None:
    store = quota_store({"count/pods": "1"})
    store.create(PODS, pod("done", phase="Succeeded"), "shop")
    store.create(PODS, pod("one"), "shop")
    with pytest.raises(ApiError) as refused:
        store.create(PODS, pod("two"), "shop")
    assert "used: count/pods=1, limited: count/pods=1" in refused.value.message
    store.delete(PODS, "shop", "one")
    store.create(PODS, pod("two"), "shop")


def test_the_quota_status_shows_hard_and_used() -> None:
    store = quota_store({"pods": "5", "requests.cpu": "2", "limits.memory": "1Gi"})
    assert store.get(QUOTAS, "shop", "q")["status"] == {
        "hard": {"pods": "5", "requests.cpu": "2", "limits.memory": "1Gi"},
        "used": {"pods": "0", "requests.cpu": "0", "limits.memory": "0"}}
    store.create(PODS, pod("one", cpu="250m"), "shop")
    store.create(PODS, pod("two", cpu="1"), "shop")
    assert store.get(QUOTAS, "shop", "q")["status"]["used"] == {
        "pods": "2", "requests.cpu": "1250m", "limits.memory": "128Mi"}
    store.delete(PODS, "shop", "two")
    assert store.get(QUOTAS, "shop", "q")["status"]["used"]["pods"] == "1"
    current = store.get(QUOTAS, "shop", "q")
    current["spec"]["hard"]["pods"] = "1"
    store.update(QUOTAS, current)
    assert store.get(QUOTAS, "shop", "q")["status"]["hard"]["pods"] == "1"
    with pytest.raises(ApiError):
        store.create(PODS, pod("three"), "shop")


def test_quota_status_writes_are_watchable_events() -> None:
    """`kubectl describe quota` reads the stored object; controllers watching quotas must see
    the usage change as an ordinary MODIFIED event."""
    store = quota_store({"pods": "3"})
    store.create(PODS, pod("one"), "shop")
    events = [e for e in store.table(QUOTAS).history if e.type == "MODIFIED"]
    assert orjson.loads(events[-1].raw)["status"]["used"] == {"pods": "1"}


def test_pod_writes_do_not_rescan_the_namespace_for_the_quota() -> None:
    """The quota's usage is kept up to date from each write's before/after, not by loading
    every pod of the namespace again on every pod write (which made loading a namespace
    quadratic), and a write that changes no usage writes no quota event."""
    store = quota_store({"pods": "1000", "requests.cpu": "100", "limits.memory": "100Gi"})
    loads = 0
    real_load = store_module.StoredObject.load

    def counting_load(self: store_module.StoredObject) -> dict[str, Any]:
        nonlocal loads
        loads += 1
        return real_load(self)

    with mock.patch.object(store_module.StoredObject, "load", counting_load):
        for index in range(200):
            store.create(PODS, pod(f"p{index}", cpu="10m"), "shop")
        created_loads = loads
        quota_events = len(store.table(QUOTAS).history)
        for index in range(200):  # kubelet-like status writes that do not change usage
            current = store.get(PODS, "shop", f"p{index}")
            current["status"] = {"phase": "Running", "podIP": f"10.0.0.{index % 250}"}
            store.update(PODS, current, status_only=True)
    # A constant number of loads per write (the quota objects), not one per pod.
    assert created_loads <= 200 * 3
    assert loads - created_loads <= 200 * 4
    assert len(store.table(QUOTAS).history) == quota_events
    assert store.get(QUOTAS, "shop", "q")["status"]["used"] == {
        "pods": "200", "requests.cpu": "2", "limits.memory": "12800Mi"}
    finished = store.get(PODS, "shop", "p0")
    finished["status"] = {"phase": "Succeeded"}
    store.update(PODS, finished, status_only=True)
    assert store.get(QUOTAS, "shop", "q")["status"]["used"] == {
        "pods": "199", "requests.cpu": "1990m", "limits.memory": "12736Mi"}


def test_a_client_created_pod_starts_pending_whatever_status_it_brings() -> None:
    store = quota_store({"pods": "1"})
    created = store.create(PODS, pod("a", phase="Succeeded"), "shop", from_client=True)
    assert created["status"] == {"phase": "Pending"}
    with pytest.raises(ApiError) as refused:
        store.create(PODS, pod("b", phase="Failed"), "shop", from_client=True)
    assert refused.value.code == 403
    assert store.get(QUOTAS, "shop", "q")["status"]["used"] == {"pods": "1"}


def test_a_terminal_pod_phase_is_final() -> None:
    store = quota_store({"pods": "1"})
    store.create(PODS, pod("a"), "shop")
    done = store.get(PODS, "shop", "a")
    done["status"] = {"phase": "Failed"}
    store.update(PODS, done, status_only=True)
    store.create(PODS, pod("b"), "shop")  # the failed pod no longer counts
    back = store.get(PODS, "shop", "a")
    back["status"] = {"phase": "Running"}
    with pytest.raises(ApiError) as refused:
        store.update(PODS, back, status_only=True)
    assert refused.value.code == 422 and "status.phase" in refused.value.message
    assert store.get(QUOTAS, "shop", "q")["status"]["used"] == {"pods": "1"}


def test_an_unreadable_or_endless_quantity_does_not_break_quota_accounting() -> None:
    store = quota_store({"pods": "5", "requests.cpu": "2"})
    for name, cpu in (("huge", "1e999"), ("odd", "lots")):
        store.create(PODS, pod(name, cpu=cpu), "shop")
    store.create(PODS, pod("fine", cpu="500m"), "shop")
    assert store.get(QUOTAS, "shop", "q")["status"]["used"] == {"pods": "3",
                                                                 "requests.cpu": "500m"}
