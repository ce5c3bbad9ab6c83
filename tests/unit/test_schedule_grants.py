"""A schedule's grant (issue 12), attack first: what someone who can write to Redis, or
whose rights were taken away, should not get out of a schedule.

- the policy's shortest period holds for cron too, not only for `interval` and `mtbf`;
- the seal covers the whole schedule (timing, windows, paused, concurrency policy) and
  who last changed it: any of them altered in Redis makes the fire fail, before a job is
  stored or queued;
- pausing keeps the owner and a grant that verifies, but drops (never re-seals) a grant
  that was forged in Redis;
- a schedule last changed by a named token stops running when that token is revoked,
  expires, or no longer covers the grant's namespaces; a settings token (PYSTOL_API_TOKENS)
  is not re-checked (the worker does not know them).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest

from pystol_worker.core.access import Identity, Role
from pystol_worker.core.model import Source
from pystol_worker.core.policy import Policy
from pystol_worker.core.schedule_model import ScheduleSpec
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.submission import PolicyRefused, SubmissionService
from pystol_worker.schedules.firing import FireResult, ScheduleFirer
from pystol_worker.schedules.store import ScheduleStore, StoredSchedule
from pystol_worker.store.halt import HaltSwitch
from pystol_worker.store.token_store import TokenStore
from tests.support.grants import ADMIN
from tests.support.recording_queue import RecordingQueue

T0 = datetime(2025, 6, 11, 10, 0, tzinfo=UTC).timestamp()  # a Wednesday
KILL_IN_SHOP: dict[str, Any] = {"action": "pod-kill", "target": {
    "namespaces": ["shop"], "label_selector": "app=web", "mode": "one"}}
DRAIN_N1: dict[str, Any] = {"action": "node-drain", "target": {"names": ["n1"]},
                            "duration": "1s"}
HOURLY: dict[str, Any] = {"interval": "1h", "template": KILL_IN_SHOP}
GRANT_DOES_NOT_VERIFY = "grant does not verify"


@dataclass
class Schedules:
    """A schedule store, a firer and a token store on one fakeredis, with a clock of its
    own (the token store's expiry reads the wall clock, as the firer's does)."""

    policy: Policy = field(default_factory=Policy)

    def __post_init__(self) -> None:
        self.redis = fakeredis.FakeRedis()
        self.now = T0
        self.settings = Settings()
        self.key = self.settings.signing_key_bytes
        self.store = ScheduleStore(self.redis, self.settings, clock=lambda: self.now,
                                   rng=random.Random(1), policy=self.policy)
        self.queue = RecordingQueue()
        self.firer = ScheduleFirer(self.store, SubmissionService(
            self.store.jobs, self.queue, self.store.registry, self.settings,
            HaltSwitch(self.redis), policy=self.policy))
        self.tokens = TokenStore(self.redis, self.key)
        # The firer checks a named token owner against the token store: these are real.
        self.ci = self.token("ci", Role.OPERATOR, "shop")
        self.pager = self.token("pager", Role.OPERATOR, "shop")

    def create(self, document: dict[str, Any], identity: Identity = ADMIN,
               schedule_id: str = "s1") -> Any:
        return self.store.create(ScheduleSpec.model_validate(document), Source.API, identity,
                                 schedule_id=schedule_id)

    def token(self, name: str, role: Role, *namespaces: str,
              expires: float | None = None) -> Identity:
        """A named token made in the token store, as `pystol tokens create` makes it."""
        token, _ = self.tokens.create(name, role, list(namespaces), expires, "test")
        return Identity(token.actor(), token.authority())

    def stored(self, schedule_id: str = "s1") -> StoredSchedule:
        """The schedule as it is in Redis."""
        return StoredSchedule.model_validate_json(self.redis.get(self.store.key(schedule_id)))

    def edit(self, edit: Callable[[dict[str, Any]], None], schedule_id: str = "s1") -> None:
        """Change the stored schedule the way anyone who can write to Redis could."""
        key = self.store.key(schedule_id)
        document = json.loads(self.redis.get(key))
        edit(document)
        self.redis.set(key, json.dumps(document))

    def fire(self, schedule_id: str = "s1") -> FireResult:
        """Fire the slot the schedule is aimed at (aiming it first, as beat's stale fire
        does, when nothing is aimed: e.g. it was paused)."""
        aimed = self.store.state(schedule_id).aimed
        if aimed is None:
            self.firer.fire(schedule_id, fired_at=self.now, task_id=f"aim-{self.now}")
            aimed = self.store.state(schedule_id).aimed
        assert aimed is not None
        self.now = max(self.now, aimed / 1000) + 0.003
        return self.firer.fire(schedule_id, fired_at=self.now, task_id=f"t-{self.now}")

    def nothing_submitted(self) -> None:
        assert self.store.jobs.list().items == [] and self.queue.sent == []


def assert_refused(schedules: Schedules, result: FireResult, why: str) -> None:
    assert result.outcome == "failed", result
    assert why in (result.reason or ""), result.reason
    assert result.job_id is None
    schedules.nothing_submitted()
    assert why in (schedules.store.get("s1").last_runs[0].reason or "")


# -- the policy's shortest period, cron included ---------------------------------------------


def test_a_cron_schedule_running_more_often_than_the_policy_allows_is_refused() -> None:
    schedules = Schedules(policy=Policy(min_schedule_period=3600))
    for cron in ("* * * * *", "*/5 * * * *", "0,30 * * * *", "*/59 * * * *"):
        with pytest.raises(PolicyRefused) as refused:
            schedules.create({"cron": cron, "template": KILL_IN_SHOP})
        [problem] = refused.value.problems
        assert problem.loc == "cron", cron
        assert "no more often than every 3600s" in problem.msg
    # A gap that is short only once in a while counts too: 09:00 and 09:30, daily.
    with pytest.raises(PolicyRefused) as uneven:
        schedules.create({"cron": "0,30 9 * * *", "template": KILL_IN_SHOP})
    assert [p.loc for p in uneven.value.problems] == ["cron"]
    assert schedules.store.list() == []
    # Hourly and daily are within the policy.
    assert schedules.create({"cron": "0 * * * *", "template": KILL_IN_SHOP}).spec.cron \
        == "0 * * * *"
    assert schedules.create({"cron": "@daily", "template": KILL_IN_SHOP},
                            schedule_id="s2").spec.cron == "@daily"


def test_interval_and_mtbf_are_still_held_to_the_policys_shortest_period() -> None:
    schedules = Schedules(policy=Policy(min_schedule_period=3600))
    for document, loc in (({"interval": "59m"}, "interval"), ({"mtbf": "10m"}, "mtbf")):
        with pytest.raises(PolicyRefused) as refused:
            schedules.create({**document, "template": KILL_IN_SHOP})
        assert [p.loc for p in refused.value.problems] == [loc]
    assert schedules.create(HOURLY).spec.interval == 3600
    assert schedules.create({"mtbf": "2h", "template": KILL_IN_SHOP},
                            schedule_id="s2").spec.mtbf == 7200


def test_a_cron_schedule_cannot_be_changed_to_run_more_often_either() -> None:
    schedules = Schedules(policy=Policy(min_schedule_period=3600))
    schedules.create({"cron": "0 * * * *", "template": KILL_IN_SHOP})
    with pytest.raises(PolicyRefused) as refused:
        schedules.store.update("s1", ScheduleSpec.model_validate(
            {"cron": "* * * * *", "template": KILL_IN_SHOP}), ADMIN)
    assert [p.loc for p in refused.value.problems] == ["cron"]
    assert schedules.store.get("s1").spec.cron == "0 * * * *"


# -- the seal covers the whole schedule ------------------------------------------------------


def every_minute(document: dict[str, Any]) -> None:
    document["spec"]["interval"] = 60.0


def without_windows(document: dict[str, Any]) -> None:
    document["spec"]["windows"] = []


def allow_overlaps(document: dict[str, Any]) -> None:
    document["spec"]["concurrency_policy"] = "Allow"


def unpaused(document: dict[str, Any]) -> None:
    document["spec"]["paused"] = False


def on_behalf_of_the_admin(document: dict[str, Any]) -> None:
    document["changed_by"] = json.loads(ADMIN.actor.model_dump_json())


ALTERATIONS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], None]]] = {
    # The policy allows hourly runs: someone makes it fire every minute.
    "interval": (HOURLY, every_minute),
    # Office hours only: someone lets it run around the clock.
    "windows": ({**HOURLY, "windows": ["mon-fri 09:00-17:00"]}, without_windows),
    # Never two at once: someone lets the runs pile up.
    "concurrency_policy": ({**HOURLY, "concurrency_policy": "Forbid"}, allow_overlaps),
    # Paused during an incident: someone resumes it behind everyone's back.
    "paused": ({**HOURLY, "paused": True}, unpaused),
    # Someone makes its runs look like the admin's.
    "changed_by": (HOURLY, on_behalf_of_the_admin),
}


@pytest.mark.parametrize("alteration", list(ALTERATIONS))
def test_a_schedule_altered_in_redis_beyond_its_template_fails_its_fire(
        alteration: str) -> None:
    schedules = Schedules(policy=Policy(min_schedule_period=3600))
    document, alter = ALTERATIONS[alteration]
    schedules.create(document, schedules.ci)
    schedules.edit(alter)
    assert schedules.stored().identity(schedules.key) is None

    assert_refused(schedules, schedules.fire(), GRANT_DOES_NOT_VERIFY)


def test_an_untouched_schedule_fires() -> None:
    """The counterpart of the alterations: the same schedules, untouched, run."""
    for document, _ in ALTERATIONS.values():
        schedules = Schedules(policy=Policy(min_schedule_period=3600))
        schedules.create({**document, "paused": False}, schedules.ci)
        result = schedules.fire()
        assert result.outcome == "started", result.reason


def test_pausing_keeps_the_owner_and_a_grant_that_verifies() -> None:
    """Someone with schedules.update pauses another's schedule: it stays theirs, and once
    resumed by its owner its runs go on on the owner's behalf."""
    schedules = Schedules()
    schedules.create(HOURLY, schedules.ci)
    schedules.store.set_paused("s1", True, schedules.pager)

    stored = schedules.stored()
    assert stored.spec.paused and stored.changed_by == schedules.ci.actor
    paused_as = stored.identity(schedules.key)
    assert paused_as is not None and paused_as.actor.on_behalf_of == "token:ci"
    skipped = schedules.fire()
    assert (skipped.outcome, skipped.reason) == ("skipped", "the schedule is paused")
    schedules.nothing_submitted()

    schedules.store.set_paused("s1", False, schedules.ci)
    result = schedules.fire()
    assert result.outcome == "started", result.reason
    actor = schedules.store.jobs.get(result.job_id).actor
    assert actor is not None and actor.on_behalf_of == "token:ci"


