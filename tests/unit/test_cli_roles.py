"""Who may do what through the command line: each CLI command by admin, operator of `shop`
and viewer of `shop`.

The HTTP role table (test_api_roles.py) proves the API refuses; this one proves that a
refusal survives the trip back through the CLI: the command exits 2 (a 4xx), and the
problem's detail, naming the namespace or the operation the caller lacks, reaches the
user on stderr, while nothing was stored or changed. The allowed cells must exit 0 and
leave their effect behind, so a CLI that swallowed the token or sent the wrong request
would fail here too. The app is the real one (fakeredis, a recording queue, a fake
cluster), served over HTTP from a thread, as in test_cli_tokens_audit.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner, Result
from flask import Flask

from pystol_api.cli.commands import Runtime, cli
from pystol_api.http.app import create_app, services_of
from pystol_worker.actions import default_registry
from pystol_worker.core.access import Role
from pystol_worker.core.settings import Settings
from pystol_worker.kube.fake_cluster import FakeCluster
from tests.support.recording_queue import RecordingQueue
from tests.support.served_app import serving

ADMIN_TOKEN = "cli-roles-admin-token"
SIGNING_KEY = "cli-roles-signing-key-0123456789"
ROLES = ("admin", "operator", "viewer")


@pytest.fixture(scope="module")
def module_app() -> Flask:
    cluster = FakeCluster()
    for namespace in ("shop", "payments"):
        cluster.add_pod(namespace, "web-1", labels={"app": "web"})
    settings = Settings(api_tokens=[ADMIN_TOKEN], signing_key=SIGNING_KEY,
                        kubernetes_auth=False, redis_url="redis://127.0.0.1:6379/0")
    return create_app(settings, redis_client=fakeredis.FakeRedis(), queue=RecordingQueue(),
                      registry=default_registry(),
                      cluster_factory=lambda: cluster)  # type: ignore[arg-type,return-value]


@pytest.fixture(scope="module")
def served(module_app: Flask) -> Iterator[str]:
    with serving(module_app) as url:
        yield url


@dataclass
class World:
    app: Flask
    url: str
    tokens: dict[str, str]  # role name -> bearer secret

    def cli(self, who: str, args: list[str]) -> Result:
        env = {"PYSTOL_API_URL": self.url, "PYSTOL_TOKEN": self.tokens[who],
               "PYSTOL_CONFIG": None, "NO_COLOR": None}
        return CliRunner().invoke(cli, args, env=env, obj=Runtime(tty=False))

    def admin_get(self, path: str) -> Any:
        """What the admin sees over HTTP: the truth the refusals must not have changed."""
        with self.app.test_client() as client:
            response = client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert response.status_code == 200, response.json
            return response.json

    def job_ids(self) -> set[str]:
        return {item["id"] for item in self.admin_get("/api/v1/jobs?limit=100")["items"]}

    def job_status(self, job_id: str) -> str:
        status: str = self.admin_get(f"/api/v1/jobs/{job_id}")["status"]
        return status

    def schedule_ids(self) -> set[str]:
        return {item["id"] for item in self.admin_get("/api/v1/schedules")["items"]}

    def halted(self) -> bool:
        return bool(self.admin_get("/api/v1/halt")["halted"])


@pytest.fixture
def world(module_app: Flask, served: str) -> World:
    services_of(module_app).redis.flushall()
    store = services_of(module_app).tokens
    tokens = {"admin": ADMIN_TOKEN}
    for role in (Role.OPERATOR, Role.VIEWER):
        _, tokens[role.value] = store.create(f"{role.value}-shop", role, ["shop"], None,
                                             created_by="test")
    return World(module_app, served, tokens)


def job_in(world: World, namespace: str) -> str:
    """A queued dry-run job in `namespace`, submitted by the admin through the CLI."""
    made = world.cli("admin", ["run", "pod-kill", "-n", namespace, "-l", "app=web",
                               "--dry-run", "-o", "json"])
    assert made.exit_code == 0, made.output
    job_id: str = json.loads(made.stdout)["id"]
    return job_id


@dataclass(frozen=True)
class Case:
    """One CLI command. `allowed` lists the roles that may run it; every other role must
    be refused with exit code 2 and an `error:` line on stderr containing `names`.
    `effect` tells, after the command, whether it changed what it should have (True
    for the allowed roles, False for the refused ones)."""

    name: str
    args: Callable[[World], list[str]]
    allowed: frozenset[str]
    names: dict[str, str]  # refused role -> text the error must contain
    effect: Callable[[World, set[str], set[str], bool], bool]


def a_new_job(world: World, jobs_before: set[str], schedules_before: set[str],
              halted_before: bool) -> bool:
    return len(world.job_ids() - jobs_before) == 1


def a_new_schedule(world: World, jobs_before: set[str], schedules_before: set[str],
                   halted_before: bool) -> bool:
    return len(world.schedule_ids() - schedules_before) == 1


def halt_is_on(world: World, *_: object) -> bool:
    return world.halted()


def halt_is_off(world: World, *_: object) -> bool:
    return not world.halted()


def cancelled(job_of: dict[str, str]) -> Callable[..., bool]:
    def check(world: World, *_: object) -> bool:
        return world.job_status(job_of["id"]) == "cancelled"
    return check


def reads_only(world: World, *_: object) -> bool:
    """A read changes nothing; allowed and refused alike pass (the exit code decides)."""
    return True


def _cancel_case(name: str, namespace: str, allowed: frozenset[str],
                 names: dict[str, str]) -> Case:
    job_of: dict[str, str] = {}

    def args(world: World) -> list[str]:
        job_of["id"] = job_in(world, namespace)
        return ["jobs", "cancel", job_of["id"]]

    check = cancelled(job_of)

    def effect(world: World, jobs: set[str], schedules: set[str], halted: bool) -> bool:
        return check(world)

    return Case(name, args, allowed, names, effect)


EVERYONE = frozenset(ROLES)
ADMIN_OPERATOR = frozenset({"admin", "operator"})
ADMIN = frozenset({"admin"})

CASES: list[Case] = [
    Case("run in own namespace",
         lambda w: ["run", "pod-kill", "-n", "shop", "-l", "app=web", "--dry-run"],
         ADMIN_OPERATOR, {"viewer": "in namespace 'shop'"}, a_new_job),
    Case("run in another tenant's namespace",
         lambda w: ["run", "pod-kill", "-n", "payments", "-l", "app=web", "--dry-run"],
         ADMIN, {"operator": "in namespace 'payments'",
                 "viewer": "in namespace 'payments'"}, a_new_job),
    _cancel_case("cancel a job in own namespace", "shop", ADMIN_OPERATOR,
                 {"viewer": "may not jobs.cancel"}),
    # another tenant's job is not even confirmed to exist: 404, still exit 2
    _cancel_case("cancel a job in another namespace", "payments", ADMIN,
                 {"operator": "Job not found", "viewer": "Job not found"}),
    Case("schedule in own namespace",
         lambda w: ["schedules", "add", "pod-kill", "-n", "shop", "-l", "app=web",
                    "--every", "10m", "--dry-run"],
         ADMIN_OPERATOR, {"viewer": "in namespace 'shop'"}, a_new_schedule),
    Case("schedule in another tenant's namespace",
         lambda w: ["schedules", "add", "pod-kill", "-n", "payments", "-l", "app=web",
                    "--every", "10m", "--dry-run"],
         ADMIN, {"operator": "in namespace 'payments'",
                 "viewer": "in namespace 'payments'"}, a_new_schedule),
    Case("halt", lambda w: ["halt", "--reason", "cli role table"],
         ADMIN_OPERATOR, {"viewer": "may not halt.engage"}, halt_is_on),
    Case("lift the halt", lambda w: ["halt", "--off"],
         ADMIN, {"operator": "may not halt.lift", "viewer": "may not halt.lift"},
         halt_is_off),
    Case("tokens list", lambda w: ["tokens", "list"],
         ADMIN, {"operator": "may not tokens.manage", "viewer": "may not tokens.manage"},
         reads_only),
    Case("audit", lambda w: ["audit"],
         ADMIN, {"operator": "may not audit.read", "viewer": "may not audit.read"},
         reads_only),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cli_command_by_role(world: World, case: Case, role: str) -> None:
    args = case.args(world)
    if case.name == "lift the halt":  # something to lift
        assert world.cli("admin", ["halt", "--reason", "set up by the test"]).exit_code == 0
    jobs_before, schedules_before, halted_before = (world.job_ids(), world.schedule_ids(),
                                                    world.halted())
    result = world.cli(role, args)
    changed = case.effect(world, jobs_before, schedules_before, halted_before)
    if role in case.allowed:
        assert result.exit_code == 0, (case.name, role, result.output)
        assert "error:" not in result.stderr
        assert changed, (case.name, role, "the command exited 0 but did nothing")
        return
    assert result.exit_code == 2, (case.name, role, result.output)
    error_line = result.stderr.splitlines()[0]
    assert error_line.startswith("error: "), result.stderr
    assert case.names[role] in error_line, (case.name, role, result.stderr)
    if "not found" not in error_line:  # a 403 names who was refused
        assert f"token:{role}-shop may not" in error_line, result.stderr
    assert result.stdout == ""
    if case.effect is not reads_only:
        assert not changed, (case.name, role, "refused, yet something changed")
