"""Every Redis connection Pystol opens is built here, from PYSTOL_REDIS_URL (and
PYSTOL_REDIS_SENTINEL_MASTER).

Why one place: Redis holds the halt switch, the revert journal and every job, so it is
a trust boundary, and the three libraries that reach it (redis-py, kombu for Celery's
broker, celery-redbeat for beat) each spell a password, TLS and Sentinel differently.
Left to each caller, one of them ends up without the password, or with kombu's
default for `rediss://`, which is *not* to verify the server's certificate. Here the
URL is read once into a `RedisEndpoint` and each library gets the same server, password,
database and TLS checks.

The URLs understood:

- `redis://[:PASSWORD@]host[:port][/db]`, or `redis://USER:PASSWORD@...` with Redis ACLs;
- `rediss://...` the same over TLS. The server's certificate is verified by default
  (`ssl_cert_reqs=required`); query parameters `ssl_ca_certs=/path/ca.crt` (a private
  CA), `ssl_certfile`/`ssl_keyfile` (a client certificate), `ssl_cert_reqs`
  (`required`, `optional`, `none`) and `ssl_check_hostname` (`true`/`false`) change that;
- `unix:///path/redis.sock[?db=N]`, with `unix://:PASSWORD@/path/...` for a password;
- `sentinel://[:PASSWORD@]host:26379[;sentinel://host2:26379...][/db]`: the Sentinels
  to ask for the master named by PYSTOL_REDIS_SENTINEL_MASTER. PASSWORD is the Redis
  master's; Sentinels that require a password of their own get it from the query
  parameter `sentinel_password`. Sentinel with TLS is not supported.

A password must be URL-encoded when it holds characters such as `@`, `/` or `:`.
Never log `RedisEndpoint.url`; `shown_url` is the same URL with every password masked.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from pystol_worker.core.settings import Settings, SettingsError

Scheme = Literal["redis", "rediss", "unix", "sentinel"]
SCHEMES: tuple[Scheme, ...] = ("redis", "rediss", "unix", "sentinel")
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
MASK = "***"
CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
             "none": ssl.CERT_NONE}
TLS_QUERY = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
             "ssl_check_hostname")
# Query parameters each scheme accepts; anything else is refused at start rather than
# being passed to one library and ignored by the others.
QUERY: dict[str, tuple[str, ...]] = {"redis": (), "rediss": TLS_QUERY, "unix": ("db",),
                                     "sentinel": ("sentinel_password",)}
TCP_ONLY_OPTIONS = ("socket_keepalive", "socket_keepalive_options", "socket_connect_timeout")
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class RedisUrlError(SettingsError):
    """PYSTOL_REDIS_URL (or PYSTOL_REDIS_SENTINEL_MASTER) cannot be used; the message
    names the variable and never shows the password."""


@dataclass(frozen=True)
class RedisEndpoint:
    """Where Redis is and how to talk to it, read from the URL once.

    `url` is the URL as configured, with its password: give it to nothing that logs."""

    scheme: Scheme
    url: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: dict[str, Any] = field(default_factory=dict)
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    sentinel_password: str | None = field(default=None, repr=False)

    def auth(self) -> dict[str, Any]:
        """redis-py's keyword arguments for the database and the credentials."""
        out: dict[str, Any] = {"db": self.db}
        if self.username:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password
        return out

    def connection_kwargs(self) -> dict[str, Any]:
        """redis-py's keyword arguments for one server (not for Sentinel)."""
        if self.scheme == "unix":
            return {"unix_socket_path": self.path, **self.auth()}
        out: dict[str, Any] = {"host": self.host, "port": self.port, **self.auth()}
        if self.scheme == "rediss":
            out.update(ssl=True, **self.tls)
        return out

    def sentinel_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """How to talk to the Sentinels themselves: the socket options given for the data
        connections (as redis-py does by default) and their own password, if any."""
        out = {key: value for key, value in options.items() if key.startswith("socket_")}
        if self.sentinel_password is not None:
            out["password"] = self.sentinel_password
        return out


