"""The actions that ship with Pystol, one module each."""

from __future__ import annotations

from pystol_worker.actions.registry import ActionRegistry


def register_all(registry: ActionRegistry) -> None:
    from pystol_worker.actions.pod_kill import PodKill

    registry.register(PodKill)
