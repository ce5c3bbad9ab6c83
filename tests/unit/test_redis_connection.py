"""PYSTOL_REDIS_URL read once, and handed to redis-py, Celery (kombu) and redbeat alike:
the password reaches every library, TLS certificates are checked unless the URL says
otherwise, Sentinel needs its master's name, and no password is ever shown.

The real servers (password, Sentinel, TLS) are in tests/integration/test_redis_trust.py;
here is what each library is told, read back through the library itself where it can be
(kombu's Connection, redbeat's config), so a mapping a library does not understand fails.
"""

from __future__ import annotations

import io
import re
import ssl
from pathlib import Path
from urllib.parse import quote

import pytest
from celery import Celery
from kombu import Connection
from redbeat.schedulers import RedBeatConfig

from pystol_api.cli import stack
from pystol_worker.core.settings import Settings
from pystol_worker.process.celery_app import make_celery
from pystol_worker.schedules.store import configure_redbeat
from pystol_worker.store.redis_connection import (
    RedisUrlError,
    celery_broker_options,
    parse_redis_url,
    redbeat_options,
    redis_client,
    shown_url,
)

PASSWORD = "s3cr/t@pass:word"  # characters that must be URL-encoded
ENCODED = quote(PASSWORD, safe="")


def settings(url: str, master: str = "") -> Settings:
    return Settings(redis_url=url, redis_sentinel_master=master)


def kombu(options: dict[str, object]) -> Connection:
    """The broker connection Celery would make from these options (nothing is dialled)."""
    return Connection(options["broker_url"], ssl=options.get("broker_use_ssl"),
                      transport_options=options["broker_transport_options"])


# -- redis:// with a password -------------------------------------------------------------


def test_password_reaches_redis_py_kombu_and_redbeat() -> None:
    configured = settings(f"redis://:{ENCODED}@redis.example:6380/3")
    client = redis_client(configured)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "redis.example", 6380, 3, PASSWORD)

    broker = kombu(celery_broker_options(configured))
    assert (broker.hostname, broker.port, broker.password, broker.virtual_host) == (
        "redis.example", 6380, PASSWORD, "3")

    app = configure_redbeat(Celery("test", set_as_current=False), configured)
    beat = RedBeatConfig(app)
    assert parse_redis_url(beat.redis_url).password == PASSWORD
    assert parse_redis_url(beat.redis_url).db == 3


def test_acl_user_and_password() -> None:
    endpoint = parse_redis_url(f"redis://pystol:{ENCODED}@redis:6379/0")
    assert (endpoint.username, endpoint.password) == ("pystol", PASSWORD)
    broker = kombu(celery_broker_options(settings(endpoint.url)))
    assert (broker.userid, broker.password) == ("pystol", PASSWORD)


# -- rediss:// ------------------------------------------------------------------------------


def test_tls_checks_the_certificate_by_default_in_every_library() -> None:
    # kombu on its own would connect to rediss:// without checking the certificate
    # ("defaulting to insecure SSL behaviour"); the options given here prevent it.
    assert kombu({"broker_url": "rediss://redis:6380/0", "broker_transport_options": {}}
                 ).ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    configured = settings(f"rediss://:{ENCODED}@redis:6380/0?ssl_ca_certs=/etc/ca.crt")

    kwargs = redis_client(configured).connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED and kwargs["ssl_check_hostname"]
    assert kwargs["ssl_ca_certs"] == "/etc/ca.crt" and kwargs["password"] == PASSWORD

    options = celery_broker_options(configured)
    broker = kombu(options)
    assert broker.transport_cls == "rediss" and broker.password == PASSWORD
    assert broker.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True,
                          "ssl_ca_certs": "/etc/ca.crt"}
    assert "?" not in options["broker_url"]  # URL query options would override broker_use_ssl

    app = make_celery(configured)
    assert app.conf.broker_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    beat = RedBeatConfig(configure_redbeat(Celery("test", set_as_current=False), configured))
    assert beat.redis_url.startswith("rediss://")
    assert beat.redis_use_ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert beat.redis_use_ssl["ssl_ca_certs"] == "/etc/ca.crt"


