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
import re
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


def _spec(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = policy.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def port_number(value: Any) -> int | None:
    """A port given as a number (an int, or a string of ASCII digits); None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def _ingress_policy(policy: Mapping[str, Any]) -> bool:
    spec = _spec(policy)
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
    selector = _spec(policy).get("podSelector")
    return _selects(selector if selector is not None else {}, meta.get("labels"))


def _in_block(ip: str, block: Any) -> bool:
    if not isinstance(block, Mapping):
        return False
    try:
        cidr, excepts = block.get("cidr"), block.get("except") or []
        if not isinstance(cidr, str) or not isinstance(excepts, list) \
                or not all(isinstance(c, str) for c in excepts):
            return False  # a broken block matches nothing
        address = ipaddress.ip_address(ip)
        if address not in ipaddress.ip_network(cidr, strict=False):
            return False
        return not any(address in ipaddress.ip_network(c, strict=False) for c in excepts)
    except (ValueError, TypeError):
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
    containers = (pod.get("spec") or {}).get("containers")
    for container in containers if isinstance(containers, list) else ():
        ports = container.get("ports") if isinstance(container, Mapping) else None
        for port in ports if isinstance(ports, list) else ():
            if isinstance(port, Mapping) and port.get("name"):
                names[str(port["name"])] = port_number(port.get("containerPort")) or 0
    return names


def _port_matches(rule_ports: Any, port: int | None, pod: Mapping[str, Any]) -> bool:
    """Does one of the rule's ports let `port` in? A broken entry matches nothing."""
    if rule_ports is None or rule_ports == []:
        return True
    if not isinstance(rule_ports, list):
        return False
    for entry in rule_ports:
        if not isinstance(entry, Mapping):
            continue
        wanted = entry.get("port")
        end = entry.get("endPort")
        if wanted is None:  # every port (of the protocol)
            if end is None:
                return True
            continue
        if port is None:
            continue
        low = port_number(wanted)
        if low is None:
            if isinstance(wanted, str) and end is None \
                    and _container_port_names(pod).get(wanted) == port:
                return True
            continue
        high = low if end is None else port_number(end)
        if high is not None and low <= port <= high:
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
        rules = _spec(policy).get("ingress")
        for rule in rules if isinstance(rules, list) else ():
            if not isinstance(rule, Mapping):
                continue
            peers = rule.get("from")
            if peers and not (isinstance(peers, list) and any(
                    _peer_matches(peer, source, namespace) for peer in peers)):
                continue
            if _port_matches(rule.get("ports"), port, pod):
                return Verdict(True, tuple(isolating))
    return Verdict(not isolating, tuple(isolating))


# ------------------------------------------------------------------------- admission

PROTOCOLS = ("SCTP", "TCP", "UDP")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _port_causes(entry: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(entry, Mapping):
        return [(where, "Invalid value: must be an object")]
    causes: list[tuple[str, str]] = []
    protocol = entry.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        causes.append((f"{where}.protocol", f"Unsupported value: {protocol!r}: supported "
                       'values: "SCTP", "TCP", "UDP"'))
    port, end = entry.get("port"), entry.get("endPort")
    number = port_number(port)
    if port is not None:
        if number is not None:
            if not 1 <= number <= 65535:
                causes.append((f"{where}.port", f"Invalid value: {port!r}: must be between 1 "
                               "and 65535, inclusive"))
        elif not isinstance(port, str) or len(port) > 15 or not _PORT_NAME.match(port) \
                or not any("a" <= c <= "z" for c in port):
            causes.append((f"{where}.port", f"Invalid value: {port!r}: must be a port number "
                           "(1-65535) or a name of at most 15 characters (a-z, 0-9, '-', "
                           "at least one letter)"))
    if end is not None:
        end_number = end if isinstance(end, int) and not isinstance(end, bool) else None
        if end_number is None or not 1 <= end_number <= 65535:
            causes.append((f"{where}.endPort", f"Invalid value: {end!r}: must be a port "
                           "number between 1 and 65535, inclusive"))
        elif number is None:
            causes.append((f"{where}.endPort", f"Invalid value: {end!r}: may not be "
                           "specified when `port` is not a port number"))
        elif end_number < number:
            causes.append((f"{where}.endPort", f"Invalid value: {end!r}: must be greater "
                           "than or equal to `port`"))
    return causes


def _network(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if not isinstance(text, str) or "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _peer_causes(peer: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(peer, Mapping):
        return [(where, "Invalid value: must be an object")]
    if "ipBlock" not in peer:
        return []
    block = peer["ipBlock"]
    where = f"{where}.ipBlock"
    if not isinstance(block, Mapping):
        return [(where, "Invalid value: must be an object")]
    network = _network(block.get("cidr"))
    if network is None:
        return [(f"{where}.cidr", f"Invalid value: {block.get('cidr')!r}: must be a valid "
                 "CIDR (for example 10.0.0.0/8)")]
    excepts = block.get("except")
    if excepts is None:
        return []
    if not isinstance(excepts, list):
        return [(f"{where}.except", f"Invalid value: {excepts!r}: must be a list of CIDRs")]
    causes: list[tuple[str, str]] = []
    for index, text in enumerate(excepts):
        inner = _network(text)
        if inner is None or inner.version != network.version \
                or not inner.subnet_of(network):  # type: ignore[arg-type]
            causes.append((f"{where}.except[{index}]", f"Invalid value: {text!r}: must be a "
                           f"valid CIDR within {block.get('cidr')}"))
    return causes


def policy_causes(spec: Any) -> list[tuple[str, str]]:
    """What a real API server refuses in a NetworkPolicy's rules, as (field, message):
    ports (`port`, `endPort`, `protocol`) and `ipBlock` (`cidr`, `except`), in both
    directions, and rule lists that are not lists."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping):
        return [("spec", "Invalid value: must be an object")]
    causes: list[tuple[str, str]] = []
    types = spec.get("policyTypes")
    if types is not None and (not isinstance(types, list)
                              or any(t not in ("Ingress", "Egress") for t in types)):
        causes.append(("spec.policyTypes", f"Unsupported value: {types!r}: supported "
                       'values: "Ingress", "Egress"'))
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(direction)
        if rules is None:
            continue
        if not isinstance(rules, list):
            causes.append((f"spec.{direction}", "Invalid value: must be a list of rules"))
            continue
        for index, rule in enumerate(rules):
            where = f"spec.{direction}[{index}]"
            if not isinstance(rule, Mapping):
                causes.append((where, "Invalid value: must be an object"))
                continue
            for key, check in ((peers_key, _peer_causes), ("ports", _port_causes)):
                items = rule.get(key)
                if items is None:
                    continue
                if not isinstance(items, list):
                    causes.append((f"{where}.{key}", "Invalid value: must be a list"))
                    continue
                for position, item in enumerate(items):
                    causes += check(item, f"{where}.{key}[{position}]")
    return causes
