"""Steady-state probes run before the fault and after recovery (Chaos Toolkit's hypothesis).

A probe that fails before injection stops the job before anything is changed:
chaos on a system that is already unhealthy teaches nothing and hurts.
"""

from __future__ import annotations

import time

import requests

from pystol_worker.core.model import HttpProbe, Probe, ProbeOutcome


def run_probe(probe: Probe, phase: str) -> ProbeOutcome:
    assert isinstance(probe, HttpProbe)
    started = time.monotonic()
    try:
        response = requests.get(probe.url, timeout=probe.timeout)
    except requests.RequestException as error:
        return ProbeOutcome(probe=probe, phase=phase, ok=False,  # type: ignore[arg-type]
                            seconds=round(time.monotonic() - started, 4), error=str(error))
    return ProbeOutcome(probe=probe, phase=phase,  # type: ignore[arg-type]
                        ok=response.status_code == probe.expect_status,
                        status=response.status_code,
                        seconds=round(time.monotonic() - started, 4))
