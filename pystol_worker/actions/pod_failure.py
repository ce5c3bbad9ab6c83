"""pod-failure: make the selected pods' containers unusable for a while, as Chaos Mesh does.

What it simulates: an application that is up but serves nothing (a hung process,
a broken build, a dependency that never answers). The pods stay where they are
— same name, same uid, same node, same IP — but their containers run a pause
image, so readiness never passes and Services drop them.

How: one strategic-merge patch per pod sets the image of each chosen container
(all of them, or the ones named in `containers`) to `image` (default
`registry.k8s.io/pause:3.9`). Changing a container's image is the one change
Kubernetes allows on a running pod; the kubelet restarts the container with the
new image. The revert journal entry (written before the patch) records every
container's original image, and the undo patches those back by container name;
the kubelet restarts the containers with their real images and the pods become
ready again. The undo is idempotent and leaves a pod alone when it is gone or
was replaced by a new pod of the same name (a new pod runs its template's images).

Observed: which pods went not-ready while the fault was held, the lowest number
of ready replicas of each workload during the hold, and — by watch — how long
after the revert each workload was back to its desired number of ready pods
(`recovery_seconds`, counted from the revert, since the workload cannot heal
while the fault is held).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from pystol_worker.actions.base import Action, ActionError, Selection
from pystol_worker.core.model import EventKind, JobSpec, TargetKind, TargetRef
from pystol_worker.faults.fault_holding import Fault, hold_faults, lock_targets
from pystol_worker.faults.pod_selection import select_pods, slim_pod_with_containers
from pystol_worker.faults.recovery import HoldObserver, hold_observer, wait_for_recovery
from pystol_worker.kube.cluster import Cluster
from pystol_worker.kube.cluster_access import NotFound
from pystol_worker.kube.objects import Workload, is_terminating, resolve_workload
from pystol_worker.safety.job_context import RunContext, SelectContext
from pystol_worker.safety.revert_journal import FAULT_MARK, JournalEntry, same_object

DEFAULT_PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
UNDO_RESTORE_IMAGES = "restore-container-images"
ContainerName = Annotated[str, Field(min_length=1, max_length=63,
                                     pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


class PodFailureParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(DEFAULT_PAUSE_IMAGE, min_length=1, max_length=512, pattern=r"^\S+$",
                       description="Image swapped in while the fault is held; a pause image "
                                   "runs but serves nothing, so the pod is never ready.")
    containers: list[ContainerName] | None = Field(
        None, min_length=1, max_length=50,
        description="Names of the containers to swap; default: every container of the pod. "
                    "Pods without one of these containers are left out.")
    seed: int | None = Field(None, description="Random seed for selection, to repeat an "
                                               "experiment exactly.")


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("spec") or {}).get("containers") or ())


def _pod_name(pod: dict[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace', '')}/{pod['metadata']['name']}"


def _images_to_swap(pod: dict[str, Any], params: PodFailureParams) -> tuple[dict[str, str],
                                                                             str | None]:
    """{container: original image} for the containers to swap, or why the pod is left out."""
    images = {c.get("name", ""): c.get("image", "") for c in _containers(pod)}
    names = params.containers or list(images)
    missing = [name for name in names if name not in images]
    if missing:
        return {}, f"pod {_pod_name(pod)} has no container named {', '.join(missing)}"
    already = [name for name in names if images[name] == params.image]
    if already:
        return {}, (f"pod {_pod_name(pod)}: container {', '.join(already)} already runs "
                    f"{params.image}")
    return {name: images[name] for name in names}, None


# -- the undo, journaled before every swap ---------------------------------------------------

def restore_images(cluster: Cluster, entry: JournalEntry) -> None:
    """Put every swapped container's original image back (by container name)."""
    images: dict[str, str] = dict(entry.data.get("images") or {})
    namespace = entry.target.namespace or ""
    try:
        pod = cluster.get_pod(namespace, entry.target.name)
    except NotFound:
        return  # the pod is gone: nothing runs the pause image any more
    if not same_object(pod, entry):
        return  # a new pod of the same name runs its template's images
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(FAULT_MARK) != entry.job_id:
        return  # not this job's swap (already restored, or an old entry replayed)
    current = {c.get("name"): c.get("image") for c in _containers(pod)}
    restore = [{"name": name, "image": image} for name, image in images.items()
               if name in current and current[name] != image]
    body: dict[str, Any] = {"metadata": {"uid": entry.target.uid,
                                         "annotations": {FAULT_MARK: None}}}
    if restore:
        body["spec"] = {"containers": restore}
    try:
        cluster.patch("Pod", namespace, entry.target.name, body)
    except NotFound:
        return


# -- the action ---------------------------------------------------------------------------------

