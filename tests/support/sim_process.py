"""Start `pystol-sim` as a child process, the way a user would, and talk to it."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class SimProcess:
    process: subprocess.Popen[str]
    url: str
    kubeconfig: Path
    token: str
    speed: float
    ssl_context: ssl.SSLContext
    #: The sim's last output lines. Its pipe is read to the end, so whatever it prints
    #: (a traceback, say) can never fill the pipe and stall the sim for later tests.
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))

    @classmethod
    @contextmanager
    def start(cls, workdir: Path, scenario: Path | None = None, speed: float = 10.0,
              extra_args: tuple[str, ...] = (), scenario_text: str | None = None
              ) -> Iterator[SimProcess]:
        """A sim on the demo cluster, a scenario file, or `scenario_text` (written to
        `workdir/scenario.yaml`)."""
        if scenario_text is not None:
            scenario = workdir / "scenario.yaml"
            scenario.write_text(scenario_text)
        kubeconfig = workdir / "kubeconfig"
        args = [sys.executable, "-m", "pystol_sim", "--port", "0", "--kubeconfig",
                str(kubeconfig), "--speed", str(speed), *extra_args]
        if scenario is not None:
            args += ["--scenario", str(scenario)]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("pystol-sim: serving "):
            rest = process.stdout.read() if process.poll() is not None else ""
            process.kill()
            raise RuntimeError(f"pystol-sim did not start: {line}{rest}")
        url = line.split()[2]
        config = yaml.safe_load(kubeconfig.read_text())
        token = config["users"][0]["user"]["token"]
        ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        sim = cls(process, url, kubeconfig, token, speed,
                  ssl.create_default_context(cadata=ca.decode()))
        threading.Thread(target=sim._drain, name="sim-output", daemon=True).start()
        try:
            yield sim
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0
                ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout,
                                        context=self.ssl_context) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def truth(self, namespace: str | None = None) -> list[dict[str, Any]]:
        status, body = self.request("GET", "/_sim/truth" + (f"?namespace={namespace}"
                                                            if namespace else ""))
        assert status == 200, body
        return body["pods"]

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60.0
                ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], env=self.env(), capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def wait_for(self, predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