def test_pausing_twice_and_resuming_by_someone_else_runs_on_their_behalf() -> None:
    schedules = Schedules()
    schedules.create(HOURLY, schedules.ci)
    schedules.store.set_paused("s1", True, schedules.pager)
    schedules.store.set_paused("s1", True, ADMIN)  # pausing a paused one: still sealed
    assert schedules.stored().identity(schedules.key) is not None
    schedules.store.set_paused("s1", False, schedules.pager)
    result = schedules.fire()
    assert result.outcome == "started", result.reason
    actor = schedules.store.jobs.get(result.job_id).actor
    assert actor is not None and actor.on_behalf_of == "token:pager"


def test_pausing_a_schedule_whose_grant_was_forged_drops_the_grant() -> None:
    """A grant widened in Redis must not be laundered by someone pausing the schedule (a
    pause re-seals what it keeps)."""
    schedules = Schedules()
    schedules.create(HOURLY, schedules.ci)

    def widen(document: dict[str, Any]) -> None:
        document["grant"]["namespaces"] = ["shop", "payments"]
        document["grant"]["cluster"] = True
        document["spec"]["template"]["target"]["namespaces"] = ["shop", "payments"]
    schedules.edit(widen)
    schedules.store.set_paused("s1", True, ADMIN)

    stored = schedules.stored()
    assert stored.grant is None
    assert stored.identity(schedules.key) is None
    schedules.edit(unpaused)  # and then whoever forged it resumes it in Redis
    assert_refused(schedules, schedules.fire(), GRANT_DOES_NOT_VERIFY)