def shown_url(url: str) -> str:
    """`url` with every password (in the user part, or a query parameter whose name says
    password) replaced by ***: what logs, banners and error messages may show. A user part
    without a colon is masked whole: it may be a password written in the wrong place."""
    return ";".join(_shown_part(part) for part in url.split(";"))


def _user_part(part: str) -> str:
    """Everything between `://` and the last `@`: the user part as a reader sees it, even
    when a password holds an unencoded `/`, `?` or `#` that would end urlsplit's netloc."""
    _, sep, rest = part.partition("://")
    return rest.rpartition("@")[0] if sep and "@" in rest else ""


def _safe_error(error: Exception, part: str) -> str:
    """`error`'s text, unless it quotes any piece of the URL's user part (urlsplit's own
    messages do, e.g. "Port could not be cast to integer value as 's3cr'")."""
    text = str(error)
    secret = _user_part(part)
    pieces = [piece for piece in re.split(r"[:/?#@]", secret) if len(piece) >= 2]
    if any(piece in text for piece in pieces):
        return ("it could not be read (is the password percent-encoded? `/` is %2F, `?` "
                "%3F, `#` %23, `@` %40)")
    return text


def _shown_part(part: str) -> str:
    userinfo = _user_part(part)
    if userinfo:
        scheme = part.partition("://")[0]
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        part = f"{scheme}://{user + ':' if user or ':' in userinfo else ''}{MASK}@" \
            + part.partition("://")[2][len(userinfo) + 1:]
    try:
        split = urlsplit(part)
    except ValueError:
        return f"{part.split('://', 1)[0]}://{MASK}"
    netloc = split.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        shown_user = f"{userinfo.split(':', 1)[0]}:{MASK}" if ":" in userinfo else MASK
        netloc = f"{shown_user}@{hostport}"
    query = []
    for item in split.query.split("&") if split.query else []:
        key = item.split("=", 1)[0]
        query.append(f"{key}={MASK}" if "password" in key.lower() else item)
    return urlunsplit((split.scheme, netloc, split.path, "&".join(query), split.fragment))


def parse_redis_url(url: str, sentinel_master: str = "") -> RedisEndpoint:
    """Read a Redis URL (see the module's docstring); RedisUrlError when it cannot be used."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise RedisUrlError(f"PYSTOL_REDIS_URL: expected a redis://, rediss://, unix:// or "
                            f"sentinel:// URL (got {shown_url(url)!r})")
    if scheme == "sentinel":
        return _parse_sentinel(url, sentinel_master)
    split = _split(url)
    query = _query(split.query, scheme, url)
    try:
        username = unquote(split.username) if split.username else None
        password = unquote(split.password) if split.password is not None else None
        if scheme == "unix":
            if not split.path:
                raise ValueError("no socket path")
            return RedisEndpoint("unix", url, path=unquote(split.path),
                                 db=_db(query.get("db", "0"), url), username=username,
                                 password=password)
        return RedisEndpoint(cast(Scheme, scheme), url, host=split.hostname or "127.0.0.1",
                             port=split.port or DEFAULT_PORT, db=_db(split.path, url),
                             username=username, password=password,
                             tls=_tls(query) if scheme == "rediss" else {})
    except ValueError as error:
        raise RedisUrlError(f"PYSTOL_REDIS_URL: {_safe_error(error, url)} in "
                            f"{shown_url(url)!r}") from None


def redis_endpoint(settings: Settings) -> RedisEndpoint:
    return parse_redis_url(settings.redis_url, settings.redis_sentinel_master)


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    """A redis-py client for Pystol's Redis; `options` are redis-py connection options
    (timeouts, health_check_interval). With Sentinel the client asks the Sentinels for the
    current master on every new connection, so it follows a failover."""
    return client_for(redis_endpoint(settings), **options)


def client_for(endpoint: RedisEndpoint, **options: Any) -> redis.Redis:
    """`redis_client` for an endpoint that is not the settings' (`pystol up` tries one)."""
    if endpoint.scheme == "sentinel":
        sentinel = redis.sentinel.Sentinel(list(endpoint.sentinels),
                                           sentinel_kwargs=endpoint.sentinel_kwargs(options),
                                           **options)
        client: redis.Redis = sentinel.master_for(endpoint.master, redis_class=redis.Redis,
                                                  **endpoint.auth())
        return client
    return redis.Redis(**endpoint.connection_kwargs(), **options)


