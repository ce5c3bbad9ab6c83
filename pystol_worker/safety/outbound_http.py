"""The requests a worker makes on a job's behalf (http-probe, steady-state probes), made
so that a job cannot turn the worker against the cluster or against Pystol itself.

A probe URL is chosen by whoever may submit a job, and the worker fetches it from inside
the cluster, next to Redis and the API, with whatever the node can reach. Fetched
naively (as it was until issue 13), a job could read cloud metadata credentials
(`169.254.169.254`), talk to Redis (which holds the halt switch and the revert journal),
scan the cluster's network, or pin a worker slot for ever with a server that answers
one byte a second. Here:

1. **The URL is read strictly** (`DestinationGuard.check`): http or https only, no user
   info, no control characters, IPv4 only in dotted decimal (`core.destinations`).
2. **The host is resolved once**, and every address it resolves to is judged: loopback,
   link-local, unspecified, multicast, reserved and cloud metadata addresses, and
   Pystol's own Redis and API (from the settings), are refused unless the admin policy's
   `probes.allow` includes them (metadata and Pystol's own services only by an entry that
   names exactly one destination and its port). IPv6 addresses that carry an IPv4
   address are judged by it too.
3. **The connection goes to the address that was judged** (`ProbeClient`): the socket
   is opened to that IP, and the name is only sent as the Host header and as the TLS
   server name (whose certificate is still verified against it). A name cannot resolve
   to a harmless address for the check and to Redis for the connection.
4. **Redirects** are answers unless the policy enables them and the job asks; then each
   hop is checked as the first URL, up to `probes.max_redirects`.
5. **Caps**: one call (connecting, redirects and the body included) ends at
   `min(timeout, probes.max_seconds)`, however slowly the server sends; the body is read
   up to `probes.max_body_bytes`, then the connection is closed.
6. **Stoppable**: while a call waits, a watchdog thread polls `should_stop` (the job's
   cancel flag and the global halt) and closes the socket when it says so, so a cancel or
   a halt ends a call within a fraction of a second (`ProbeStopped`).

The same `DestinationGuard` answers the submission service (`problem`), so a job naming a
refused address is refused with 403 before it is stored; the worker checks again at
connect time, because names may resolve differently by then and a job may have been
queued under an older policy.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urljoin, urlsplit

from pystol_worker.core.destinations import Address, AllowEntry, forms_of, parse_host
from pystol_worker.core.policy import ProbePolicy
from pystol_worker.core.settings import BIND_PATTERN, Settings

log = logging.getLogger("pystol.probes")

#: Well-known cloud metadata services: AWS/GCP/Azure/OpenStack (and AWS over IPv6),
#: Alibaba, Azure's platform endpoint. Refused unless an exact `probes.allow` entry.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(text) for text in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"))
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog"})
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")  # 0.x reaches the host itself on Linux
BROADCAST = ipaddress.IPv4Address("255.255.255.255")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_SECONDS = 2.0  # at submission; in the worker the call's own deadline bounds it
MAX_LOOKUPS = 16  # name lookups under way at once, per process
_LOOKUPS = threading.BoundedSemaphore(MAX_LOOKUPS)
STOP_POLL_SECONDS = 0.2
READ_CHUNK = 64 * 1024
USER_AGENT = "pystol-probe"

#: `resolver(name, port, seconds)`: the addresses `name` resolves to now; OSError (or
#: TimeoutError) when it does not resolve in time.
Resolver = Callable[[str, int, float], Sequence[Address]]


class DestinationRefused(Exception):
    """The URL (or a redirect) leads where the admin policy does not let probes go."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class DestinationUnresolved(Exception):
    """The URL's host does not resolve (now): an error of the call, not a refusal."""


class ProbeStopped(Exception):
    """The job was cancelled or chaos was halted while a call was under way."""


class _TimedOut(Exception):
    """The call reached its deadline (internal: reported as an answer with an error)."""


@dataclass(frozen=True)
class Danger:
    """Why an address is refused by default; `exact_only`: only an exact `probes.allow`
    entry opens it (cloud metadata, Pystol's own services)."""

    kind: str
    exact_only: bool = False


