"""A tiny kopf operator the sim must be able to host: status on create, cleanup on delete."""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 0
    settings.watching.server_timeout = 10


@kopf.on.create("example.com", "v1", "widgets")
def created(spec: dict[str, Any], name: str, **_: Any) -> dict[str, Any]:
    return {"size-seen": spec.get("size")}


@kopf.on.delete("example.com", "v1", "widgets")
def deleted(name: str, namespace: str, **_: Any) -> None:
    # Evidence the finalizer ran before the object went away.
    client.CoreV1Api().create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"{name}-cleaned-up"), data={"widget": name}))
