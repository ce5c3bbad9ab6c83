"""Redis is a trust boundary (issue 13), against real servers and Pystol's real processes.

- A Redis with a password refuses a client that has none (what any pod that reaches it
  would be), and the pipeline API -> Celery worker -> cluster runs with the password in
  PYSTOL_REDIS_URL without printing it.
- A real Sentinel: the same round trip through a sentinel:// URL (worker, API and beat).
- rediss://: the Debian redis-server speaks TLS (--tls-port). Pystol checks the server's
  certificate against the CA of the URL and refuses a server it cannot verify; kombu left
  to itself would not have checked (shown here), which is why the broker gets its TLS
  options from `redis_connection`.
- A Redis at maxmemory with `noeviction`: POST /api/v1/jobs answers 503 problem+json saying
  Redis is full, and every revert-journal entry is still there; with an evicting policy
  the journal is lost (shown here), which is why the chart and compose set noeviction.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kombu import Connection

from pystol_worker.core.model import TargetRef
from pystol_worker.core.settings import Settings
from pystol_worker.safety.revert_journal import JournalEntry, RevertJournal
from pystol_worker.store.redis_connection import (
    async_redis_client,
    celery_broker_options,
    redis_client,
)
from tests.support.pystol_processes import Process, api, beat, worker
from tests.support.redis_server import free_port
from tests.support.sim_process import SimProcess

TOKEN = "redis-trust-token"
PASSWORD = "pa55/w@rd:with-special"  # URL-encoded in PYSTOL_REDIS_URL
IN_URL = quote(PASSWORD, safe="")
MASTER = "pystolmaster"


# -- servers ------------------------------------------------------------------------------


@contextmanager
def redis_process(workdir: Path, args: list[str], ready: Callable[[], object]
                  ) -> Iterator[subprocess.Popen[bytes]]:
    """redis-server (or a Sentinel) with `args`, once `ready()` stops raising."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not on PATH (scripts/dev.sh installs it)")
    process = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=workdir)
    deadline = time.monotonic() + 10
    while True:
        try:
            ready()
            break
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"redis-server {' '.join(args)} did not start") from None
            time.sleep(0.05)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(10)


def server_args(workdir: Path, port: int, *extra: str) -> list[str]:
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), *extra]


@contextmanager
def redis_with_password(workdir: Path) -> Iterator[int]:
    port = free_port()
    with redis_process(workdir, server_args(workdir, port, "--requirepass", PASSWORD),
                       lambda: redis.Redis(port=port, password=PASSWORD).ping()):
        yield port


# -- Pystol's processes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess.start(tmp_path_factory.mktemp("sim"), speed=10.0) as process:
        yield process


@contextmanager
def pipeline(sim: SimProcess, env: dict[str, str]) -> Iterator[tuple[str, Process, Process]]:
    """A worker and the API on `env`'s Redis: (API URL, worker, api)."""
    env = dict(env, PYSTOL_KUBECONFIG=str(sim.kubeconfig))
    port = free_port()
    with worker(env, concurrency=1) as worker_process, api(env, port, TOKEN) as api_process:
        yield f"http://127.0.0.1:{port}", worker_process, api_process


def call(url: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, url + path, timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)


POD_KILL = {"action": "pod-kill", "target": {"namespaces": ["shop"], "label_selector": "app=cart",
                                             "mode": "fixed", "value": 1}}


def round_trip(url: str, worker_process: Process) -> dict[str, Any]:
    """Submit a pod-kill over HTTP and wait for the worker to finish it."""
    accepted = call(url, "POST", "/api/v1/jobs", json=POD_KILL)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 60
    while True:
        record = call(url, "GET", f"/api/v1/jobs/{job_id}").json()
        if record["status"] in ("succeeded", "failed", "aborted", "cancelled"):
            break
        assert time.monotonic() < deadline, f"job stuck:\n{record}\n{worker_process.tail()}"
        time.sleep(0.1)
    assert record["status"] == "succeeded", f"{record}\n{worker_process.tail()}"
    assert record["result"]["changes"][0]["action"] == "deleted"
    return record


def async_round_trip(settings: Settings) -> bytes | None:
    """What the CR watcher does on its asyncio connection: write, then read back."""
    async def run() -> bytes | None:
        client = async_redis_client(settings, socket_timeout=5)
        try:
            await client.set("pystol:test:async", b"seen")
            return await client.get("pystol:test:async")
        finally:
            await client.aclose()
    return asyncio.run(run())


def assert_never_printed(secret: str, *processes: Process) -> None:
    for process in processes:
        for line in process.output:
            assert secret not in line and quote(secret, safe="") not in line, \
                f"{process.name} printed the Redis password: {line}"


# -- (a) a password -----------------------------------------------------------------------


