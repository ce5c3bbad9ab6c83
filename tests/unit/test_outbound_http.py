"""What a probe URL may reach, and what one call may cost (`safety.outbound_http`).

The address rules are tested on their own (including the forms a request uses to slip
past a check: IPv4 written as one number or in octal, IPv4 inside IPv6), the guard with
an injected resolver (names that resolve to refused addresses, a name that resolves
differently the second time), and the client against real HTTP(S) servers on loopback
(trickling, endless, redirecting), with an admin policy that allows 127.0.0.1 only.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pystol_worker.actions import default_registry
from pystol_worker.core.destinations import Address, parse_allow_entry, parse_host
from pystol_worker.core.model import JobSpec, JobStatus
from pystol_worker.core.policy import Policy, ProbePolicy, load_policy
from pystol_worker.core.settings import Settings
from pystol_worker.jobs.authorization import policy_problems
from pystol_worker.jobs.validation import validate_job
from pystol_worker.safety.outbound_http import (
    DestinationGuard,
    DestinationRefused,
    ProbeClient,
    ProbeStopped,
    address_danger,
    pystol_services,
)
from tests.support.fake_jobs import FakeJobs
from tests.support.probe_server import serving, tls_pair

LOOPBACK_ONLY = ProbePolicy(allow=["127.0.0.1/32"])


def ip(text: str) -> Address:
    return ipaddress.ip_address(text)


# -- which addresses are refused by default ---------------------------------------------------

@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.255.254", "loopback"), ("::1", "loopback"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"), ("168.63.129.16", "cloud metadata"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "broadcast"),
    # IPv4 inside IPv6: mapped, NAT64, 6to4 — judged by the IPv4 address they carry.
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "cloud metadata"),
    ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("2002:7f00:1::1", "loopback"),
])
def test_dangerous_addresses_are_refused_by_default(address: str, kind: str) -> None:
    danger = address_danger(ip(address))
    assert danger is not None and kind in danger.kind


@pytest.mark.parametrize("address", [
    "10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1",  # the cluster's networks
    "100.64.0.1", "fd00::1", "8.8.8.8", "2001:4860:4860::8888", "::ffff:10.0.0.1"])
def test_ordinary_cluster_and_public_addresses_are_allowed_by_default(address: str) -> None:
    assert address_danger(ip(address)) is None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_address_inside_ipv6_is_judged_as_the_ipv4_address(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | value)
    expected = address_danger(v4)
    for wrapped in (mapped, nat64):
        danger = address_danger(wrapped)
        assert (danger is None) == (expected is None), (v4, wrapped)
        if expected is not None and danger is not None:
            assert danger.kind == expected.kind


@given(st.integers(min_value=0x7F000000, max_value=0x7FFFFFFF))
def test_every_loopback_address_is_refused_however_it_is_written(value: int) -> None:
    guard = DestinationGuard(ProbePolicy(), resolver=no_dns)
    v4 = ipaddress.IPv4Address(value)
    for url in (f"http://{v4}/", f"http://[::ffff:{v4}]/", f"http://{value}/",
                f"http://{oct(value).replace('0o', '0')}/", f"http://{hex(value)}/"):
        assert guard.problem(url) is not None, url


# -- how a URL is read ------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001",
                                  "127.1", "017700000001", "010.0.0.1", "127.0.0.1."])
def test_ipv4_written_other_than_in_dotted_decimal_is_refused(host: str) -> None:
    # The system resolver would read these as an address (most as 127.0.0.1): that is the
    # attack; the guard does not let the resolver decide.
    with pytest.raises(ValueError, match="dotted-decimal"):
        parse_host(host)
    problem = DestinationGuard(ProbePolicy(allow=["0.0.0.0/0"]), resolver=no_dns).problem(
        f"http://{host}/")
    assert problem is not None and "four decimal numbers" in problem


def test_the_system_resolver_would_have_read_a_decimal_host_as_loopback() -> None:
    # Why the forms above must be refused rather than resolved and hoped about.
    infos = socket.getaddrinfo("2130706433", 80, type=socket.SOCK_STREAM)
    assert {info[4][0] for info in infos} == {"127.0.0.1"}


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://10.0.0.1/", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("http://user:secret@10.0.0.1/", "user info"),
    ("http://10.0.0.1@127.0.0.1/", "user info"),
    ("http://10.0.0.1/a\r\nHost: evil", "control characters"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://10.0.0.1:99999/", "Port out of range"),
    ("http://10.0.0.1:0/", "port 0"),
    ("http:///path", "no host"),
])
def test_urls_that_are_not_plain_http_are_refused(url: str, why: str) -> None:
    problem = DestinationGuard(ProbePolicy(), resolver=no_dns).problem(url)
    assert problem is not None and why in problem, problem


# -- the admin's exceptions -------------------------------------------------------------------

def test_allow_entries_open_loopback_by_network_address_name_and_port() -> None:
    resolver = FakeResolver({"web.shop.test": ["127.0.0.9"]})
    cases = [
        (["127.0.0.0/8"], "http://127.0.0.9:8080/", True),
        (["127.0.0.1"], "http://127.0.0.9:8080/", False),
        (["127.0.0.9:8080"], "http://127.0.0.9:8080/", True),
        (["127.0.0.9:8080"], "http://127.0.0.9:8081/", False),
        (["web.shop.test"], "http://web.shop.test:8080/", True),
        (["*.shop.test:8080"], "http://web.shop.test:8080/", True),
        (["*.shop.test:8080"], "http://web.shop.test:9090/", False),
        (["::1"], "http://[::1]:80/", True),
        (["[::1]:8080"], "http://[::1]:80/", False),
        (["127.0.0.0/8"], "http://[::ffff:127.0.0.9]:80/", True),
    ]
    for allow, url, allowed in cases:
        guard = DestinationGuard(ProbePolicy(allow=allow), resolver=resolver)
        assert (guard.problem(url) is None) == allowed, (allow, url, guard.problem(url))


def test_metadata_and_pystol_services_need_an_exact_entry_with_the_port() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6390/0", api_bind="0.0.0.0:8099")
    broad = DestinationGuard.for_settings(
        ProbePolicy(allow=["0.0.0.0/0", "::/0", "metadata.google.internal"]), settings,
        resolver=FakeResolver({"metadata.google.internal": ["169.254.169.254"]}))
    for url in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:6390/",
                "http://127.0.0.1:8099/api/v1/halt", "http://[::1]:8099/",
                "http://metadata.google.internal/computeMetadata/v1/"):
        assert broad.problem(url) is not None, url
    assert broad.problem("http://127.0.0.1:6391/") is None  # loopback itself is allowed here

    exact = DestinationGuard.for_settings(
        ProbePolicy(allow=["169.254.169.254:80", "127.0.0.1:6390"]), settings,
        resolver=no_dns)
    assert exact.problem("http://169.254.169.254/latest/meta-data/") is None
    assert exact.problem("http://127.0.0.1:6390/") is None


def test_pystol_services_come_from_the_settings() -> None:
    settings = Settings(redis_url="sentinel://s1.pystol.test:26379;sentinel://s2:26380/0",
                        api_bind="10.0.0.7:8080")
    assert [(s.what, str(s.host), s.port) for s in pystol_services(settings)] == [
        ("Pystol's Redis", "s1.pystol.test", 26379), ("Pystol's Redis", "s2", 26380),
        ("Pystol's API", "10.0.0.7", 8080)]
    resolver = FakeResolver({"redis.pystol.test": ["10.0.0.5"], "s1.pystol.test": []})
    guard = DestinationGuard.for_settings(
        ProbePolicy(), Settings(redis_url="redis://:pw@redis.pystol.test:6379/0"),
        resolver=resolver)
    problem = guard.problem("http://10.0.0.5:6379/")
    assert problem is not None and "Pystol's Redis" in problem
    assert guard.problem("http://10.0.0.5:80/") is None  # the same host, another service
    assert guard.problem("http://redis.pystol.test:6379/") is not None


@pytest.mark.parametrize(("entry", "message"), [
    ("0177.0.0.1", "dotted"), ("10.0.0.1/8", "host bits"), ("2130706433", "dotted"),
    ("web:99999", "port"), ("bad name!", "not an address"), ("[::1]8080", "[IPV6]:PORT")])
def test_a_bad_allow_entry_stops_the_policy_from_loading(tmp_path: Path, entry: str,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_allow_entry(entry)
    with pytest.raises(ValidationError, match=r"probes\.allow\.0"):
        Policy.model_validate({"probes": {"allow": [entry]}})
    path = tmp_path / "policy.yaml"
    path.write_text(f"probes:\n  allow: [{entry!r}]\n")
    with pytest.raises(Exception, match=r"probes\.allow\.0"):
        load_policy(str(path))


# -- resolving once ---------------------------------------------------------------------------

def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    resolver = FakeResolver({"evil.test": ["169.254.169.254"],
                             "mixed.test": ["10.0.0.1", "127.0.0.5"],
                             "fine.test": ["10.0.0.1", "10.0.0.2"]})
    guard = DestinationGuard(ProbePolicy(), resolver=resolver)
    assert "cloud metadata" in (guard.problem("http://evil.test/") or "")
    assert "loopback" in (guard.problem("http://mixed.test/") or "")
    assert guard.problem("http://fine.test/") is None
    assert guard.problem("http://does-not-resolve.test/") is None  # the worker checks again


def test_the_connection_goes_to_the_address_that_was_checked(tmp_path: Path) -> None:
    """DNS rebinding: the name answers an allowed address for the check and a refused one
    right after. The client resolves once and connects to what it checked."""
    with serving("127.0.0.1") as allowed, serving("127.0.0.2") as victim:
        resolver = FakeResolver({"rebind.test": ["127.0.0.1"]},
                                then={"rebind.test": ["127.0.0.2"]})
        client = ProbeClient(DestinationGuard(LOOPBACK_ONLY, resolver=resolver))
        answer = client.get(f"http://rebind.test:{allowed.port}/ok", timeout=5)
        assert answer.status == 200, answer
        assert resolver.asked == ["rebind.test"]
        assert allowed.hosts == [f"rebind.test:{allowed.port}"]
        assert victim.hits == []
        # Asked again, the name now resolves to the victim: refused, nothing sent.
        with pytest.raises(DestinationRefused, match="loopback"):
            client.get(f"http://rebind.test:{victim.port}/ok", timeout=5)
        assert victim.hits == []


def test_https_verifies_the_certificate_for_the_name_while_connecting_to_the_address(
        tmp_path: Path) -> None:
    context, trust = tls_pair(tmp_path, "probe.test")
    with serving("127.0.0.1", tls=context) as server:
        resolver = FakeResolver({"probe.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        client = ProbeClient(DestinationGuard(LOOPBACK_ONLY, resolver=resolver), tls=trust)
        answer = client.get(f"https://probe.test:{server.port}/ok", timeout=5)
        assert answer.status == 200, answer
        assert server.hosts == [f"probe.test:{server.port}"]
        wrong = client.get(f"https://other.test:{server.port}/ok", timeout=5)
        assert wrong.status is None and "certificate" in (wrong.error or ""), wrong


# -- redirects --------------------------------------------------------------------------------

def test_redirects_are_answers_unless_the_policy_and_the_job_both_follow_them() -> None:
    with serving("127.0.0.1") as allowed, serving("127.0.0.2") as victim:
        to_victim = allowed.url(f"/redirect?to={victim.url('/secret')}")
        closed = ProbeClient(DestinationGuard(LOOPBACK_ONLY, resolver=no_dns))
        assert closed.get(to_victim, timeout=5, follow_redirects=True).status == 302

        policy = ProbePolicy(allow=["127.0.0.1/32"], follow_redirects=True, max_redirects=2)
        open_ = ProbeClient(DestinationGuard(policy, resolver=no_dns))
        assert open_.get(to_victim, timeout=5).status == 302  # the job did not ask
        with pytest.raises(DestinationRefused, match=r"redirect 1 to .* refused: .*loopback"):
            open_.get(to_victim, timeout=5, follow_redirects=True)
        assert victim.hits == []

        to_ok = allowed.url(f"/redirect?to={allowed.url('/ok')}")
        answer = open_.get(to_ok, timeout=5, follow_redirects=True)
        assert (answer.status, answer.redirects) == (200, 1)
        looped = open_.get(allowed.url("/loop"), timeout=5, follow_redirects=True)
        assert looped.status is None and looped.error == "more than 2 redirects"
        assert allowed.hits.count("/loop") == 3
        with pytest.raises(DestinationRefused, match="only http and https"):
            open_.get(allowed.url("/redirect?to=file:///etc/passwd"), timeout=5,
                      follow_redirects=True)


# -- caps -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers"])
def test_a_trickling_server_is_cut_off_at_the_policy_cap(path: str) -> None:
    client = ProbeClient(DestinationGuard(
        ProbePolicy(allow=["127.0.0.1/32"], max_seconds=1.0), resolver=no_dns))
    with serving("127.0.0.1") as server:
        started = time.monotonic()
        answer = client.get(server.url(path), timeout=60)
        took = time.monotonic() - started
    assert answer.status is None and answer.error == "timed out after 1s", answer
    assert 0.9 <= took < 1.8, took


def test_the_body_is_read_up_to_the_cap_and_no_further() -> None:
    client = ProbeClient(DestinationGuard(
        ProbePolicy(allow=["127.0.0.1/32"], max_body_bytes=1000), resolver=no_dns))
    with serving("127.0.0.1") as server:
        huge = client.get(server.url("/endless"), timeout=10)
        exact = client.get(server.url("/bytes?n=1000"), timeout=10)
        small = client.get(server.url("/bytes?n=10"), timeout=10)
    assert (huge.status, huge.body_bytes, huge.body_cut) == (200, 1000, True), huge
    assert huge.seconds < 2
    assert (exact.body_bytes, exact.body_cut) == (1000, False)
    assert (small.body_bytes, small.body_cut) == (10, False)


def test_a_stop_ends_a_call_that_is_waiting_for_its_answer() -> None:
    stop = threading.Event()
    client = ProbeClient(DestinationGuard(LOOPBACK_ONLY, resolver=no_dns),
                         should_stop=stop.is_set, poll_seconds=0.05)
    with serving("127.0.0.1") as server:
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(ProbeStopped):
            client.get(server.url("/trickle-body"), timeout=20)
        assert time.monotonic() - started < 1.5


# -- checked on the way in, and again in the worker -------------------------------------------

def refusals(spec: dict[str, Any], policy: Policy, settings: Settings | None = None
             ) -> dict[str, str]:
    """What `policy_problems` (the submission service's check) says, by field."""
    job = JobSpec.model_validate(spec)
    action, params = validate_job(job, default_registry(), Settings())
    return {p.loc: p.msg for p in policy_problems(job, action, params, policy,
                                                   datetime.datetime.now(datetime.UTC),
                                                   settings=settings)}


def test_submission_names_each_refused_url_and_each_param_above_the_caps() -> None:
    probe = {"action": "http-probe", "target": {}, "params": {"url": "http://127.0.0.2/"}}
    assert "loopback" in refusals(probe, Policy())["params.url"]
    steady = {"action": "pod-kill", "target": {"namespaces": ["shop"]},
              "probes": [{"url": "http://10.0.0.1/"},
                         {"url": "http://169.254.169.254/", "timeout": "45s"}]}
    # a legacy top-level `timeout` is read as run.timeout, and refused there
    assert refusals(steady, Policy()).keys() == {"probes[1].url", "probes[1].run.timeout"}
    asks = {**probe, "params": {"url": "http://10.0.0.1/", "follow_redirects": True,
                                "timeout": "40s"}}
    assert refusals(asks, Policy()).keys() == {"params.follow_redirects", "params.timeout"}
    allowing = Policy(probes=ProbePolicy(follow_redirects=True, max_seconds=60))
    assert refusals(asks, allowing) == {}

    redis = {**probe, "params": {"url": "http://127.0.0.1:6379/"}}
    loopback = Policy(probes=LOOPBACK_ONLY)
    assert "Pystol's Redis" in refusals(redis, loopback, Settings())["params.url"]


def test_the_worker_refuses_before_connecting_and_again_when_it_connects() -> None:
    with serving("127.0.0.2") as victim, serving("127.0.0.1") as allowed:
        # Stored without the submission service's checks (as a job queued under an older
        # policy is): the runner's own policy check refuses it.
        jobs = FakeJobs()
        record = jobs.run({"action": "http-probe", "target": {},
                           "params": {"url": victim.url("/secret"), "count": 3}})
        assert record.status == JobStatus.FAILED
        assert "admin policy" in (record.reason or "") and "loopback" in (record.reason or "")
        assert victim.hits == []

        # Pystol's own services are known to the worker from its settings, whatever the
        # submission knew: the call is refused when it is about to connect.
        jobs = FakeJobs(policy=Policy(probes=LOOPBACK_ONLY))
        jobs.settings.redis_url = f"redis://127.0.0.1:{allowed.port}/0"
        record = jobs.run({"action": "http-probe", "target": {},
                           "params": {"url": allowed.url("/redis"), "count": 3}})
        assert record.status == JobStatus.FAILED
        assert "Pystol's Redis" in (record.reason or ""), record.reason
        assert allowed.hits == []


# -- the test's resolvers and servers ---------------------------------------------------------

def no_dns(name: str, port: int, seconds: float) -> Sequence[Address]:
    raise OSError(f"{name}: no DNS in this test")


class FakeResolver:
    """Answers from a table (`then`: the answers from the second question on); records
    the names it was asked."""

    def __init__(self, answers: dict[str, list[str]],
                 then: dict[str, list[str]] | None = None) -> None:
        self.answers = answers
        self.then = then or answers
        self.asked: list[str] = []

    def __call__(self, name: str, port: int, seconds: float) -> Sequence[Address]:
        table = self.then if name in self.asked else self.answers
        self.asked.append(name)
        if name not in table:
            raise socket.gaierror(f"{name}: not known")
        return [ip(text) for text in table[name]]