def address_danger(address: Address) -> Danger | None:
    """Why probes may not reach `address` by default, or None for an ordinary address
    (the cluster's private networks and the internet are ordinary)."""
    forms = forms_of(address)
    if any(form in METADATA_ADDRESSES for form in forms):
        return Danger("a cloud metadata address", exact_only=True)
    judged = forms[-1]  # the IPv4 address an IPv6 address carries, when it carries one
    if judged.is_unspecified or (judged.version == 4 and judged in THIS_NETWORK):
        return Danger("an unspecified address (it reaches the worker's own host)")
    if judged.is_loopback:
        return Danger("a loopback address")
    if judged.is_link_local:
        return Danger("a link-local address")
    if judged.is_multicast:
        return Danger("a multicast address")
    if judged == BROADCAST:
        return Danger("the broadcast address")
    if judged.is_reserved:
        return Danger("a reserved address")
    return None


def resolve_host(name: str, port: int, seconds: float) -> list[Address]:
    """The addresses `name` resolves to, asked of the system resolver in a thread so that
    a slow DNS server costs at most `seconds` (TimeoutError); OSError when it fails."""
    outcome: list[object] = []
    done = threading.Event()
    if not _LOOKUPS.acquire(blocking=False):
        # A lookup that times out cannot be cancelled: its thread lives on until the
        # resolver gives up. Bounding how many run at once bounds those threads (and the
        # queries a job can send the cluster's DNS).
        raise TimeoutError(f"resolving {name}: {MAX_LOOKUPS} lookups are already under way")

    def lookup() -> None:
        try:
            outcome.append(socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
        except OSError as error:
            outcome.append(error)
        finally:
            _LOOKUPS.release()
            done.set()
    threading.Thread(target=lookup, name=f"resolve-{name}", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"resolving {name} took longer than {seconds:g}s")
    result = outcome[0]
    if isinstance(result, OSError):
        raise result
    addresses: list[Address] = []
    for info in result:  # type: ignore[attr-defined]
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


@dataclass(frozen=True)
class Service:
    """One of Pystol's own services, refused as a probe destination: `host` (an address
    or a name) at `port`."""

    what: str
    host: str | Address
    port: int


def pystol_services(settings: Settings) -> list[Service]:
    """Pystol's Redis (each host of PYSTOL_REDIS_URL, Sentinels included) and the API's
    bind address (an API bound to all addresses is reachable on loopback). A Redis
    master found through Sentinel is not known here (a NetworkPolicy cannot tell a
    worker's probes from its own Redis traffic): allow no probe destination that
    covers it, or put it where probes are not allowed."""
    services: list[Service] = []
    for part in settings.redis_url.split(";"):
        parts = urlsplit(part)
        if parts.scheme not in ("redis", "rediss", "sentinel") or not parts.hostname:
            continue
        try:
            port = parts.port or (26379 if parts.scheme == "sentinel" else 6379)
            host = parse_host(parts.hostname)
        except ValueError:
            continue
        services.append(Service("Pystol's Redis", host, port))
    bind = BIND_PATTERN.match(settings.api_bind)
    if bind is not None:
        port = int(bind["port"])
        api: str | Address | None
        try:
            api = parse_host(bind["host"].strip("[]"))
        except ValueError:
            api = None
        if isinstance(api, ipaddress.IPv4Address | ipaddress.IPv6Address) and \
                api.is_unspecified:
            services += [Service("Pystol's API", ipaddress.ip_address("127.0.0.1"), port),
                         Service("Pystol's API", ipaddress.ip_address("::1"), port)]
        elif api is not None:
            services.append(Service("Pystol's API", api, port))
    return services


@dataclass(frozen=True)
class Destination:
    """A URL that passed the check, and where to connect for it."""

    url: str
    scheme: str
    name: str | None           # the URL's host name; None when the URL gave an address
    addresses: tuple[Address, ...]  # every one of them was judged
    port: int
    host_header: str
    target: str                # path and query, as sent in the request line

    @property
    def server_name(self) -> str:
        """What TLS checks the certificate against (and sends as SNI)."""
        return self.name if self.name is not None else str(self.addresses[0])


class DestinationGuard:
    """Judges probe URLs against the admin policy's `probes` section and Pystol's own
    services. One per job in the worker (own services resolved once), one per check at
    submission."""

    def __init__(self, probes: ProbePolicy, services: Sequence[Service] = (), *,
                 resolver: Resolver = resolve_host) -> None:
        self.probes = probes
        self.entries: list[AllowEntry] = probes.allow_entries()
        self.services = list(services)
        self.resolver = resolver
        self._service_addresses: list[tuple[Service, frozenset[Address]]] | None = None

    @classmethod
    def for_settings(cls, probes: ProbePolicy, settings: Settings, *,
                     resolver: Resolver = resolve_host) -> DestinationGuard:
        return cls(probes, pystol_services(settings), resolver=resolver)

    def problem(self, url: str, seconds: float = RESOLVE_SECONDS) -> str | None:
        """Why the policy refuses `url`, for the submission service; None when it does not
        (a name that does not resolve within `seconds` is left to the worker's check)."""
        try:
            self.check(url, seconds=seconds)
        except DestinationRefused as refused:
            return refused.reason
        except DestinationUnresolved:
            return None
        return None

    def check(self, url: str, *, seconds: float = RESOLVE_SECONDS) -> Destination:
        """The destination to connect to for `url`, resolved once and judged; raises
        DestinationRefused, or DestinationUnresolved when the name does not resolve
        within `seconds`."""
        if any(ord(char) <= 32 or ord(char) == 127 for char in url):
            raise DestinationRefused(url, "the URL holds spaces or control characters")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise DestinationRefused(url, "only http and https URLs may be probed")
        if "@" in parts.netloc:
            raise DestinationRefused(url, "user info (user:password@) is not accepted in a "
                                          "probe URL")
        if not (parts.path + parts.query + parts.fragment).isascii():
            # http.client sends the request line as ASCII: anything else would fail the
            # call with an error that is no answer (and a Location header may carry it).
            raise DestinationRefused(url, "the path or query holds characters that are not "
                                          "ASCII: percent-encode them")
        try:
            explicit_port = parts.port
            host = parse_host(parts.hostname or "")
        except ValueError as error:
            raise DestinationRefused(url, str(error)) from None
        if explicit_port == 0:
            raise DestinationRefused(url, "port 0 cannot be probed")
        port = explicit_port or DEFAULT_PORTS[scheme]
        if isinstance(host, str):
            name: str | None = host
            if host in METADATA_NAMES and not self._exactly_allowed(host, None, port):
                raise DestinationRefused(url, f"{host} is a cloud metadata service; only an "
                                              "exact probes.allow entry with its port opens "
                                              "it")
            try:
                addresses = tuple(self.resolver(host, port, seconds))
            except OSError as error:
                raise DestinationUnresolved(f"{host} does not resolve: {error}") from None
            if not addresses:
                raise DestinationUnresolved(f"{host} resolves to no address")
        else:
            name, addresses = None, (host,)
        for address in addresses:
            self._judge(url, name, address, port)
        shown_host = name if name is not None else (
            f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host))
        default = explicit_port is None
        return Destination(url=url, scheme=scheme, name=name, addresses=addresses, port=port,
                           host_header=shown_host if default else f"{shown_host}:{port}",
                           target=(parts.path or "/") + (f"?{parts.query}" if parts.query
                                                          else ""))

    # -- judging one address -------------------------------------------------------------

    def _judge(self, url: str, name: str | None, address: Address, port: int) -> None:
        forms = forms_of(address)
        where = (f"[{address}]" if address.version == 6 else str(address)) + f":{port}"
        seen = [name] if name else []
        seen += [str(form) for form in forms[1:]]
        if seen:
            where += f" ({', '.join(seen)})"
        service = self._service_at(name, address, port)
        if service is not None and not self._exactly_allowed(name, address, port):
            raise DestinationRefused(url, f"{where} is {service.what}; probes may not reach "
                                          "Pystol's own services unless an exact "
                                          "probes.allow entry with the port names it")
        danger = address_danger(address)
        if danger is None:
            return
        if danger.exact_only:
            if not self._exactly_allowed(name, address, port):
                raise DestinationRefused(url, f"{where} is {danger.kind}; only an exact "
                                              "probes.allow entry with the port opens it")
        elif not any(entry.matches(name, address, port) for entry in self.entries):
            raise DestinationRefused(url, f"{where} is {danger.kind}, which the admin "
                                          "policy's probes.allow does not include")

    def _exactly_allowed(self, name: str | None, address: Address | None, port: int) -> bool:
        for entry in self.entries:
            if not entry.exact or entry.port != port:
                continue
            if entry.name is not None and entry.name == name:
                return True
            if address is not None and entry.matches(None, address, port):
                return True
        return False

    def _service_at(self, name: str | None, address: Address, port: int) -> Service | None:
        forms = set(forms_of(address))
        for service, addresses in self._resolved_services():
            if service.port == port and (service.host == name or forms & addresses):
                return service
        return None

    def _resolved_services(self) -> list[tuple[Service, frozenset[Address]]]:
        """Each service with the addresses it has now (resolved once per guard; a name
        that does not resolve still matches by name)."""
        if self._service_addresses is None:
            resolved = []
            for service in self.services:
                if isinstance(service.host, str):
                    try:
                        found = self.resolver(service.host, service.port, RESOLVE_SECONDS)
                    except OSError:
                        found = []
                    addresses: set[Address] = set()
                    for address in found:
                        addresses.update(forms_of(address))
                    resolved.append((service, frozenset(addresses)))
                else:
                    resolved.append((service, frozenset(forms_of(service.host))))
            self._service_addresses = resolved
        return self._service_addresses