# -- the owner's rights are checked at each fire ---------------------------------------------


def test_a_schedule_of_a_revoked_token_stops_running() -> None:
    schedules = Schedules()
    # Allow: its first job stays queued here, and the second fire must still reach the grant.
    schedules.create({**HOURLY, "concurrency_policy": "Allow"}, schedules.ci)
    assert schedules.fire().outcome == "started"
    schedules.queue.sent.clear()
    jobs_before = schedules.store.jobs.list().items

    schedules.tokens.revoke("ci")
    result = schedules.fire()

    assert result.outcome == "failed" and result.job_id is None
    assert "token ci, which last changed it, was revoked or has expired" in (result.reason
                                                                             or "")
    assert schedules.store.jobs.list().items == jobs_before and schedules.queue.sent == []


def test_a_schedule_of_an_expired_token_stops_running() -> None:
    schedules = Schedules()
    schedules.create(HOURLY, schedules.token("short", Role.OPERATOR, "shop", expires=0.05))
    time.sleep(0.1)  # the token store's clock is the wall clock
    assert_refused(schedules, schedules.fire(),
                   "token short, which last changed it, was revoked or has expired")


@pytest.mark.parametrize(("role", "namespaces"), [
    (Role.OPERATOR, ("payments",)),  # the name handed to another tenant
    (Role.VIEWER, ("shop",)),        # same namespace, but may no longer run chaos there
])
def test_a_token_recreated_with_the_same_name_elsewhere_does_not_inherit_the_schedule(
        role: Role, namespaces: tuple[str, ...]) -> None:
    schedules = Schedules()
    schedules.create(HOURLY, schedules.ci)
    schedules.tokens.revoke("ci")
    time.sleep(0.002)  # the token store's clock is the wall clock
    schedules.token("ci", role, *namespaces)

    assert_refused(schedules, schedules.fire(),
                   "token ci, which last changed it, was revoked (a token of that name was "
                   "created again)")