def test_tls_checks_can_be_relaxed_only_by_saying_so() -> None:
    endpoint = parse_redis_url("rediss://redis:6380/0?ssl_cert_reqs=none")
    assert endpoint.tls == {"ssl_cert_reqs": ssl.CERT_NONE, "ssl_check_hostname": False}
    client_cert = parse_redis_url("rediss://redis/0?ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
                                  "&ssl_check_hostname=false")
    assert client_cert.tls == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": False,
                               "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"}
    with pytest.raises(RedisUrlError, match="ssl_cert_reqs must be one of"):
        parse_redis_url("rediss://redis/0?ssl_cert_reqs=sometimes")


# -- unix:// --------------------------------------------------------------------------------


def test_unix_socket_with_password_and_database() -> None:
    configured = settings(f"unix://:{ENCODED}@/run/redis/redis.sock?db=2")
    kwargs = redis_client(configured).connection_pool.connection_kwargs
    assert (kwargs["path"], kwargs["db"], kwargs["password"]) == (
        "/run/redis/redis.sock", 2, PASSWORD)
    # kombu has no unix:// transport: it spells a socket redis+socket://
    options = celery_broker_options(configured)
    assert shown_url(options["broker_url"]) == "redis+socket://:***@/run/redis/redis.sock" \
                                               "?virtual_host=2"
    beat = redbeat_options(configured, socket_keepalive=True, socket_connect_timeout=10)
    assert beat["redbeat_redis_options"] == {}  # redis-py refuses TCP options on a socket


# -- sentinel:// ----------------------------------------------------------------------------


def test_sentinel_without_its_master_name_stops_with_what_to_set() -> None:
    with pytest.raises(RedisUrlError, match="set PYSTOL_REDIS_SENTINEL_MASTER"):
        make_celery(settings("sentinel://s1:26379;sentinel://s2:26379/0"))


def test_sentinel_list_password_and_database_reach_every_library() -> None:
    configured = settings(f"sentinel://:{ENCODED}@s1:26379;sentinel://s2/4", "mymaster")
    endpoint = parse_redis_url(configured.redis_url, configured.redis_sentinel_master)
    assert endpoint.sentinels == (("s1", 26379), ("s2", 26379))
    assert (endpoint.password, endpoint.db, endpoint.master) == (PASSWORD, 4, "mymaster")

    client = redis_client(configured, socket_timeout=3)
    assert client.connection_pool.service_name == "mymaster"
    assert client.connection_pool.connection_kwargs["password"] == PASSWORD
    assert client.connection_pool.connection_kwargs["db"] == 4

    options = celery_broker_options(configured)
    # kombu reads the database and the password from the first URL of the list
    assert options["broker_url"].split(";")[0] == f"sentinel://:{ENCODED}@s1:26379/4"
    broker = kombu(options)
    assert broker.transport_cls == "sentinel" and broker.password == PASSWORD
    assert broker.virtual_host == "4"
    assert [url.split("@")[-1] for url in broker.alt] == ["s1:26379/4", "s2:26379/4"]
    app = make_celery(configured)
    assert app.conf.broker_transport_options["master_name"] == "mymaster"
    assert app.conf.broker_transport_options["visibility_timeout"] == 7200  # still there

    beat = RedBeatConfig(configure_redbeat(Celery("test", set_as_current=False), configured))
    assert beat.redis_url.startswith("redis-sentinel")
    assert beat.redbeat_redis_options["sentinels"] == [("s1", 26379), ("s2", 26379)]
    assert beat.redbeat_redis_options["service_name"] == "mymaster"
    assert beat.redbeat_redis_options["password"] == PASSWORD
    assert beat.redbeat_redis_options["db"] == 4


def test_sentinels_with_a_password_of_their_own() -> None:
    configured = settings("sentinel://:data@s1:26379?sentinel_password=guard", "mymaster")
    client = redis_client(configured, socket_timeout=2)
    sentinel_kwargs = client.connection_pool.sentinel_manager.sentinel_kwargs
    assert sentinel_kwargs["password"] == "guard" and sentinel_kwargs["socket_timeout"] == 2
    assert client.connection_pool.connection_kwargs["password"] == "data"
    transport = celery_broker_options(configured)["broker_transport_options"]
    assert transport["sentinel_kwargs"] == {"password": "guard"}
    assert "guard" not in shown_url(configured.redis_url)