def async_redis_client(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """`redis_client` for asyncio code (the CR watcher)."""
    return async_client_for(redis_endpoint(settings), **options)


def async_client_for(endpoint: RedisEndpoint, **options: Any) -> redis.asyncio.Redis:
    """`async_redis_client` for an endpoint read with `parse_redis_url`."""
    if endpoint.scheme == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(endpoint.sentinels), sentinel_kwargs=endpoint.sentinel_kwargs(options),
            **options)
        client: redis.asyncio.Redis = sentinel.master_for(
            endpoint.master, redis_class=redis.asyncio.Redis, **endpoint.auth())
        return client
    return redis.asyncio.Redis(**endpoint.connection_kwargs(), **options)


def celery_broker_options(settings: Settings) -> dict[str, Any]:
    """Celery settings for the broker: `broker_url`, and the `broker_transport_options`
    (merge them with your own) and `broker_use_ssl` the scheme needs.

    kombu wants the database in every Sentinel URL of the list and the master's name as a
    transport option; for `rediss://` it wants the TLS options apart from the URL, and
    without them it would connect without checking the certificate."""
    endpoint = redis_endpoint(settings)
    userinfo = _userinfo(endpoint)
    if endpoint.scheme == "sentinel":
        url = ";".join(f"sentinel://{userinfo}{host}:{port}/{endpoint.db}"
                       for host, port in endpoint.sentinels)
        transport: dict[str, Any] = {"master_name": endpoint.master}
        if endpoint.sentinel_password is not None:
            transport["sentinel_kwargs"] = {"password": endpoint.sentinel_password}
        return {"broker_url": url, "broker_transport_options": transport}
    if endpoint.scheme == "unix":
        query = f"?virtual_host={endpoint.db}" if endpoint.db else ""
        return {"broker_url": f"redis+socket://{userinfo}{quote(endpoint.path)}{query}",
                "broker_transport_options": {}}
    url = f"{endpoint.scheme}://{userinfo}{_hostport(endpoint)}/{endpoint.db}"
    out: dict[str, Any] = {"broker_url": url, "broker_transport_options": {}}
    if endpoint.scheme == "rediss":
        out["broker_use_ssl"] = dict(endpoint.tls)
    return out


def redbeat_options(settings: Settings, **options: Any) -> dict[str, Any]:
    """celery-redbeat settings: `redbeat_redis_url`, `redbeat_redis_options` (with
    `options`, redis-py connection options) and, for TLS, `redbeat_redis_use_ssl`.

    redbeat reads Sentinel from its own options (`sentinels`, `service_name`) behind a
    `redis-sentinel://` URL, and TLS options from `redbeat_redis_use_ssl`."""
    endpoint = redis_endpoint(settings)
    if endpoint.scheme == "sentinel":
        sentinel_options: dict[str, Any] = {
            **options, "sentinels": list(endpoint.sentinels), "service_name": endpoint.master,
            **endpoint.auth(), "sentinel_kwargs": endpoint.sentinel_kwargs(options)}
        return {"redbeat_redis_url": "redis-sentinel://", "redbeat_redis_options":
                sentinel_options}
    if endpoint.scheme == "unix":
        # redbeat passes the URL to redis-py's from_url, which reads unix:// itself and
        # refuses the TCP-only socket options.
        unix_options = {key: value for key, value in options.items()
                        if key not in TCP_ONLY_OPTIONS}
        return {"redbeat_redis_url": endpoint.url, "redbeat_redis_options": unix_options}
    url = f"{endpoint.scheme}://{_userinfo(endpoint)}{_hostport(endpoint)}/{endpoint.db}"
    out: dict[str, Any] = {"redbeat_redis_url": url, "redbeat_redis_options": options}
    if endpoint.scheme == "rediss":
        out["redbeat_redis_use_ssl"] = dict(endpoint.tls)
    return out


# -- reading URLs --------------------------------------------------------------------------