def test_redis_with_a_password_refuses_strangers_and_serves_pystol(
        sim: SimProcess, tmp_path: Path) -> None:
    with redis_with_password(tmp_path) as port:
        # The attacker: a pod that reaches Redis without the password. It can neither read
        # the jobs nor forge a journal entry nor lift the halt switch.
        stranger = redis.Redis(port=port)
        with pytest.raises(redis.AuthenticationError):
            stranger.hset("pystol:journal", "r-forged", "{}")
        with pytest.raises(redis.AuthenticationError):
            stranger.delete("pystol:halt")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="guessed").ping()

        env = {"PYSTOL_REDIS_URL": f"redis://:{IN_URL}@127.0.0.1:{port}/0"}
        with pipeline(sim, env) as (url, worker_process, api_process):
            record = round_trip(url, worker_process)
            owner = redis.Redis(port=port, password=PASSWORD)
            assert owner.exists(f"pystol:job:{record['id']}")
            assert any("transport:" in line and ":**@" in line
                       for line in worker_process.output), worker_process.tail()
            assert_never_printed(PASSWORD, worker_process, api_process)


# -- (b) Sentinel ---------------------------------------------------------------------------


@contextmanager
def sentinel_in_front_of_master(workdir: Path) -> Iterator[tuple[int, int]]:
    """A master with a password and one real Sentinel monitoring it: (master, sentinel)."""
    master_port, sentinel_port = free_port(), free_port()
    conf = workdir / "sentinel.conf"  # Sentinel rewrites its file: one of the test's own
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {workdir}\n"
                    f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
                    f"sentinel auth-pass {MASTER} {PASSWORD}\n"
                    f"sentinel down-after-milliseconds {MASTER} 5000\n")

    def sentinel_knows_master() -> None:
        state = redis.Redis(port=sentinel_port).sentinel_master(MASTER)
        if "disconnected" in state["flags"] or state.get("role-reported") != "master":
            raise redis.ConnectionError(f"sentinel not connected yet: {state['flags']}")

    with redis_process(workdir, server_args(workdir, master_port, "--requirepass", PASSWORD),
                       lambda: redis.Redis(port=master_port, password=PASSWORD).ping()), \
            redis_process(workdir, [str(conf), "--sentinel"], sentinel_knows_master):
        yield master_port, sentinel_port