@dataclass
class ProbeAnswer:
    """What one call got: a status, or an error; how long it took; how much body it read
    (`body_cut`: the body went on past `probes.max_body_bytes`)."""

    status: int | None
    seconds: float
    body_bytes: int = 0
    body_cut: bool = False
    redirects: int = 0
    error: str | None = None
    body: bytes = b""  # what was read (at most the cap), only when the caller kept it


class _Watchdog:
    """Ends a call from outside: at its deadline, or as soon as `should_stop()` says so,
    it shuts the socket down, which wakes whatever read or connect is blocked on it.
    A per-operation socket timeout cannot do this: a server sending a byte a second
    satisfies every read."""

    def __init__(self, deadline: float, should_stop: Callable[[], bool],
                 poll_seconds: float) -> None:
        self.deadline = deadline
        self.should_stop = should_stop
        self.poll_seconds = poll_seconds
        self.reason: str | None = None  # "timeout" or "stopped" once it fired
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="probe-watchdog",
                                        daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.reason is not None:
                self._shut(sock)

    def raise_if_fired(self) -> None:
        if self.reason == "stopped":
            raise ProbeStopped("the job was cancelled or chaos was halted")
        if self.reason == "timeout":
            raise _TimedOut()

    def _watch(self) -> None:
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self._fire("timeout")
                return
            if self._done.wait(min(self.poll_seconds, remaining)):
                return
            try:
                stop = self.should_stop()
            except Exception:  # Redis unreachable: the deadline still ends the call
                log.warning("could not tell whether the job was cancelled", exc_info=True)
                stop = False
            if stop:
                self._fire("stopped")
                return

    def _fire(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            if self._sock is not None:
                self._shut(self._sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # The plain socket's shutdown, also for a TLS socket (whose own shutdown would
        # tear down its TLS state under the reading thread's feet).
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass
class ProbeClient:
    """Makes one probe call at a time under the guard's rules and the policy's caps.

    `should_stop`: polled while a call waits (the job's `RunContext.cancelled`)."""

    guard: DestinationGuard
    should_stop: Callable[[], bool] = lambda: False
    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    poll_seconds: float = STOP_POLL_SECONDS

    @property
    def limits(self) -> ProbePolicy:
        return self.guard.probes

    def get(self, url: str, *, timeout: float, follow_redirects: bool = False
            ) -> ProbeAnswer:
        """GET `url`: an answer with its status, or with an error (timeouts, refused
        connections, broken answers). Raises DestinationRefused when the URL, or a
        redirect it is following, leads where probes may not go, and ProbeStopped when
        the job is cancelled or halted meanwhile."""
        return self.request("GET", url, timeout=timeout, follow_redirects=follow_redirects)

    def request(self, method: str, url: str, *, timeout: float,
                follow_redirects: bool = False, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, keep_body: bool = False) -> ProbeAnswer:
        """As `get`, with a method, extra headers and a body (a Prometheus query is a
        POSTed form); `keep_body` keeps what was read (at most the cap) in the answer. A
        redirect is followed only for GET: anything else answers with the 3xx."""
        seconds = min(timeout, self.limits.max_seconds)
        started = time.monotonic()
        deadline = started + seconds
        follow = follow_redirects and self.limits.follow_redirects and method == "GET"
        hops = 0
        current = url

        def failed(error: str) -> ProbeAnswer:
            return ProbeAnswer(None, round(time.monotonic() - started, 6), redirects=hops,
                               error=error)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _TimedOut()
                try:
                    destination = self.guard.check(current, seconds=remaining)
                except DestinationRefused as refused:
                    if hops:
                        raise DestinationRefused(url, f"redirect {hops} to {current} "
                                                      f"refused: {refused.reason}") from None
                    raise
                status, location, size, cut, content = self._request(
                    destination, deadline, method, headers, body, keep_body)
                if follow and status in REDIRECT_STATUSES and location:
                    if hops == self.limits.max_redirects:
                        return failed(f"more than {hops} redirects")
                    hops += 1
                    current = urljoin(current, location)
                    continue
                return ProbeAnswer(status, round(time.monotonic() - started, 6),
                                   body_bytes=size, body_cut=cut, redirects=hops,
                                   body=content)
        except (_TimedOut, TimeoutError):
            # A socket timeout is the deadline too: each operation's timeout is what
            # was left of the call when it connected.
            return failed(f"timed out after {seconds:g}s")
        except DestinationUnresolved as error:
            return failed(str(error))
        except (OSError, http.client.HTTPException) as error:
            return failed(f"{type(error).__name__}: {error}")

    def _request(self, destination: Destination, deadline: float, method: str = "GET",
                 headers: Mapping[str, str] | None = None, body: bytes | None = None,
                 keep_body: bool = False) -> tuple[int, str | None, int, bool, bytes]:
        """One request to the judged address: (status, Location, body bytes read, cut,
        the body when kept)."""
        with _Watchdog(deadline, self.should_stop, self.poll_seconds) as watchdog:
            sock = self._connect(destination, deadline, watchdog)
            connection = http.client.HTTPConnection(destination.server_name,
                                                    destination.port)
            connection.sock = sock  # already connected: http.client never resolves
            try:
                connection.putrequest(method, destination.target, skip_host=True,
                                      skip_accept_encoding=True)
                connection.putheader("Host", destination.host_header)
                connection.putheader("User-Agent", USER_AGENT)
                connection.putheader("Accept-Encoding", "identity")
                connection.putheader("Connection", "close")
                for name, value in (headers or {}).items():
                    connection.putheader(name, value)
                if body is not None:
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body)
                response = connection.getresponse()
                cap = self.limits.max_body_bytes
                read = 0
                chunks: list[bytes] = []
                while read <= cap:  # one byte past the cap tells a cut body from a whole one
                    chunk = response.read1(min(READ_CHUNK, cap + 1 - read))
                    if not chunk:
                        break
                    read += len(chunk)
                    if keep_body:
                        chunks.append(chunk)
                watchdog.raise_if_fired()  # a shut socket reads as the end of the body
                return (response.status, response.getheader("Location"), min(read, cap),
                        read > cap, b"".join(chunks)[:cap])
            except (OSError, http.client.HTTPException):
                watchdog.raise_if_fired()
                raise
            finally:
                connection.close()

    def _connect(self, destination: Destination, deadline: float, watchdog: _Watchdog
                 ) -> socket.socket:
        """A connected (and for https, TLS-verified) socket to one of the judged addresses,
        tried in order; never to anything resolved afresh."""
        last: OSError | None = None
        for address in destination.addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut()
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            watchdog.watch(sock)
            sock.settimeout(remaining)
            try:
                sock.connect((str(address), destination.port))
            except OSError as error:
                sock.close()
                watchdog.raise_if_fired()
                if isinstance(error, TimeoutError):
                    raise _TimedOut() from None
                last = error
                continue
            if destination.scheme == "https":
                tls = self.tls.wrap_socket(sock, server_hostname=destination.server_name,
                                           do_handshake_on_connect=False)
                watchdog.watch(tls)
                try:
                    tls.do_handshake()
                except OSError:
                    tls.close()
                    watchdog.raise_if_fired()
                    raise
                return tls
            return sock
        assert last is not None
        raise last