def _split(part: str) -> SplitResult:
    try:
        split = urlsplit(part)
        split.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as error:
        raise RedisUrlError(f"PYSTOL_REDIS_URL: {_safe_error(error, part)} in "
                            f"{shown_url(part)!r}") from None
    return split


def _query(text: str, scheme: str, url: str) -> dict[str, str]:
    query = {key: values[-1] for key, values in parse_qs(text, keep_blank_values=True).items()}
    unknown = sorted(set(query) - set(QUERY[scheme]))
    if unknown:
        known = ", ".join(QUERY[scheme]) or "none"
        raise RedisUrlError(f"PYSTOL_REDIS_URL: unknown query parameter(s) "
                            f"{', '.join(unknown)} for {scheme}:// (known: {known}) in "
                            f"{shown_url(url)!r}")
    return query


def _db(text: str, url: str) -> int:
    text = text.strip("/") or "0"
    if not text.isdigit():
        raise RedisUrlError(f"PYSTOL_REDIS_URL: the database must be a number, not {text!r}, "
                            f"in {shown_url(url)!r}")
    return int(text)


def _flag(query: dict[str, str], name: str, default: bool) -> bool:
    value = query.get(name, "").lower()
    if not value:
        return default
    if value not in TRUE + FALSE:
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value in TRUE


def _tls(query: dict[str, str]) -> dict[str, Any]:
    """redis-py's (and kombu's) TLS options: the certificate is checked unless the URL says
    otherwise."""
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, not {reqs!r}")
    tls: dict[str, Any] = {"ssl_cert_reqs": CERT_REQS[reqs],
                           "ssl_check_hostname": _flag(query, "ssl_check_hostname",
                                                       reqs == "required")}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if query.get(name):
            tls[name] = query[name]
    return tls


def _parse_sentinel(url: str, master: str) -> RedisEndpoint:
    if not master:
        raise RedisUrlError("PYSTOL_REDIS_URL names Redis Sentinels (sentinel://): set "
                            "PYSTOL_REDIS_SENTINEL_MASTER to the name of the master they "
                            "monitor (the name in their `sentinel monitor NAME ...` line, "
                            "often `mymaster`)")
    sentinels: list[tuple[str, int]] = []
    usernames, passwords, dbs, sentinel_passwords = set(), set(), set(), set()
    for part in url.split(";"):
        if not part.lower().startswith("sentinel://"):
            raise RedisUrlError(f"PYSTOL_REDIS_URL: separate Sentinels with ';', each as "
                                f"sentinel://host:port, in {shown_url(url)!r}")
        split = _split(part)
        query = _query(split.query, "sentinel", url)
        if not split.hostname:
            raise RedisUrlError(f"PYSTOL_REDIS_URL: a Sentinel without a host in "
                                f"{shown_url(url)!r}")
        sentinels.append((split.hostname, split.port or DEFAULT_SENTINEL_PORT))
        if split.username:
            usernames.add(unquote(split.username))
        if split.password is not None:
            passwords.add(unquote(split.password))
        if split.path.strip("/"):
            dbs.add(_db(split.path, url))
        if "sentinel_password" in query:
            sentinel_passwords.add(query["sentinel_password"])
    for name, found in (("user names", usernames), ("passwords", passwords),
                        ("databases", dbs), ("sentinel_password values", sentinel_passwords)):
        if len(found) > 1:
            raise RedisUrlError(f"PYSTOL_REDIS_URL: the Sentinels name different {name}; "
                                f"give it once, in {shown_url(url)!r}")
    return RedisEndpoint("sentinel", url, db=next(iter(dbs), 0),
                         username=next(iter(usernames), None),
                         password=next(iter(passwords), None), sentinels=tuple(sentinels),
                         master=master, sentinel_password=next(iter(sentinel_passwords), None))


def _userinfo(endpoint: RedisEndpoint) -> str:
    """`user:password@` for a URL handed to kombu or redbeat, URL-encoded again."""
    if endpoint.password is None and not endpoint.username:
        return ""
    user = quote(endpoint.username or "", safe="")
    if endpoint.password is None:
        return f"{user}@"
    return f"{user}:{quote(endpoint.password, safe='')}@"


def _hostport(endpoint: RedisEndpoint) -> str:
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"{host}:{endpoint.port}"
