"""Benchmarks: each measures Pystol and its baseline side by side in one run.

Every Pystol process a benchmark starts inherits this process's environment, so they
share one signing key (PYSTOL_SIGNING_KEY), as the processes of one install do; a run
without one makes its own.
"""

import os
import secrets

os.environ.setdefault("PYSTOL_SIGNING_KEY", secrets.token_hex(32))