@pytest.mark.parametrize(("url", "message"), [
    ("sentinel://:a@s1:26379;sentinel://:b@s2:26379", "different passwords"),
    ("sentinel://s1:26379/1;sentinel://s2:26379/2", "different databases"),
    ("sentinel://s1:26379;redis://s2:6379", "separate Sentinels with ';'"),
    ("sentinel://s1:26379?ssl_ca_certs=/ca.crt", "unknown query parameter"),
])
def test_inconsistent_sentinel_lists_are_refused(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message):
        parse_redis_url(url, "mymaster")


# -- what may be shown ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    f"redis://:{ENCODED}@redis:6379/0",
    f"redis://pystol:{ENCODED}@redis:6379/0",
    f"rediss://:{ENCODED}@redis:6380/0?ssl_ca_certs=/ca.crt",
    f"unix://:{ENCODED}@/run/redis.sock",
    f"sentinel://:{ENCODED}@s1:26379;sentinel://:{ENCODED}@s2:26379/0",
    f"redis://{ENCODED}@redis:6379/0",  # a password written where the user name goes
])
def test_shown_urls_never_carry_the_password(url: str) -> None:
    shown = shown_url(url)
    assert ENCODED not in shown and PASSWORD not in shown and "***" in shown
    assert shown.split("://")[0] == url.split("://")[0]


def test_errors_name_the_variable_and_hide_the_password() -> None:
    with pytest.raises(RedisUrlError) as refused:
        parse_redis_url(f"redis://:{ENCODED}@redis:6379/0?socket_timeout=3")
    message = str(refused.value)
    assert "PYSTOL_REDIS_URL" in message and "socket_timeout" in message
    assert ENCODED not in message and "***" in message
    with pytest.raises(RedisUrlError, match="database must be a number") as refused:
        parse_redis_url(f"redis://:{ENCODED}@redis:6379/zero")
    assert ENCODED not in str(refused.value)


def test_celery_banner_masks_the_password() -> None:
    # What `pystol worker` prints at start ("transport: ...") and logs on (re)connection.
    for url, master in ((f"redis://:{ENCODED}@redis:6379/0", ""),
                        (f"sentinel://:{ENCODED}@s1:26379;sentinel://s2:26379/0", "mymaster")):
        app = make_celery(settings(url, master))
        shown = app.connection_for_write().as_uri()
        assert ENCODED not in shown and PASSWORD not in shown, shown


def test_pystol_up_never_prints_the_password(tmp_path: Path) -> None:
    configured = f"redis://:{ENCODED}@127.0.0.1:1/0"  # nothing answers there
    plan = stack.plan_redis(configured, choice="auto", answers=False,
                            redis_server="/usr/bin/redis-server", fake_ok=False, port=6390,
                            workdir=tmp_path)
    assert "nothing answers at redis://:***@127.0.0.1:1/0" in plan.note
    with pytest.raises(stack.StackError) as refused:
        stack.plan_redis(configured, choice="auto", answers=False, redis_server=None,
                         fake_ok=False, port=6390, workdir=tmp_path)
    assert ENCODED not in str(refused.value) and "redis://:***@" in str(refused.value)

    printed = io.StringIO()
    stack._announce(stack.Output(printed, printed, colour=False), stack.UpOptions(),
                    stack.RedisPlan("existing", configured), "http://127.0.0.1:8080", None,
                    "", "")
    assert "Redis:    redis://:***@127.0.0.1:1/0" in printed.getvalue()
    assert ENCODED not in printed.getvalue() and PASSWORD not in printed.getvalue()


@pytest.mark.parametrize("url", ["redis://:s3cr/3tq@redis:6379/0",
                                 "redis://:q7?z9#x5v@redis:6379/0",
                                 "redis://user:p4@s5@redis:6379/0"])
def test_a_password_with_unencoded_characters_never_shows(url: str) -> None:
    """urlsplit ends the netloc at the first `/`, `?` or `#`: the masking read the password's
    tail as the host, and urlsplit's error quoted its head."""
    secret = url.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
    pieces = [piece for piece in re.split(r"[/?#@]", secret) if piece]
    assert not any(piece in shown_url(url) for piece in pieces), shown_url(url)
    try:
        parse_redis_url(url)
    except RedisUrlError as error:
        assert not any(piece in str(error) for piece in pieces), str(error)
