"""docker-compose.yml cannot run here (no Docker engine), so check what it promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pystol_worker.core.settings import Settings
from pystol_worker.process.health_file import health_file_path
from pystol_worker.store.redis_connection import parse_redis_url

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_redis_with_aof_api_and_workers_with_health_checks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"redis", "api", "worker", "beat", "watcher"}
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    for name in ("redis", "api", "worker", "beat", "watcher"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker", "beat", "watcher"):
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["PYSTOL_REDIS_URL"].endswith("@redis:6379/0")
        assert service["build"] == "."
    assert services["api"]["command"] == ["api"]
    assert services["worker"]["command"][0] == "worker"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    for process in ("worker", "beat"):  # the file each process itself touches, not the broker
        expected = str(health_file_path(Settings().health_dir, process))
        test = services[process]["healthcheck"]["test"]
        assert test[1:4] == ["pystol", "health", "--file"] and test[4] == expected, test
    assert services["beat"]["command"] == ["beat"] and services["beat"]["deploy"]["replicas"] == 1
    assert services["watcher"]["command"][:3] == ["watch", "--peering", "pystol"]
    assert services["watcher"]["deploy"]["replicas"] == 2


def test_dockerfile_installs_the_package_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text
    assert 'ENTRYPOINT ["pystol"]' in text
    for package in ("pystol_api", "pystol_worker", "pystol_sim"):
        assert f"COPY {package}" in text


def interpolate(value: str, environ: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (a missing required variable
    stops `docker compose up` with the error)."""
    def one(match: re.Match[str]) -> str:
        name, kind, rest = match["name"], match["kind"], match["rest"]
        if environ.get(name):
            return environ[name]
        if kind == ":?":
            raise LookupError(f"{name}: {rest}")
        return rest or ""
    return re.sub(r"\$\{(?P<name>\w+)(?:(?P<kind>:[-?])(?P<rest>[^}]*))?\}", one, value)


def test_compose_redis_requires_a_password_that_every_process_uses() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    command = services["redis"]["command"]
    with pytest.raises(LookupError, match="PYSTOL_REDIS_PASSWORD"):  # no default password
        interpolate(command[command.index("--requirepass") + 1], {})
    with pytest.raises(LookupError, match="PYSTOL_REDIS_PASSWORD"):
        interpolate(services["api"]["environment"]["PYSTOL_REDIS_URL"], {})

    environ = {"PYSTOL_REDIS_PASSWORD": "0123abcdef"}
    command = [interpolate(arg, environ) for arg in services["redis"]["command"]]
    assert command[command.index("--requirepass") + 1] == "0123abcdef"
    assert interpolate(services["redis"]["environment"]["REDISCLI_AUTH"], environ) == \
        "0123abcdef"  # the health check's redis-cli authenticates
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in ("api", "worker", "beat", "watcher"):
        url = interpolate(services[name]["environment"]["PYSTOL_REDIS_URL"], environ)
        endpoint = parse_redis_url(url)
        assert (endpoint.password, endpoint.host, endpoint.port) == ("0123abcdef", "redis", 6379)


def test_compose_redis_refuses_writes_at_maxmemory_below_its_memory_limit() -> None:
    redis = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    maxmemory = re.fullmatch(r"(\d+)mb", command[command.index("--maxmemory") + 1])
    limit = re.fullmatch(r"(\d+)m", redis["mem_limit"])
    assert maxmemory and limit  # both in MiB (Redis's "mb", compose's "m")
    # well above: room for the AOF rewrite's fork, so the kernel never OOM-kills Redis
    assert int(limit[1]) >= 1.5 * int(maxmemory[1])
