"""`pystol-sim`: start a simulated cluster and write a kubeconfig that reaches it."""

from __future__ import annotations

import asyncio
import base64
import gc
import secrets
import signal
import sys
import tempfile
from pathlib import Path

import click
import yaml
from aiohttp import web

from pystol_sim.cluster import Cluster, Timings
from pystol_sim.errors import ApiError
from pystol_sim.rbac import bootstrap_policy
from pystol_sim.resources import Catalogue
from pystol_sim.scenario import Problem, ScenarioError, load_scenario, scenario_manifests
from pystol_sim.scenario import Timings as ScenarioTimings
from pystol_sim.server import SimServer, StaticUser
from pystol_sim.snapshot import Problem as SnapshotProblem
from pystol_sim.snapshot import Snapshot, SnapshotError, read_snapshot
from pystol_sim.store import Store
from pystol_sim.tls import make_certificate, server_context


def kubeconfig(server_url: str, token: str, ca_pem: bytes) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pystol-sim", "cluster": {
            "server": server_url,
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": "pystol-sim", "user": {"token": token}}],
        "contexts": [{"name": "pystol-sim",
                      "context": {"cluster": "pystol-sim", "user": "pystol-sim",
                                  "namespace": "default"}}],
        "current-context": "pystol-sim",
    }


async def serve(scenario_path: Path | None, host: str, port: int, kubeconfig_path: Path,
                speed: float, token: str, history: int, snapshot_path: Path | None = None
                ) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    snapshot: Snapshot | None = None
    if snapshot_path is not None:
        # A copy of a real cluster: no users of its own, the scenario defaults for any
        # workload whose pods showed no timestamps to infer delays from.
        snapshot = read_snapshot(snapshot_path)
        users: tuple[StaticUser, ...] = ()
        defaults = ScenarioTimings()
        batches = snapshot.batches()
    else:
        scenario = load_scenario(scenario_path)
        users = tuple(StaticUser(u.name, u.token, tuple(u.groups)) for u in scenario.users)
        for index, user in enumerate(users):
            if user.token == token:
                raise ScenarioError(str(scenario_path), [Problem(
                    f"users[{index}].token", "this is the admin token (--token); give the user "
                    "a token of its own")])
        defaults = scenario.timings
        batches = [scenario_manifests(scenario)]
    timings = Timings(start_seconds=defaults.start_seconds,
                      ready_seconds=defaults.ready_seconds,
                      terminate_seconds=defaults.terminate_seconds,
                      schedule_seconds=defaults.schedule_seconds)
    catalogue = Catalogue()
    cluster = Cluster(Store(history_size=history), catalogue, timings, speed)
    # The default ClusterRoles and bindings first, as kube-apiserver's RBAC start-up hook does.
    try:
        cluster.load([*bootstrap_policy(), *batches[0]])
        for batch in batches[1:]:
            cluster.load(batch)
    except (ApiError, ValueError) as error:
        if snapshot_path is None:
            raise
        # The snapshot module checks what the API server would refuse; this is the last net.
        raise SnapshotError(str(snapshot_path), [SnapshotProblem(
            "", f"the simulated cluster refused an object: {error}")]) from None
    del batches
    # Everything loaded so far lives for the whole run: keep the collector from walking it
    # (a full pass over 100,000 pods pauses the event loop for about 0.4 s).
    gc.collect()
    gc.freeze()
    cluster.start()
    server = SimServer(cluster, token, users)
    runner = web.AppRunner(server.app(), handle_signals=False, access_log=None,
                           shutdown_timeout=2.0)
    await runner.setup()
    cert_pem, key_pem = make_certificate(host)
    with tempfile.TemporaryDirectory(prefix="pystol-sim-") as workdir:
        context = server_context(cert_pem, key_pem, Path(workdir))
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=context)
    await site.start()
    bound = runner.addresses[0][1]
    url = f"https://{host}:{bound}"
    kubeconfig_path.parent.mkdir(parents=True, exist_ok=True)
    kubeconfig_path.write_text(yaml.safe_dump(kubeconfig(url, token, cert_pem),
                                              sort_keys=False))
    kubeconfig_path.chmod(0o600)
    print(f"pystol-sim: serving {url} kubeconfig={kubeconfig_path}", flush=True)
    if snapshot is not None:
        # After the "serving" line, which tools wait for as the first line of output.
        for line in snapshot.summary():
            print(f"pystol-sim: {line}", file=sys.stderr)
        sys.stderr.flush()
        snapshot = None
    await stop.wait()
    server.closing.set()
    await runner.cleanup()
    await cluster.stop()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--scenario", type=click.Path(dir_okay=False, path_type=Path),
              help="Scenario YAML file (default: the built-in demo cluster).")
@click.option("--snapshot", type=click.Path(dir_okay=False, path_type=Path),
              help="Start from a copy of a real cluster: the output of `kubectl get nodes,"
                   "namespaces,deployments,statefulsets,daemonsets,replicasets,pods,services,"
                   "endpoints,poddisruptionbudgets -A -o yaml` (not with --scenario).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
@click.option("--kubeconfig", "kubeconfig_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write a kubeconfig for this cluster.")
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Divide every simulated delay by this factor.")
@click.option("--token", default=None, help="Bearer token to accept (default: random).")
@click.option("--watch-history", default=50_000, show_default=True,
              type=click.IntRange(min=10), help="Watch events kept per resource type.")
def main(scenario: Path | None, snapshot: Path | None, host: str, port: int,
         kubeconfig_path: Path, speed: float, token: str | None, watch_history: int) -> None:
    """Serve a simulated Kubernetes cluster over the real Kubernetes REST API."""
    if scenario is not None and snapshot is not None:
        raise click.UsageError("give --scenario or --snapshot, not both")
    try:
        asyncio.run(serve(scenario, host, port, kubeconfig_path, speed,
                          token or secrets.token_urlsafe(24), watch_history, snapshot))
    except ScenarioError as error:
        print(f"pystol-sim: {error}", file=sys.stderr)
        sys.exit(2)
    except SnapshotError as error:
        for line in error.lines():
            print(f"pystol-sim: {line}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"pystol-sim: cannot serve on {host}:{port}: {error.strerror or error}",
              file=sys.stderr)
        sys.exit(1)
