"""kopf, unchanged, runs an operator against pystol-sim: list+watch, status, finalizers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config import kube_config

from tests.support.sim_process import SimProcess

OPERATOR = Path(__file__).with_name("kopf_widgets_operator.py")

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": {
                          "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


def wait(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_kopf_operator_handles_create_and_delete(fresh_sim: SimProcess,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # kopf logs in through the kubernetes client's default kubeconfig location, which the
    # client reads from $KUBECONFIG once, at import time.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(fresh_sim.kubeconfig))
    config.load_kube_config(config_file=str(fresh_sim.kubeconfig))
    client.ApiextensionsV1Api().create_custom_resource_definition(CRD)
    objects = client.CustomObjectsApi()
    wait(lambda: objects.list_cluster_custom_object("example.com", "v1", "widgets") is not None)

    with KopfRunner(["run", "--standalone", "--namespace", "shop", "--verbose",
                     str(OPERATOR)]) as runner:
        objects.create_namespaced_custom_object("example.com", "v1", "shop", "widgets", {
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "gear"}, "spec": {"size": 4}})

        def handled() -> dict[str, Any] | None:
            widget = objects.get_namespaced_custom_object("example.com", "v1", "shop",
                                                          "widgets", "gear")
            return widget if widget.get("status", {}).get("created") else None

        widget = wait(handled)
        assert widget["status"]["created"] == {"size-seen": 4}
        assert any("kopf" in f for f in widget["metadata"].get("finalizers", []))

        objects.delete_namespaced_custom_object("example.com", "v1", "shop", "widgets", "gear")

        def gone() -> bool:
            try:
                objects.get_namespaced_custom_object("example.com", "v1", "shop", "widgets",
                                                     "gear")
            except ApiException as error:
                return error.status == 404
            return False

        wait(gone)
        evidence = client.CoreV1Api().read_namespaced_config_map("gear-cleaned-up", "shop")
        assert evidence.data == {"widget": "gear"}

    assert runner.exception is None, runner.exception
    assert runner.exit_code == 0, runner.output
    assert "Handler 'created' succeeded" in runner.output
    assert "Handler 'deleted' succeeded" in runner.output
