"""Benchmarks: each measures Pystol and its baseline side by side in one run.

Every Pystol process a benchmark starts inherits this process's environment, so they
share one signing key (PYSTOL_SIGNING_KEY), as the processes of one install do; a run
without one makes its own.
"""

import os
import secrets

os.environ.setdefault("PYSTOL_SIGNING_KEY", secrets.token_hex(32))


#: The API's rate limits (PYSTOL_API_RATE_LIMIT per identity, 50/s by default, and
#: PYSTOL_API_ADDRESS_RATE_LIMIT per address) would refuse most of a throughput
#: benchmark's requests, which all carry one token from one address. Limits no run reaches
#: keep the limiter's cost in every request (its Redis counters) without its refusals, so
#: the figures are those of a deployment whose limits are above its load. Benchmarks add
#: these to the environment of the API they start (not to this process's environment,
#: which test processes importing `bench` would pass on to every API they start).
UNREACHED_RATE_LIMITS = {"PYSTOL_API_RATE_LIMIT": "100000000/second",
                         "PYSTOL_API_ADDRESS_RATE_LIMIT": "100000000/second"}
