"""The actions that ship with Pystol, one module each."""

from __future__ import annotations

from pystol_worker.actions.registry import ActionRegistry


def register_all(registry: ActionRegistry) -> None:
    from pystol_worker.actions.container_kill import ContainerKill
    from pystol_worker.actions.deployment_scale import DeploymentScale
    from pystol_worker.actions.http_probe import HttpProbeAction
    from pystol_worker.actions.network_partition import NetworkPartition
    from pystol_worker.actions.node_cordon import NodeCordon
    from pystol_worker.actions.node_drain import NodeDrain
    from pystol_worker.actions.pod_failure import PodFailure
    from pystol_worker.actions.pod_kill import PodKill
    from pystol_worker.actions.stress import CpuStress, MemoryStress

    registry.register(PodKill)
    registry.register(NodeCordon)
    registry.register(NodeDrain)
    registry.register(NetworkPartition)
    registry.register(PodFailure)
    registry.register(DeploymentScale)
    registry.register(ContainerKill)
    registry.register(CpuStress)
    registry.register(MemoryStress)
    registry.register(HttpProbeAction)
