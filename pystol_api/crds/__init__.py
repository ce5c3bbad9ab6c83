"""Pystol's CustomResourceDefinitions: the manifests shipped here, and installing them.

Install (create or update) Pystol's CustomResourceDefinitions into a cluster.

`pystol up --sim` does it for the simulated cluster before it starts the
watcher; for a real cluster the Helm chart ships them in `crds/`, and
`pystol crds | kubectl apply -f -` does the same by hand.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def crd_dir() -> Path:
    """The folder of the CRD manifests shipped with the package (`kubectl apply -f` it)."""
    return Path(str(resources.files("pystol_api") / "crds"))


def crd_documents(directory: Path | None = None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((directory or crd_dir()).glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def crd_yaml() -> str:
    return yaml.safe_dump_all(crd_documents(), sort_keys=False)


def install_crds(kubeconfig: str) -> list[str]:
    """Create each CRD, or replace it when it exists; returns the names installed."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from pystol_worker.kube.cluster_access import load_api_client

    api = client.ApiextensionsV1Api(load_api_client(kubeconfig))
    names = []
    for doc in crd_documents():
        name = doc["metadata"]["name"]
        # The client serialises a plain dict as it is; typed models would only be rebuilt
        # from the same YAML.
        manifest: Any = doc
        try:
            api.create_custom_resource_definition(manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            current = api.read_custom_resource_definition(name)
            version = current.metadata.resource_version if current.metadata else None
            manifest = {**doc, "metadata": {**doc["metadata"], "resourceVersion": version}}
            api.replace_custom_resource_definition(name, manifest)
        names.append(name)
    return names
