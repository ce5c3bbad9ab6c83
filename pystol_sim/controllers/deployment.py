"""Deployments: one ReplicaSet per pod template, revisions, and a simple rollout.

Each distinct template gets a ReplicaSet named `<deployment>-<template hash>`.
Revisions are kept as the real deployment controller keeps them, because
`kubectl rollout history` and `kubectl rollout undo` read them from there: the
annotation `deployment.kubernetes.io/revision` on the ReplicaSet and on the
Deployment; a new template gets the highest revision plus one; going back to an
old template (an undo) reuses its ReplicaSet and moves it to the newest
revision, remembering the old number in `deployment.kubernetes.io/revision-history`.
The Deployment's `kubernetes.io/change-cause` is copied onto its new ReplicaSet.
Old ReplicaSets scaled to zero beyond `revisionHistoryLimit` (default 10) are
deleted. The rollout itself is simple: the old sets go to zero once the new one
has all its replicas ready.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pystol_sim.controllers.manager import Controller
from pystol_sim.controllers.objects import count_of, owner_ref, template_hash
from pystol_sim.errors import ApiError
from pystol_sim.store import json_copy, now_rfc3339

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE = "kubernetes.io/change-cause"
COMPONENT = "deployment-controller"
DEFAULT_HISTORY_LIMIT = 10


def revision_of(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


class DeploymentController(Controller):
    resource = "apps/deployments"

    def reconcile(self, deploy: dict[str, Any]) -> None:
        if deploy["metadata"].get("deletionTimestamp"):
            return
        replicasets = self.manager.type("apps", "v1", "replicasets")
        ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        spec = deploy.get("spec", {})
        desired = count_of(spec.get("replicas"), 1)
        template = spec.get("template") or {}
        digest = template_hash(template)
        owned = self.manager.owned(replicasets, deploy)
        newest = max((revision_of(rs) for rs in owned), default=0)
        cause = (deploy["metadata"].get("annotations") or {}).get(CHANGE_CAUSE)
        current = next((rs for rs in owned
                        if rs["metadata"].get("labels", {}).get("pod-template-hash") == digest),
                       None)
        if current is None:
            current = self._new_replicaset(deploy, template, digest, desired, newest + 1, cause)
            if current is None:
                return
        else:
            self._sync_revision(current, newest, cause, desired)
        revision = revision_of(current)
        if (deploy["metadata"].get("annotations") or {}).get(REVISION) != str(revision):
            fresh = self.store.find(self.manager.type("apps", "v1", "deployments"), ns, name)
            if fresh is not None:
                fresh["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
                self.store.put(self.manager.type("apps", "v1", "deployments"), fresh)
                deploy = fresh
        new_ready = count_of((current.get("status") or {}).get("readyReplicas"))
        old_sets = [rs for rs in owned if rs["metadata"]["uid"] != current["metadata"]["uid"]]
        for old in old_sets:
            replicas = count_of(old["spec"].get("replicas"))
            if replicas and (new_ready >= desired or self.manager.settling):
                old["spec"]["replicas"] = 0
                self.store.put(replicasets, old)
        self._prune(old_sets, count_of(spec.get("revisionHistoryLimit"), DEFAULT_HISTORY_LIMIT))
        self._write_status(deploy, current, old_sets, desired)

    def _new_replicaset(self, deploy: dict[str, Any], template: dict[str, Any], digest: str,
                        desired: int, revision: int, cause: str | None
                        ) -> dict[str, Any] | None:
        ns, name = deploy["metadata"]["namespace"], deploy["metadata"]["name"]
        tmpl = json_copy(template)
        tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = digest
        selector = json_copy(deploy.get("spec", {}).get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
        annotations = {REVISION: str(revision)}
        if cause:
            annotations[CHANGE_CAUSE] = cause
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{name}-{digest}", "namespace": ns,
                           "labels": dict(tmpl["metadata"]["labels"]),
                           "annotations": annotations,
                           "ownerReferences": [owner_ref(deploy)]},
              "spec": {"replicas": desired, "selector": selector, "template": tmpl}}
        with contextlib.suppress(ApiError):
            created = self.store.create(self.manager.type("apps", "v1", "replicasets"), rs, ns)
            self.manager.record_event(deploy, "ScalingReplicaSet",
                                      f"Scaled up replica set {name}-{digest} to {desired}",
                                      component=COMPONENT)
            return created
        return None

    def _sync_revision(self, current: dict[str, Any], newest: int, cause: str | None,
                       desired: int) -> None:
        """Bring the current set to the newest revision (a rollback) and to `desired`."""
        replicasets = self.manager.type("apps", "v1", "replicasets")
        annotations = current["metadata"].setdefault("annotations", {})
        changed = False
        revision = revision_of(current)
        if revision < newest:
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            annotations[REVISION_HISTORY] = ",".join([*history, str(revision)])
            annotations[REVISION] = str(newest + 1)
            if cause:
                annotations[CHANGE_CAUSE] = cause
            else:
                annotations.pop(CHANGE_CAUSE, None)
            changed = True
        elif cause and annotations.get(CHANGE_CAUSE) != cause:
            annotations[CHANGE_CAUSE] = cause  # annotated after the template changed
            changed = True
        before = count_of(current["spec"].get("replicas"))
        if before != desired:
            current["spec"]["replicas"] = desired
            changed = True
        if changed:
            self.store.put(replicasets, current)
        if before != desired:
            owner = current["metadata"]["ownerReferences"][0]["name"]
            deploy = {"kind": "Deployment", "apiVersion": "apps/v1",
                      "metadata": {"name": owner, "namespace": current["metadata"]["namespace"],
                                   "uid": current["metadata"]["ownerReferences"][0]["uid"]}}
            direction = "up" if desired > before else "down"
            self.manager.record_event(deploy, "ScalingReplicaSet",
                                      f"Scaled {direction} replica set "
                                      f"{current['metadata']['name']} from {before} to {desired}",
                                      component=COMPONENT)

    def _prune(self, old_sets: list[dict[str, Any]], limit: int) -> None:
        """Delete the oldest fully scaled-down sets beyond revisionHistoryLimit."""
        idle = [rs for rs in old_sets if not count_of(rs["spec"].get("replicas"))
                and not count_of((rs.get("status") or {}).get("replicas"))]
        idle.sort(key=revision_of)
        replicasets = self.manager.type("apps", "v1", "replicasets")
        for rs in idle[: max(0, len(idle) - max(0, limit))]:
            if not rs["metadata"].get("deletionTimestamp"):
                with contextlib.suppress(ApiError):
                    self.store.delete(replicasets, rs["metadata"]["namespace"],
                                      rs["metadata"]["name"])

    def _write_status(self, deploy: dict[str, Any], current: dict[str, Any],
                      old_sets: list[dict[str, Any]], desired: int) -> None:
        all_sets = [current, *old_sets]
        replicas = sum(count_of((rs.get("status") or {}).get("replicas")) for rs in all_sets)
        ready = sum(count_of((rs.get("status") or {}).get("readyReplicas")) for rs in all_sets)
        updated = count_of((current.get("status") or {}).get("replicas"))
        stamp = now_rfc3339()
        available = ready >= desired
        status = {
            "observedGeneration": deploy["metadata"].get("generation", 1),
            "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, desired - ready),
        }
        old_conditions = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions")
                          or ()}
        conditions = []
        for kind, value, reason, message in (
            ("Available", "True" if available else "False",
             "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "Deployment has minimum availability." if available
             else "Deployment does not have minimum availability."),
            ("Progressing", "True",
             "NewReplicaSetAvailable" if updated == desired and available
             else "ReplicaSetUpdated",
             f'ReplicaSet "{current["metadata"]["name"]}" is progressing.'),
        ):
            old_condition = old_conditions.get(kind)
            transition = (old_condition["lastTransitionTime"]
                          if old_condition and old_condition["status"] == value else stamp)
            update_time = (old_condition["lastUpdateTime"]
                           if old_condition and old_condition.get("reason") == reason else stamp)
            conditions.append({"type": kind, "status": value, "reason": reason,
                               "message": message, "lastTransitionTime": transition,
                               "lastUpdateTime": update_time})
        status["conditions"] = conditions
        for key in ("readyReplicas", "availableReplicas", "unavailableReplicas"):
            if not status[key]:
                status.pop(key)
        prior = dict(deploy.get("status") or {})
        for key in ("readyReplicas", "availableReplicas", "unavailableReplicas"):
            prior.pop(key, None)
        fresh = dict(prior, **status)
        if fresh != deploy.get("status"):
            deploy["status"] = fresh
            self.store.put(self.manager.type("apps", "v1", "deployments"), deploy)
