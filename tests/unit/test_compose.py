"""docker-compose.yml cannot run here (no Docker engine), so check what it promises."""

from __future__ import annotations

from pathlib import Path

import yaml

from pystol_worker.core.settings import Settings
from pystol_worker.process.health_file import health_file_path

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
        assert service["environment"]["PYSTOL_REDIS_URL"] == "redis://redis:6379/0"
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
