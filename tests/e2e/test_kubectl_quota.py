"""Real kubectl v1.35 against pystol-sim: a namespace's ResourceQuota, as an operator sets it
up and meets it (`kubectl create quota`, `kubectl run`, `kubectl describe quota`), and a
chunked `kubectl get` (it pages with `limit`/`continue`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_tool
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    require_tool("kubectl")
    with SimProcess.start(tmp_path_factory.mktemp("kubectl-quota"), speed=10.0) as sim:
        yield sim


def test_a_third_pod_is_refused_and_describe_shows_used_and_hard(cluster: SimProcess) -> None:
    cluster.kubectl("create", "namespace", "capped")
    cluster.kubectl("create", "quota", "q", "--hard=pods=2,requests.cpu=1", "-n", "capped")
    for name in ("one", "two"):
        cluster.kubectl("run", name, "--image=registry.k8s.io/pause:3.9",
                        "--overrides", '{"spec": {"containers": [{"name": "' + name + '", '
                        '"image": "registry.k8s.io/pause:3.9", "resources": {"requests": '
                        '{"cpu": "250m"}}}]}}', "-n", "capped")
    refused = cluster.kubectl("run", "three", "--image=registry.k8s.io/pause:3.9",
                              "-n", "capped", check=False)
    assert refused.returncode != 0
    assert ('Error from server (Forbidden): pods "three" is forbidden: exceeded quota: q, '
            "requested: pods=1, used: pods=2, limited: pods=2") in refused.stderr
    described = cluster.kubectl("describe", "quota", "q", "-n", "capped").stdout
    rows = {line.split()[0]: line.split()[1:] for line in described.splitlines()
            if line.split() and line.split()[0] in ("pods", "requests.cpu")}
    assert rows == {"pods": ["2", "2"], "requests.cpu": ["500m", "1"]}
    cluster.kubectl("delete", "pod", "one", "-n", "capped", "--grace-period=0", "--force")
    cluster.kubectl("run", "three", "--image=registry.k8s.io/pause:3.9", "-n", "capped")


def test_a_chunked_get_lists_every_pod_once(cluster: SimProcess) -> None:
    whole = cluster.kubectl("get", "pods", "-A", "--no-headers", "-o", "name").stdout.split()
    chunked = cluster.kubectl("get", "pods", "-A", "--no-headers", "-o", "name",
                              "--chunk-size=2").stdout.split()
    assert len(whole) > 4
    assert chunked == whole
