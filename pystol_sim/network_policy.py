"""Which traffic a pod accepts: NetworkPolicy ingress evaluated as a CNI plugin would.

The sim has no packets, so a policy only matters where the sim itself carries
traffic: the API server's proxy (`services/NAME/proxy`, `pods/NAME/proxy`,
service_traffic.py). That traffic comes from the API server, which is no pod: a
pod that a policy isolates for ingress answers it only when a rule lets in
sources outside the pod network. That is exactly what network-partition's policy
(`podSelector` on the pods, `policyTypes: [Ingress, Egress]`, `from` peers that
are all pods) does to a real cluster's API-server proxy, and why its pods stop
answering here too.

Semantics (networking.k8s.io/v1, as Calico and Cilium enforce it):

- a pod is *isolated for ingress* when at least one policy of its namespace selects
  it (`spec.podSelector`, `{}` = every pod) and has `Ingress` among its policyTypes
  (when `policyTypes` is absent: always Ingress);
- an isolated pod accepts a connection when any rule of any such policy allows it:
  no `ingress` rules = deny all; a rule with no `from` (or an empty one) allows every
  source; otherwise one of its peers must match, and, when the rule lists `ports`,
  the destination port must be one of them;
- peers: `podSelector` alone = pods of the policy's namespace; `namespaceSelector`
  alone = every pod of the matching namespaces; both = matching pods in matching
  namespaces; `ipBlock` = sources whose IP is in `cidr` and in no `except`.

Simplified (documented in the README): egress is not evaluated (the proxy's traffic
is ingress to the pod; nothing in the sim originates from a pod); a port rule
matches the destination port by number, or by name against the pod's container
ports, and `endPort` ranges are honoured; protocols are not (all traffic is TCP);
the API server's own address is `APISERVER_ADDRESS`, which an `ipBlock` may let in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pystol_sim.selectors import SelectorError, label_selector_from_spec

# Where the API server's proxied connections come from (a control-plane node's address,
# outside the pod CIDR 10.244.0.0/16 the sim's pods get their IPs from).
APISERVER_ADDRESS = "10.0.0.1"


@dataclass(frozen=True)
class Source:
    """Where a connection comes from: a pod (namespace and labels known) or outside."""

    ip: str
    namespace: str | None = None  # None: not a pod (the API server, anything external)
    labels: Mapping[str, str] | None = None
    namespace_labels: Mapping[str, str] | None = None


APISERVER = Source(APISERVER_ADDRESS)


def _selects(spec: Any, labels: Mapping[str, str] | None) -> bool:
    """A structured label selector against labels; a broken selector selects nothing."""
    if not isinstance(spec, Mapping):
        return False
    try:
        return label_selector_from_spec(spec).matches(labels or {})
    except SelectorError:
        return False


def _ingress_policy(policy: Mapping[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if not types:  # absent: Ingress always, Egress only when egress rules are given
        return True
    return isinstance(types, list) and "Ingress" in types


def selects_pod(policy: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Does the policy apply to this pod (same namespace, podSelector matches)?"""
    meta = pod.get("metadata") or {}
    pmeta = policy.get("metadata") or {}
    if pmeta.get("namespace") != meta.get("namespace"):
        return False
    selector = (policy.get("spec") or {}).get("podSelector")
    return _selects(selector if selector is not None else {}, meta.get("labels"))


def _in_block(ip: str, block: Any) -> bool:
    if not isinstance(block, Mapping):
        return False
    try:
        address = ipaddress.ip_address(ip)
        if address not in ipaddress.ip_network(str(block.get("cidr", "")), strict=False):
            return False
        return not any(address in ipaddress.ip_network(str(cidr), strict=False)
                       for cidr in block.get("except") or ())
    except ValueError:
        return False


def _peer_matches(peer: Any, source: Source, policy_namespace: str) -> bool:
    if not isinstance(peer, Mapping):
        return False
    if "ipBlock" in peer:
        return _in_block(source.ip, peer["ipBlock"])
    pod_selector = peer.get("podSelector")
    ns_selector = peer.get("namespaceSelector")
    if pod_selector is None and ns_selector is None:
        return False  # an empty peer is invalid on a real server; it matches nothing here
    if source.namespace is None:  # not a pod: only ipBlock peers can let it in
        return False
    if ns_selector is None:
        if source.namespace != policy_namespace:
            return False
    elif not _selects(ns_selector, source.namespace_labels):
        return False
    return pod_selector is None or _selects(pod_selector, source.labels)


def _container_port_names(pod: Mapping[str, Any]) -> dict[str, int]:
    names: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name"):
                names[str(port["name"])] = int(port.get("containerPort") or 0)
    return names


def _port_matches(rule_ports: Any, port: int | None, pod: Mapping[str, Any]) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if not isinstance(entry, Mapping):
            continue
        wanted = entry.get("port")
        if wanted is None:  # every port (of the protocol)
            return True
        if port is None:
            continue
        if isinstance(wanted, str) and not wanted.isdigit():
            if _container_port_names(pod).get(wanted) == port:
                return True
            continue
        low = int(wanted)
        high = int(entry.get("endPort") or low)
        if low <= port <= high:
            return True
    return False


@dataclass(frozen=True)
class Verdict:
    """Whether a connection is let in, and which policies isolate the pod (for reports)."""

    allowed: bool
    isolating: tuple[str, ...] = ()


def ingress_verdict(pod: Mapping[str, Any], source: Source, port: int | None,
                    policies: Iterable[Mapping[str, Any]]) -> Verdict:
    """Whether `pod` accepts a connection from `source` to `port` under `policies`
    (every NetworkPolicy of the pod's namespace; others are ignored)."""
    namespace = (pod.get("metadata") or {}).get("namespace") or ""
    isolating: list[str] = []
    for policy in policies:
        if not _ingress_policy(policy) or not selects_pod(policy, pod):
            continue
        isolating.append(str((policy.get("metadata") or {}).get("name", "")))
        for rule in (policy.get("spec") or {}).get("ingress") or ():
            if not isinstance(rule, Mapping):
                continue
            peers = rule.get("from")
            if peers and not any(_peer_matches(peer, source, namespace) for peer in peers):
                continue
            if _port_matches(rule.get("ports"), port, pod):
                return Verdict(True, tuple(isolating))
    return Verdict(not isolating, tuple(isolating))
