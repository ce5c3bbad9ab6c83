"""How Pystol reads a network destination a person wrote: in a probe's URL, or in the
admin policy's `probes.allow` list.

Both are read by the same functions so that the policy and the check agree on what a
host is. Three rules make the reading unambiguous:

- An IPv4 address is four decimal numbers (`127.0.0.1`). The other forms the C library
  also accepts — `2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1` — are refused: resolvers
  and URL parsers disagree about them (is `010.0.0.1` 10.0.0.1 or 8.0.0.1?), which is
  exactly what a request that wants to slip past a check relies on.
- An IPv6 address that carries an IPv4 address (`::ffff:127.0.0.1`, NAT64 `64:ff9b::…`,
  6to4 `2002:…`) is judged by the IPv4 address it carries as well.
- A name is compared in its ASCII (IDNA) form, lower case, without a trailing dot.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# What inet_aton accepts besides dotted decimal: 1 to 4 parts, each decimal, octal
# (leading 0) or hex (0x). A name cannot look like this: its last label is never numeric.
_NUMERIC_PARTS = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$",
                            re.IGNORECASE)
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_PATTERN_LABEL = re.compile(r"^[a-z0-9_*?-]+$")


def parse_host(text: str) -> str | Address:
    """The host of a URL (without brackets) as an address, or as a name in canonical
    form. ValueError says why a host cannot be used."""
    if not text:
        raise ValueError("the URL names no host")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError(f"host {text!r}: zone indexes are not accepted in a host")
        return address
    if "%" in text:
        raise ValueError(f"host {text!r}: zone indexes and percent-encoding are not "
                         "accepted in a host")
    if _NUMERIC_PARTS.match(text):
        raise ValueError(f"host {text!r} is a number that is not a dotted-decimal IPv4 "
                         "address; write it as four decimal numbers (e.g. 10.0.0.1)")
    name = _ascii_name(text)
    if not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"host {text!r} is not a valid host name")
    return name


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, IPv4-compatible),
    which is where a connection to it may end up; None for anything else."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forms_of(address: Address) -> list[Address]:
    """The address and the IPv4 address it carries, if any: both are checked."""
    inner = embedded_ipv4(address)
    return [address] if inner is None else [address, inner]


@dataclass(frozen=True)
class AllowEntry:
    """One entry of the policy's `probes.allow`: a network (a single address is a /32 or
    /128) or a host name (globs `*`, `?` allowed), with or without a port."""

    text: str
    network: Network | None = None
    name: str | None = None
    port: int | None = None

    @property
    def exact(self) -> bool:
        """Names one destination: one address or one name (no glob), and its port. Only
        such an entry opens cloud metadata or one of Pystol's own services: a broad
        network written for the cluster's services must not open them by accident."""
        one_address = self.network is not None and self.network.num_addresses == 1
        one_name = self.name is not None and not any(c in self.name for c in "*?[")
        return self.port is not None and (one_address or one_name)

    def matches(self, name: str | None, address: Address, port: int) -> bool:
        """Whether a connection to `address`:`port`, for the URL host `name` (None when
        the URL gave an address), falls under this entry."""
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return any(form in self.network for form in forms_of(address)
                       if form.version == self.network.version)
        return name is not None and self.name is not None and \
            fnmatch.fnmatchcase(name, self.name)


def parse_allow_entry(text: str) -> AllowEntry:
    """`10.0.0.0/8`, `10.1.2.3`, `10.1.2.3:8080`, `[fd00::1]:8080`, `fd00::/8`,
    `web.shop.svc.cluster.local`, `*.shop.svc.cluster.local:443`. ValueError says what
    is wrong with the entry."""
    entry = text.strip()
    host, port = entry, None
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        host = inside
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected [IPV6]:PORT")
            port = _port(rest[1:], text)
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = _port(port_text, text)
    if not host:
        raise ValueError(f"{text!r}: no address or name")
    if "/" in host or ":" in host or _NUMERIC_PARTS.match(host):
        try:
            network = ipaddress.ip_network(host, strict=True)
        except ValueError as error:
            raise ValueError(f"{text!r}: {error} (write networks as ADDRESS/PREFIX with no "
                             "host bits set, e.g. 10.0.0.0/8, and addresses in dotted "
                             "decimal)") from None
        return AllowEntry(text, network=network, port=port)
    name = _ascii_name(host)
    if not all(_PATTERN_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{text!r}: not an address, a network or a host name")
    return AllowEntry(text, name=name, port=port)


def _ascii_name(text: str) -> str:
    try:
        ascii_text = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise ValueError(f"host {text!r} is not a valid host name") from None
    return ascii_text.lower().rstrip(".")


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)
