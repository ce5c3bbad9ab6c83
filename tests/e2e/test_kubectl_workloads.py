"""Real kubectl v1.35 against pystol-sim: running, exposing, batch work and rollbacks.

Each test works in a namespace of its own on one sim (speed 10), with the commands an SRE
types: `kubectl run`, `kubectl expose`, `kubectl create token`, `kubectl wait` on a Job,
`kubectl rollout history/undo`, and `kubectl get jobs,cronjobs` with their columns.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import require_tool
from tests.support.sim_process import SimProcess

pytestmark = pytest.mark.e2e

JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: crunch}
spec:
  completions: 2
  parallelism: 2
  template:
    metadata:
      annotations: {sim.pystol.org/run-seconds: "4"}
    spec:
      restartPolicy: Never
      containers: [{name: crunch, image: "busybox:1.36"}]
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    require_tool("kubectl")
    with SimProcess.start(tmp_path_factory.mktemp("workloads"), speed=10.0) as sim:
        yield sim


@pytest.fixture
def ns(cluster: SimProcess) -> Iterator[str]:
    name = f"wl-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def table(sim: SimProcess, *args: str) -> list[list[str]]:
    """`kubectl get` output split into cells on runs of two or more spaces."""
    lines = sim.kubectl("get", *args).stdout.strip().splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines]


def test_run_then_expose_a_pod_gives_a_service_with_its_address(cluster: SimProcess,
                                                                  ns: str) -> None:
    cluster.kubectl("-n", ns, "run", "probe", "--image=nginx:1.27", "--labels=app=probe")
    cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/probe", "--timeout=30s")
    assert "service/probe exposed" in cluster.kubectl(
        "-n", ns, "expose", "pod", "probe", "--port=80").stdout
    pod_ip = cluster.kubectl("-n", ns, "get", "pod", "probe", "-o",
                             "jsonpath={.status.podIP}").stdout
    service = json.loads(cluster.kubectl("-n", ns, "get", "svc", "probe", "-o", "json").stdout)
    assert service["spec"]["selector"] == {"app": "probe"}
    assert service["spec"]["clusterIP"]
    endpoints = cluster.wait_for(lambda: cluster.kubectl(
        "-n", ns, "get", "endpoints", "probe", "-o",
        "jsonpath={.subsets[*].addresses[*].ip}").stdout)
    assert endpoints == pod_ip


def test_expose_a_deployment_lists_its_ready_pods(cluster: SimProcess, ns: str) -> None:
    cluster.kubectl("-n", ns, "create", "deployment", "web", "--image=nginx:1.27",
                    "--replicas=2")
    cluster.kubectl("-n", ns, "expose", "deployment", "web", "--port=80",
                    "--target-port=8080", "--name=web-public")
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=30s")
    rows = cluster.wait_for(lambda: (r := table(cluster, "-n", ns, "endpoints", "web-public"))
                            and r[1][1].count(":8080") == 2 and r)
    assert rows[0] == ["NAME", "ENDPOINTS", "AGE"]
    pod_ips = cluster.kubectl("-n", ns, "get", "pods", "-l", "app=web", "-o",
                              "jsonpath={.items[*].status.podIP}").stdout.split()
    assert sorted(rows[1][1].split(",")) == sorted(f"{ip}:8080" for ip in pod_ips)


def test_create_token_for_the_default_service_account(cluster: SimProcess, ns: str) -> None:
    token = cluster.kubectl("-n", ns, "create", "token", "default").stdout.strip()
    assert token
    # The token authenticates as the namespace's default ServiceAccount (which, like on a
    # real cluster, may not list pods).
    denied = cluster.kubectl("--token", token, "-n", ns, "get", "pods", check=False)
    assert denied.returncode != 0
    assert f'User "system:serviceaccount:{ns}:default" cannot list resource "pods"' \
        in denied.stderr


def test_wait_for_a_job_to_complete_and_get_its_columns(cluster: SimProcess, ns: str
                                                        ) -> None:
    manifest = cluster.kubeconfig.parent / f"job-{ns}.yaml"
    manifest.write_text(JOB)
    cluster.kubectl("-n", ns, "create", "-f", str(manifest))
    done = cluster.kubectl("-n", ns, "wait", "--for=condition=complete", "job/crunch",
                           "--timeout=60s")
    assert "job.batch/crunch condition met" in done.stdout

    cluster.kubectl("-n", ns, "create", "cronjob", "tick", "--image=busybox:1.36",
                    "--schedule=*/5 * * * *")
    rows = table(cluster, "-n", ns, "jobs,cronjobs")
    assert rows.index([""]) == 2  # two tables, one blank line between them
    (job_header, job_row), (cron_header, cron_row) = rows[:2], rows[3:]
    assert job_header == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert job_row[:3] == ["job.batch/crunch", "Complete", "2/2"]
    assert cron_header == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE",
                           "LAST SCHEDULE", "AGE"]
    assert cron_row[:6] == ["cronjob.batch/tick", "*/5 * * * *", "<none>", "False", "0",
                            "<none>"]
    pods = json.loads(cluster.kubectl("-n", ns, "get", "pods", "-l", "job-name=crunch",
                                      "-o", "json").stdout)["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded", "Succeeded"]


def test_rollout_undo_brings_the_old_image_back(cluster: SimProcess, ns: str) -> None:
    cluster.kubectl("-n", ns, "create", "deployment", "shop", "--image=nginx:1.27",
                    "--replicas=2")
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/shop", "--timeout=30s")
    cluster.kubectl("-n", ns, "set", "image", "deployment/shop", "nginx=nginx:1.28")
    cluster.kubectl("-n", ns, "annotate", "deployment/shop",
                    "kubernetes.io/change-cause=upgrade to 1.28")
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/shop", "--timeout=30s")

    def history() -> list[list[str]]:
        out = cluster.kubectl("-n", ns, "rollout", "history", "deployment/shop").stdout
        return [line.split(None, 1) for line in out.strip().splitlines()[2:]]

    assert cluster.wait_for(lambda: history() == [["1", "<none>"], ["2", "upgrade to 1.28"]])

    assert "rolled back" in cluster.kubectl("-n", ns, "rollout", "undo",
                                            "deployment/shop").stdout
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/shop", "--timeout=30s")
    image = cluster.kubectl("-n", ns, "get", "deployment", "shop", "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "nginx:1.27"
    # Revision 1 became revision 3: the history lists it once, as the newest.
    assert cluster.wait_for(lambda: history() == [["2", "upgrade to 1.28"], ["3", "<none>"]])
    pod_images = cluster.wait_for(lambda: (imgs := cluster.kubectl(
        "-n", ns, "get", "pods", "-l", "app=shop", "--field-selector=status.phase=Running",
        "-o", "jsonpath={.items[*].spec.containers[0].image}").stdout.split())
        and set(imgs) == {"nginx:1.27"} and imgs)
    assert len(pod_images) == 2