class PodFailure(Action[PodFailureParams]):
    name = "pod-failure"
    description = ("Swap the selected pods' container images for a pause image for the "
                   "duration (the pods stay, but are never ready), then restore the original "
                   "images and measure how long the workloads take to be ready again.")
    target_kind = TargetKind.PODS
    takes_pods = True
    Params = PodFailureParams
    undo = {UNDO_RESTORE_IMAGES: restore_images}

    def check(self, spec: JobSpec, params: PodFailureParams | None) -> list[tuple[str, str]]:
        problems = []
        if not spec.duration:
            problems.append(("duration", "pod-failure holds its fault for a duration: give "
                             "one, e.g. \"duration\": \"60s\""))
        if params is not None and params.containers is not None \
                and len(set(params.containers)) != len(params.containers):
            problems.append(("params.containers", "a container is named twice"))
        return problems

    def select(self, ctx: SelectContext, spec: JobSpec, params: PodFailureParams
               ) -> Selection:
        selection = select_pods(ctx.cluster, spec.target, ctx.settings, seed=params.seed,
                                project=slim_pod_with_containers)
        return selection.without(lambda pod: _images_to_swap(pod, params)[1])

    def execute(self, ctx: RunContext, spec: JobSpec, params: PodFailureParams,
                selection: Selection) -> None:
        cache: dict[tuple[str, str, str], Workload | None] = {}
        observers: dict[str, HoldObserver] = {}
        observer_of: dict[str, HoldObserver] = {}
        for ref, pod in zip(selection.chosen, selection.objects, strict=True):
            workload = resolve_workload(ctx.cluster, pod, cache)
            if workload is None:
                continue
            ref.workload = workload.ref
            observer = observers.get(str(workload.ref))
            if observer is None:
                observer = observers[str(workload.ref)] = hold_observer(ctx.cluster, workload)
            observer.watched.add(ref.uid or "")
            observer_of[ref.uid or ""] = observer
        lock_targets(ctx, spec, selection.chosen)
        faults, report = self._faults(ctx, params, selection.chosen, observer_of)
        if not faults:
            raise ActionError("every selected pod was gone or changed before the fault "
                                 "could be injected")
        ctx.result.output["pods"] = report
        try:
            for observer in observers.values():
                observer.start()
            hold_faults(ctx, spec, self.name, faults, hold_seconds=spec.duration)
            reverted_at = time.time()
            for item in report:
                observer = observer_of.get(item["uid"])
                if observer is not None:
                    item["not_ready_while_held"] = item["uid"] in observer.unready_seen
            for observer in observers.values():
                ctx.result.output.setdefault("lowest_ready_while_held", {})[
                    str(observer.workload.ref)] = observer.lowest_ready
            wait_for_recovery(ctx, spec, list(observers.values()), reverted_at)
        finally:
            for observer in observers.values():
                observer.stop.set()

    def _faults(self, ctx: RunContext, params: PodFailureParams, refs: list[TargetRef],
                observer_of: dict[str, HoldObserver]) -> tuple[list[Fault],
                                                               list[dict[str, Any]]]:
        """One fault per pod, from a fresh read (the selection may be a lock wait old)."""
        faults, report = [], []
        for ref in refs:
            namespace = ref.namespace or ""
            try:
                pod = ctx.cluster.get_pod(namespace, ref.name)
            except NotFound:
                pod = None
            if pod is None or pod["metadata"].get("uid") != ref.uid or is_terminating(pod):
                ctx.event(EventKind.SKIPPED, f"pod {namespace}/{ref.name} was gone or terminating "
                          "before the injection", pod=ref.name)
                continue
            images, reason = _images_to_swap(pod, params)
            if reason:
                ctx.event(EventKind.SKIPPED, reason, pod=ref.name)
                continue
            observer = observer_of.get(ref.uid or "")
            # The mark says "this job swapped these images": the undo restores only while
            # it is there (and removes it), so an old journal entry replayed changes nothing.
            # The uid makes the patch fail rather than touch a newer pod of the same name.
            mark: dict[str, Any] = {"annotations": {FAULT_MARK: ctx.job_id}}
            if ref.uid:
                mark["uid"] = ref.uid
            swap = {"metadata": mark,
                    "spec": {"containers": [{"name": name, "image": params.image}
                                            for name in images]}}

            def inject(cluster: Cluster = ctx.cluster, ns: str = namespace,
                       name: str = ref.name, body: dict[str, Any] = swap,
                       observer: HoldObserver | None = observer) -> None:
                cluster.patch("Pod", ns, name, body)
                if observer is not None:
                    observer.injected(time.time())
            faults.append(Fault(
                target=ref, undo=UNDO_RESTORE_IMAGES, inject=inject,
                description=f"swapped container(s) {', '.join(images)} of pod "
                            f"{namespace}/{ref.name} for {params.image}",
                data={"images": images}))
            report.append({"pod": ref.name, "namespace": namespace, "uid": ref.uid,
                           "workload": str(ref.workload) if ref.workload else None,
                           "original_images": images, "image": params.image})
        return faults, report
