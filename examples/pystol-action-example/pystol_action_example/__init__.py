"""example-annotate: a third-party Pystol action, as small as a real one can be.

It puts an annotation on the selected pods for the job's `duration` and then
restores each pod's annotation to what it was (removed, or its old value). It
harms nothing, which makes it a good template: replace the patch with your own
fault and keep the rest — the params model, select(), the Fault given to
`hold_faults`, and an undo function that works from the journal entry alone and
is declared on the class (`undo`), which is how the runner and the reaper find it.

Pystol finds it through the `pystol.actions` entry point declared in this
package's pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pystol_worker.actions import Action, JournalEntry, RunContext, SelectContext, Selection
from pystol_worker.core.model import JobSpec, TargetKind
from pystol_worker.faults.fault_holding import Fault, hold_faults, lock_targets
from pystol_worker.faults.pod_selection import select_pods
from pystol_worker.kube.cluster_access import ClusterAccess, NotFound
from pystol_worker.kube.objects import Workload, resolve_workload

# Undo names share one table with every other action's (and are stored in the revert
# journal): prefix them with the action's name, and never rename one.
UNDO_RESTORE = "example-annotate/restore-annotation"
ANNOTATION_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class AnnotateParams(BaseModel):
    """What users may set; its JSON Schema is what `GET /api/v1/actions` shows."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field("example.pystol.org/chaos", max_length=253, pattern=ANNOTATION_KEY,
                     description="Annotation key to set on each selected pod.")
    value: str = Field("injected", max_length=1024, description="Annotation value.")
    seed: int | None = Field(None, description="Random seed for the pod selection.")


def restore_annotation(cluster: ClusterAccess, entry: JournalEntry) -> None:
    """Put the annotation back as it was. Idempotent, and a no-op when the pod is gone
    or was replaced by a new pod of the same name (a StatefulSet's)."""
    target = entry.target
    try:
        pod = cluster.get_pod(target.namespace or "", target.name)
    except NotFound:
        return
    if target.uid and pod["metadata"].get("uid") != target.uid:
        return
    # A merge patch with null removes the key; restoring an old value sets it again.
    cluster.patch("Pod", target.namespace, target.name,
                  {"metadata": {"annotations": {entry.data["key"]: entry.data["previous"]}}})


class ExampleAnnotate(Action[AnnotateParams]):
    name = "example-annotate"
    description = ("Annotate the selected pods for the duration, then restore their "
                   "annotations (an example third-party action).")
    target_kind = TargetKind.PODS
    Params = AnnotateParams
    # Every undo this action's faults journal: the registry collects these for the runner
    # and for the reaper (which reverts a SIGKILLed worker's faults from another process).
    undo = {UNDO_RESTORE: restore_annotation}

    def check(self, spec: JobSpec, params: AnnotateParams | None) -> list[tuple[str, str]]:
        if not spec.duration:
            return [("duration", "example-annotate holds the annotation for a duration: "
                     "give one (e.g. \"duration\": \"30s\")")]
        return []

    def select(self, ctx: SelectContext, spec: JobSpec, params: AnnotateParams) -> Selection:
        # Reads only: previews and dry runs call this too (a SelectContext has no journal).
        return select_pods(ctx.cluster, spec.target, ctx.settings, seed=params.seed)

    def execute(self, ctx: RunContext, spec: JobSpec, params: AnnotateParams,
                selection: Selection) -> None:
        cache: dict[tuple[str, str, str], Workload | None] = {}
        faults = []
        for ref, pod in zip(selection.chosen, selection.objects, strict=True):
            # Locks are per workload: two jobs never hold faults on the same one.
            workload = resolve_workload(ctx.cluster, pod, cache)
            if workload is not None:
                ref.workload = workload.ref
            previous = (pod["metadata"].get("annotations") or {}).get(params.key)
            faults.append(Fault(
                target=ref, undo=UNDO_RESTORE,
                description=f"annotated pod {ref.namespace}/{ref.name} with "
                            f"{params.key}={params.value}",
                inject=_annotator(ctx.cluster, ref.namespace or "", ref.name,
                                  {params.key: params.value}),
                # Everything the undo needs, as JSON: it may run in another process.
                data={"key": params.key, "previous": previous}))
        lock_targets(ctx, spec, selection.chosen)
        hold_faults(ctx, spec, self.name, faults, hold_seconds=spec.duration)


def _annotator(cluster: ClusterAccess, namespace: str, name: str,
               annotations: dict[str, Any]) -> Callable[[], None]:
    def inject() -> None:
        cluster.patch("Pod", namespace, name, {"metadata": {"annotations": annotations}})
    return inject