def test_pipeline_and_beat_through_a_real_sentinel(sim: SimProcess, tmp_path: Path) -> None:
    with sentinel_in_front_of_master(tmp_path) as (master_port, sentinel_port):
        dead_sentinel = free_port()  # the first one listed is down: the next one answers
        url = (f"sentinel://:{IN_URL}@127.0.0.1:{dead_sentinel};"
               f"sentinel://:{IN_URL}@127.0.0.1:{sentinel_port}/0")

        # Without the master's name every process stops at start and says what to set.
        refused = subprocess.run([sys.executable, "-m", "pystol_api.cli", "worker"],
                                 env=dict(os.environ, PYSTOL_REDIS_URL=url),
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "set PYSTOL_REDIS_SENTINEL_MASTER" in refused.stderr + refused.stdout
        assert PASSWORD not in refused.stderr + refused.stdout

        env = {"PYSTOL_REDIS_URL": url, "PYSTOL_REDIS_SENTINEL_MASTER": MASTER}
        assert async_round_trip(Settings(redis_url=url, redis_sentinel_master=MASTER)) == \
            b"seen"
        master = redis.Redis(port=master_port, password=PASSWORD)
        with pipeline(sim, env) as (api_url, worker_process, api_process), \
                beat(dict(env, PYSTOL_KUBECONFIG=str(sim.kubeconfig))) as beat_process:
            record = round_trip(api_url, worker_process)
            # Everything went to the master the Sentinel named.
            assert master.exists(f"pystol:job:{record['id']}")
            assert master.exists("pystol:redbeat::lock")  # beat holds redbeat's lock there
            assert_never_printed(PASSWORD, worker_process, api_process, beat_process)


# -- (c) TLS --------------------------------------------------------------------------------


def tls_files(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("pystol test CA"))
          .issuer_name(name("pystol test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_tls_redis_is_verified_and_serves_pystol(sim: SimProcess, tmp_path: Path) -> None:
    ca, cert, key = tls_files(tmp_path)
    port = free_port()
    args = server_args(tmp_path, 0, "--tls-port", str(port), "--tls-cert-file", str(cert),
                       "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                       "--tls-auth-clients", "no", "--requirepass", PASSWORD)
    verified = f"rediss://:{IN_URL}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    with redis_process(tmp_path, args,
                       lambda: redis_client(Settings(redis_url=verified)).ping()):
        # A server whose certificate Pystol cannot verify (here: its CA not given, as for
        # an impostor with a certificate of its own) is refused, by redis-py and Celery.
        unverified = Settings(redis_url=f"rediss://:{IN_URL}@127.0.0.1:{port}/0")
        with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            redis_client(unverified).ping()
        options = celery_broker_options(unverified)
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"), \
                Connection(options["broker_url"], ssl=options["broker_use_ssl"],
                           connect_timeout=5) as broker:
            broker.ensure_connection(max_retries=1)
        # kombu on its own (a rediss:// URL and no TLS options) talks to that server
        # anyway: the insecure default `celery_broker_options` replaces.
        with Connection(f"rediss://:{IN_URL}@127.0.0.1:{port}/0", connect_timeout=5) as broker:
            broker.ensure_connection(max_retries=1)
            assert broker.connected

        assert async_round_trip(Settings(redis_url=verified)) == b"seen"
        with pipeline(sim, {"PYSTOL_REDIS_URL": verified}) as (url, worker_process, api_process):
            round_trip(url, worker_process)
            assert_never_printed(PASSWORD, worker_process, api_process)


# -- Redis at maxmemory -------------------------------------------------------------------


def journal_entries(journal: RevertJournal, count: int) -> list[str]:
    ids = []
    for index in range(count):
        entry = journal.record(JournalEntry(
            job_id="j-running", action="pod-failure", undo="restore_images",
            target=TargetRef(kind="Pod", namespace="shop", name=f"cart-{index}",
                             uid=f"uid-{index}"),
            data={"images": {"app": "shop/cart:1"}}))
        ids.append(entry.id)
    return ids


def fill(client: redis.Redis, sizes: tuple[int, ...] = (65536, 4096, 256, 16),
         megabytes: int = 40) -> bool:
    """Write junk (what a runaway, or an attacker, would) until Redis refuses it, in ever
    smaller pieces, so that even a small write is refused afterwards; True if it was."""
    refused = False
    for size in sizes:
        for index in range(megabytes * 2**20 // size):
            try:
                client.set(f"junk:{size}:{index}", b"x" * size)
            except redis.exceptions.OutOfMemoryError:
                refused = True
                break
    return refused


@contextmanager
def api_on_a_small_redis(sim: SimProcess, tmp_path: Path
                         ) -> Iterator[tuple[str, redis.Redis]]:
    """The API on a redis-server of 8 MB that refuses writes when full (noeviction), as the
    chart runs it; (the API's URL, a client of that Redis)."""
    port = free_port()
    args = server_args(tmp_path, port, "--maxmemory", "8mb", "--maxmemory-policy", "noeviction")
    with redis_process(tmp_path, args, lambda: redis.Redis(port=port).ping()):
        env = {"PYSTOL_REDIS_URL": f"redis://127.0.0.1:{port}/0",
               "PYSTOL_KUBECONFIG": str(sim.kubeconfig)}
        api_port = free_port()
        with api(env, api_port, TOKEN):
            yield f"http://127.0.0.1:{api_port}", redis.Redis(port=port)


def test_full_redis_refuses_new_jobs_with_503_and_keeps_the_journal(
        sim: SimProcess, tmp_path: Path) -> None:
    with api_on_a_small_redis(sim, tmp_path) as (url, client):
        journal = RevertJournal(client, Settings().signing_key_bytes)
        recorded = journal_entries(journal, 20)
        assert fill(client), "Redis never refused a write"

        refused = call(url, "POST", "/api/v1/jobs", json=POD_KILL)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"].endswith("/store-full")
        assert problem["detail"].startswith("Redis is full")
        assert "maxmemory" in problem["detail"]
        assert refused.headers["Retry-After"]

        # Every journal entry is still there and genuine: the reaper can revert what
        # they record.
        kept = journal.entries()
        assert sorted(entry.id for entry in kept) == sorted(recorded)
        assert call(url, "GET", "/api/v1/halt").status_code == 200


def test_the_halt_switch_engages_when_redis_is_full(sim: SimProcess, tmp_path: Path) -> None:
    with api_on_a_small_redis(sim, tmp_path) as (url, client):
        assert fill(client), "Redis never refused a write"
        halt = call(url, "POST", "/api/v1/halt", json={"reason": "Redis is full"})
        assert client.exists("pystol:halt"), halt.text
        assert halt.status_code == 200, halt.text


def test_an_evicting_redis_loses_the_journal(tmp_path: Path) -> None:
    """Why noeviction: with Redis's other policies a full Redis drops keys to make room,
    and the revert journal goes with them: the faults it records are never reverted."""
    port = free_port()
    args = server_args(tmp_path, port, "--maxmemory", "8mb",
                       "--maxmemory-policy", "allkeys-lru")
    with redis_process(tmp_path, args, lambda: redis.Redis(port=port).ping()):
        client = redis.Redis(port=port)
        journal = RevertJournal(client, Settings().signing_key_bytes)
        recorded = journal_entries(journal, 20)
        assert not fill(client, sizes=(65536,))  # it made room instead, by evicting
        assert len(journal.entries()) < len(recorded)
