"""The actions that ship with Pystol, one module each; `default_registry()` registers them."""

from __future__ import annotations

from typing import Any

from pystol_worker.actions.base import Action
from pystol_worker.actions.container_kill import ContainerKill
from pystol_worker.actions.deployment_scale import DeploymentScale
from pystol_worker.actions.http_probe import HttpProbeAction
from pystol_worker.actions.network_partition import NetworkPartition
from pystol_worker.actions.node_cordon import NodeCordon
from pystol_worker.actions.node_drain import NodeDrain
from pystol_worker.actions.pod_failure import PodFailure
from pystol_worker.actions.pod_kill import PodKill
from pystol_worker.actions.steady_state import SteadyStateAction
from pystol_worker.actions.stress import CpuStress, MemoryStress

BUILTIN_ACTIONS: tuple[type[Action[Any]], ...] = (
    PodKill, NodeCordon, NodeDrain, NetworkPartition, PodFailure, DeploymentScale,
    ContainerKill, CpuStress, MemoryStress, HttpProbeAction, SteadyStateAction)
