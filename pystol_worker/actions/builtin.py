"""The actions that ship with Pystol, one module each."""

from __future__ import annotations

from pystol_worker.actions.registry import ActionRegistry


def register_all(registry: ActionRegistry) -> None:
    from pystol_worker.actions.pod_kill import PodKill
    from pystol_worker.actions.stress import CpuStress, MemoryStress
    from pystol_worker.actions.http_probe import HttpProbeAction

    registry.register(PodKill)
    registry.register(CpuStress)
    registry.register(MemoryStress)
    registry.register(HttpProbeAction)
