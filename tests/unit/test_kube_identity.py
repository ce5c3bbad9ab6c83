"""Kubernetes identities at the API: TokenReview for who, SubjectAccessReview for what.

The cluster here is a recording stand-in for the two review calls of `ClusterAccess`
(the sim answers them for real in tests/integration/test_identities.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from pystol_api.http.kube_identity import KubernetesIdentities
from pystol_worker.core.access import ActorKind, Permission
from pystol_worker.kube.cluster_access import ClusterAccess, ClusterError, TokenBucket
from tests.support.manual_clock import ManualClock


class ReviewingCluster:
    """TokenReview answers by token; SubjectAccessReview by (user, verb, resource,
    namespace), except that a token scoped to `user:info` (its `extra`) may do nothing."""

    def __init__(self, users: dict[str, dict[str, Any]],
                 allowed: set[tuple[str, str, str, str | None]]) -> None:
        self.users = users
        self.allowed = allowed
        self.reviews: list[str] = []
        self.access: list[tuple[str, str, str, str | None]] = []
        self.extras: list[dict[str, list[str]] | None] = []  # spec.extra of each review
        self.down = False

    def review_token(self, token: str) -> dict[str, Any]:
        if self.down:
            raise ClusterError("cannot reach the Kubernetes API")
        self.reviews.append(token)
        user = self.users.get(token)
        return {"authenticated": True, "user": user} if user else {"authenticated": False}

    def review_access(self, user: str, groups: list[str], uid: str | None, verb: str,
                      group: str, resource: str, namespace: str | None, *,
                      extra: dict[str, list[str]] | None = None) -> bool:
        if self.down:
            raise ClusterError("cannot reach the Kubernetes API")
        assert group == "pystol.org"
        self.access.append((user, verb, resource, namespace))
        self.extras.append(extra)
        if extra is not None and extra.get(SCOPES) == ["user:info"]:
            return False  # like OpenShift's scope authorizer: this token may only read who
        return (user, verb, resource, namespace) in self.allowed



ROBOT = "system:serviceaccount:shop:robot"
SCOPES = "scopes.authorization.openshift.io"
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"


def make(cluster: ReviewingCluster, clock: ManualClock) -> KubernetesIdentities:
    return KubernetesIdentities(lambda: cluster, clock=clock)  # type: ignore[arg-type,return-value]


def test_a_reviewed_token_is_a_kubernetes_actor_and_rbac_decides_per_namespace() -> None:
    cluster = ReviewingCluster({"t": {"username": ROBOT, "uid": "u-1",
                                      "groups": ["system:serviceaccounts"]}},
                               {(ROBOT, "create", "pystolactions", "shop")})
    identity = make(cluster, ManualClock(0.0)).identify("t")
    assert identity is not None
    assert identity.actor.kind == ActorKind.KUBERNETES and identity.actor.name == ROBOT
    assert identity.actor.groups == ["system:serviceaccounts"]
    assert identity.authority.allows(Permission.JOBS_SUBMIT, "shop")
    assert not identity.authority.allows(Permission.JOBS_SUBMIT, "payments")
    assert not identity.authority.allows(Permission.HALT_LIFT, None)
    assert (ROBOT, "delete", "halts", None) in cluster.access


def test_an_unknown_token_is_no_identity() -> None:
    assert make(ReviewingCluster({}, set()), ManualClock(0.0)).identify("nope") is None


def test_answers_are_cached_for_their_time_only() -> None:
    cluster = ReviewingCluster({"t": {"username": ROBOT}},
                               {(ROBOT, "list", "pystolactions", "shop")})
    clock = ManualClock(0.0)
    identities = make(cluster, clock)
    for _ in range(5):
        identity = identities.identify("t")
        assert identity is not None
        assert identity.authority.allows(Permission.JOBS_READ, "shop")
    assert len(cluster.reviews) == 1 and len(cluster.access) == 1
    clock.now = 31.0  # both caches expired: a revoked binding stops working
    cluster.allowed.clear()
    identity = identities.identify("t")
    assert identity is not None and not identity.authority.allows(Permission.JOBS_READ, "shop")
    assert len(cluster.reviews) == 2 and len(cluster.access) == 2


def test_an_unreachable_cluster_refuses_and_is_asked_again() -> None:
    cluster = ReviewingCluster({"t": {"username": ROBOT}},
                               {(ROBOT, "create", "pystolactions", "shop")})
    identities = make(cluster, ManualClock(0.0))
    identity = identities.identify("t")
    assert identity is not None
    cluster.down = True
    assert not identity.authority.allows(Permission.JOBS_SUBMIT, "shop")  # no, not an error
    cluster.down = False
    assert identity.authority.allows(Permission.JOBS_SUBMIT, "shop")  # the "no" was not kept


def test_a_token_refused_while_the_cluster_was_down_works_once_it_is_back() -> None:
    cluster = ReviewingCluster({"t": {"username": ROBOT}}, set())
    identities = make(cluster, ManualClock(0.0))
    cluster.down = True
    assert identities.identify("t") is None
    cluster.down = False
    assert identities.identify("t") is not None


def test_a_flood_of_random_tokens_is_cut_off_and_known_users_keep_working() -> None:
    cluster = ReviewingCluster({"good": {"username": ROBOT}}, set())
    clock = ManualClock(0.0)
    identities = KubernetesIdentities(lambda: cluster, clock=clock,  # type: ignore[arg-type,return-value]
                                      reviews_per_second=1.0, review_burst=3)
    assert identities.identify("good") is not None
    for index in range(50):
        identities.identify(f"random-{index}")
    assert len(cluster.reviews) == 3  # the burst, then nothing more reaches the cluster
    assert identities.identify("good") is not None  # cached: still signed in
    clock.now = 5.0
    assert identities.identify("random-new") is None
    assert len(cluster.reviews) == 4  # the allowance came back with time


def test_every_access_review_carries_the_users_extra() -> None:
    """TokenReview's `user.extra` (a scope, a credential id) reaches each SAR: an
    authorizer that narrows a user by it must judge the token that signed in."""
    extra = {SCOPES: ["user:full"], CREDENTIAL_ID: ["JTI=abc"]}
    cluster = ReviewingCluster({"t": {"username": ROBOT, "extra": extra}},
                               {(ROBOT, "create", "pystolactions", "shop")})
    identity = make(cluster, ManualClock(0.0)).identify("t")
    assert identity is not None
    assert identity.authority.allows(Permission.JOBS_SUBMIT, "shop")
    assert not identity.authority.allows(Permission.HALT_LIFT, None)
    assert cluster.extras == [extra, extra]
    assert "extra" not in identity.actor.model_dump()  # not in job records or the trail


def test_a_token_scoped_to_user_info_gets_none_of_its_users_rights() -> None:
    """The attack: a token the cluster scoped to `user:info` must not run chaos where
    its user may, neither asked first nor after the full token's answer was cached."""
    scoped = {"username": ROBOT, "extra": {SCOPES: ["user:info"]}}
    cluster = ReviewingCluster({"full": {"username": ROBOT}, "scoped": scoped},
                               {(ROBOT, "create", "pystolactions", "shop")})
    identities = make(cluster, ManualClock(0.0))
    full, narrow = identities.identify("full"), identities.identify("scoped")
    assert full is not None and narrow is not None
    assert full.authority.allows(Permission.JOBS_SUBMIT, "shop")
    assert not narrow.authority.allows(Permission.JOBS_SUBMIT, "shop")
    assert cluster.extras == [None, {SCOPES: ["user:info"]}]  # two questions, not one