def test_a_token_recreated_with_the_same_name_and_rights_does_not_inherit_the_schedule(
        ) -> None:
    """Even with the very same role and namespaces, a re-created name is another token
    (perhaps someone else's): the old holder's schedule stops."""
    schedules = Schedules()
    schedules.create(HOURLY, schedules.ci)
    schedules.tokens.revoke("ci")
    time.sleep(0.002)  # the token store's clock is the wall clock
    schedules.token("ci", Role.OPERATOR, "shop")

    assert_refused(schedules, schedules.fire(),
                   "token ci, which last changed it, was revoked (a token of that name was "
                   "created again)")


def test_a_node_level_schedule_stops_when_its_token_is_no_longer_an_admin() -> None:
    schedules = Schedules()
    schedules.create({"interval": "1h", "template": DRAIN_N1},
                     schedules.token("root", Role.ADMIN))
    schedules.tokens.revoke("root")
    time.sleep(0.002)
    schedules.token("root", Role.OPERATOR, "shop")  # no cluster-level chaos

    assert_refused(schedules, schedules.fire(), "token root, which last changed it, was "
                   "revoked (a token of that name was created again)")


def test_a_schedule_of_a_token_that_still_holds_runs() -> None:
    schedules = Schedules()
    schedules.create(HOURLY, schedules.token("wide", Role.OPERATOR, "shop", "payments"))
    result = schedules.fire()
    assert result.outcome == "started", result.reason
    actor = schedules.store.jobs.get(result.job_id).actor
    assert actor is not None and actor.on_behalf_of == "token:wide"


def test_a_settings_token_owner_is_not_rechecked() -> None:
    """The worker does not know PYSTOL_API_TOKENS: a schedule an admin settings token made
    runs without any named token in the store."""
    schedules = Schedules()
    schedules.create(HOURLY, ADMIN)
    for name in ("ci", "pager"):
        schedules.tokens.revoke(name)
    assert schedules.tokens.list() == []
    result = schedules.fire()
    assert result.outcome == "started", result.reason
    actor = schedules.store.jobs.get(result.job_id).actor
    assert actor is not None and actor.on_behalf_of == ADMIN.actor.submitter
