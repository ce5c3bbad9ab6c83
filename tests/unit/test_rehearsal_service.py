"""Server-side rehearsals: checked as a run would be, sealed, one at a time, and a record
edited in Redis to copy another tenant's namespaces is refused before anything is read."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from pystol_worker.core.access import (
    AccessDenied,
    Actor,
    ActorKind,
    Grant,
    Identity,
    Permission,
    Role,
    RoleAuthority,
)
from pystol_worker.core.experiment_model import ExperimentSpec
from pystol_worker.core.policy import Policy
from pystol_worker.core.settings import Settings
from pystol_worker.rehearsal.service import (
    SLOTS_KEY,
    RehearsalNotFound,
    RehearsalRun,
    RehearsalService,
    RehearsalStatus,
)

SHOP_OPERATOR = Identity(Actor(kind=ActorKind.TOKEN, name="shop-ops", role=Role.OPERATOR,
                               namespaces=["shop"]),
                         RoleAuthority(Role.OPERATOR, frozenset({"shop"})))
PAYMENTS_VIEWER = Identity(Actor(kind=ActorKind.TOKEN, name="pay", role=Role.VIEWER,
                                 namespaces=["payments"]),
                           RoleAuthority(Role.VIEWER, frozenset({"payments"})))


def spec(namespace: str = "shop") -> ExperimentSpec:
    return ExperimentSpec.model_validate({"name": "kill-one", "method": [
        {"type": "action", "name": "kill", "job": {
            "action": "pod-kill", "target": {"namespaces": [namespace],
                                             "label_selector": "app=web"}}}]})


def check(spec: ExperimentSpec, identity: Identity) -> Grant:
    """What `ExperimentService.check_steps` answers: the caller's grant, or AccessDenied."""
    for namespace in spec.namespaces():
        if not identity.authority.allows(Permission.JOBS_SUBMIT, namespace):
            raise AccessDenied(f"not allowed in {namespace}", loc="target.namespaces[0]")
    return Grant(submitter=identity.actor.submitter, namespaces=spec.namespaces())


class UntouchableCluster:
    """Any read of the cluster fails the test: refused rehearsals read nothing."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the cluster was touched: {name}")


@pytest.fixture
def service() -> tuple[RehearsalService, list[str]]:
    sent: list[str] = []
    settings = Settings(signing_key="k" * 32)
    return RehearsalService(fakeredis.FakeRedis(), settings, check, sent.append), sent


def test_a_rehearsal_is_stored_queued_with_a_sealed_grant_and_sent(
        service: tuple[RehearsalService, list[str]]) -> None:
    rehearsals, sent = service
    run = rehearsals.start(spec(), SHOP_OPERATOR, speed=5.0)
    assert sent == [run.id]
    stored = rehearsals.get(run.id, SHOP_OPERATOR)
    assert (stored.status, stored.speed, stored.submitter) == (
        RehearsalStatus.QUEUED, 5.0, "token:shop-ops")
    assert stored.grant is not None and stored.grant.signature
    assert stored.grant.namespaces == ["shop"]


def test_outside_the_callers_scope_nothing_is_stored_or_sent(
        service: tuple[RehearsalService, list[str]]) -> None:
    rehearsals, sent = service
    with pytest.raises(AccessDenied):
        rehearsals.start(spec("payments"), SHOP_OPERATOR)
    assert sent == [] and rehearsals.redis.keys("pystol:rehearsal:*") == []


def test_a_record_edited_to_copy_another_namespace_is_refused_before_any_read(
        service: tuple[RehearsalService, list[str]]) -> None:
    rehearsals, _ = service
    run = rehearsals.start(spec(), SHOP_OPERATOR)
    key = f"pystol:rehearsal:{run.id}"
    forged = RehearsalRun.model_validate_json(rehearsals.redis.get(key))
    forged.spec = spec("payments")
    assert forged.grant is not None
    forged.grant.namespaces = ["payments"]
    rehearsals.redis.set(key, forged.model_dump_json())
    ended = rehearsals.execute(run.id, UntouchableCluster(), Policy())  # type: ignore[arg-type]
    assert ended.status == RehearsalStatus.FAILED
    assert "valid grant" in (ended.error or "")
    assert rehearsals.redis.get(SLOTS_KEY) is None  # no slot was taken


@pytest.mark.parametrize("speed", [1e9, -1.0, 0.0])
def test_a_record_edited_to_an_absurd_speed_is_refused_before_any_read(
        service: tuple[RehearsalService, list[str]], speed: float) -> None:
    rehearsals, _ = service
    run = rehearsals.start(spec(), SHOP_OPERATOR, speed=5.0)
    key = f"pystol:rehearsal:{run.id}"
    forged = RehearsalRun.model_validate_json(rehearsals.redis.get(key))
    forged.speed = speed
    rehearsals.redis.set(key, forged.model_dump_json())
    ended = rehearsals.execute(run.id, UntouchableCluster(), Policy())  # type: ignore[arg-type]
    assert ended.status == RehearsalStatus.FAILED
    assert "outside 1..100" in (ended.error or "")
    assert rehearsals.redis.get(SLOTS_KEY) is None


def test_one_rehearsal_at_a_time_the_next_waits_untouched(
        service: tuple[RehearsalService, list[str]]) -> None:
    rehearsals, _ = service
    run = rehearsals.start(spec(), SHOP_OPERATOR)
    rehearsals.redis.set(SLOTS_KEY, 1)  # another worker's rehearsal runs
    waiting = rehearsals.execute(run.id, UntouchableCluster(), Policy())  # type: ignore[arg-type]
    assert waiting.status == RehearsalStatus.QUEUED
    assert "already running" in (waiting.reason or "")
    assert int(rehearsals.redis.get(SLOTS_KEY)) == 1


def test_a_rehearsal_is_hidden_from_who_may_not_read_its_namespaces(
        service: tuple[RehearsalService, list[str]]) -> None:
    rehearsals, _ = service
    run = rehearsals.start(spec(), SHOP_OPERATOR)
    with pytest.raises(RehearsalNotFound):
        rehearsals.get(run.id, PAYMENTS_VIEWER)
    with pytest.raises(RehearsalNotFound):
        rehearsals.get("r-nope", SHOP_OPERATOR)


def test_a_name_that_lost_the_namespace_no_longer_reads_its_rehearsal(
        service: tuple[RehearsalService, list[str]]) -> None:
    """The same token name, re-created as an operator of `cart` only (or narrowed): the
    report of the rehearsal it once asked for in `shop` is not its to read."""
    rehearsals, _ = service
    run = rehearsals.start(spec(), SHOP_OPERATOR)
    renamed = Identity(SHOP_OPERATOR.actor, RoleAuthority(Role.OPERATOR, frozenset({"cart"})))
    assert renamed.actor.submitter == run.submitter
    with pytest.raises(RehearsalNotFound):
        rehearsals.get(run.id, renamed)
    assert rehearsals.get(run.id, SHOP_OPERATOR).id == run.id