def test_two_credentials_of_one_user_do_not_share_cached_answers() -> None:
    first = {"username": ROBOT, "extra": {CREDENTIAL_ID: ["JTI=one"]}}
    second = {"username": ROBOT, "extra": {CREDENTIAL_ID: ["JTI=two"]}}
    cluster = ReviewingCluster({"one": first, "two": second},
                               {(ROBOT, "list", "pystolactions", "shop")})
    identities = make(cluster, ManualClock(0.0))
    for token in ("one", "two", "one", "two"):
        identity = identities.identify(token)
        assert identity is not None and identity.authority.allows(Permission.JOBS_READ, "shop")
    assert cluster.extras == [{CREDENTIAL_ID: ["JTI=one"]}, {CREDENTIAL_ID: ["JTI=two"]}]


def test_the_subject_access_review_sent_to_the_cluster_has_spec_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`ClusterAccess.review_access` itself: the body it posts carries `spec.extra`."""
    access = ClusterAccess(ApiClient(Configuration()), TokenBucket(1000.0, 1000))
    sent: list[dict[str, Any]] = []

    def call_raw(verb: str, func: Any, body: dict[str, Any]) -> Any:
        sent.append(body)
        return SimpleNamespace(data=json.dumps({"status": {"allowed": True}}).encode())

    monkeypatch.setattr(access, "call_raw", call_raw)
    assert access.review_access(ROBOT, ["system:serviceaccounts"], "u-1", "create",
                                "pystol.org", "pystolactions", "shop",
                                extra={SCOPES: ["user:info"]})
    assert access.review_access(ROBOT, [], None, "delete", "pystol.org", "halts", None)
    assert sent[0]["spec"] == {
        "user": ROBOT, "groups": ["system:serviceaccounts"], "uid": "u-1",
        "extra": {SCOPES: ["user:info"]},
        "resourceAttributes": {"verb": "create", "group": "pystol.org",
                               "resource": "pystolactions", "namespace": "shop"}}
    assert "extra" not in sent[1]["spec"]


@pytest.mark.parametrize("user", [
    {"username": ROBOT, "extra": {SCOPES: "user:full"}},            # not a list
    {"username": ROBOT, "extra": {SCOPES: ["user:full", 7]}},       # not strings
    {"username": ROBOT, "extra": ["user:full"]},                     # not a map
    {"username": ROBOT, "extra": {"k": ["v" * (17 * 1024)]}},        # too large to carry
    {"username": ROBOT, "groups": [f"g{n}" for n in range(300)]},    # too many groups
], ids=["value-not-a-list", "value-not-strings", "not-a-map", "huge", "many-groups"])
def test_a_user_whose_extra_cannot_be_carried_faithfully_is_refused(
        user: dict[str, Any]) -> None:
    """Dropping or trimming `extra` would ask RBAC about a wider user than the one who
    signed in; keeping a huge one would fill the review cache. Neither: 401."""
    cluster = ReviewingCluster({"t": user}, {(ROBOT, "create", "pystolactions", "shop")})
    assert make(cluster, ManualClock(0.0)).identify("t") is None
    assert cluster.access == []
