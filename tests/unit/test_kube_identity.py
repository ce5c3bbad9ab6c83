"""Kubernetes identities at the API: TokenReview for who, SubjectAccessReview for what.

The cluster here is a recording stand-in for the two review calls of `ClusterAccess`
(the sim answers them for real in tests/integration/test_identities.py)."""

from __future__ import annotations

from typing import Any

from pystol_api.http.kube_identity import KubernetesIdentities
from pystol_worker.core.access import ActorKind, Permission
from pystol_worker.kube.cluster_access import ClusterError
from tests.support.manual_clock import ManualClock


class ReviewingCluster:
    def __init__(self, users: dict[str, dict[str, Any]],
                 allowed: set[tuple[str, str, str, str | None]]) -> None:
        self.users = users
        self.allowed = allowed
        self.reviews: list[str] = []
        self.access: list[tuple[str, str, str, str | None]] = []
        self.down = False

    def review_token(self, token: str) -> dict[str, Any]:
        if self.down:
            raise ClusterError("cannot reach the Kubernetes API")
        self.reviews.append(token)
        user = self.users.get(token)
        return {"authenticated": True, "user": user} if user else {"authenticated": False}

    def review_access(self, user: str, groups: list[str], uid: str | None, verb: str,
                      group: str, resource: str, namespace: str | None) -> bool:
        if self.down:
            raise ClusterError("cannot reach the Kubernetes API")
        assert group == "pystol.org"
        self.access.append((user, verb, resource, namespace))
        return (user, verb, resource, namespace) in self.allowed



ROBOT = "system:serviceaccount:shop:robot"


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
