"""The line `pystol-sim` prints when it serves: where the cluster is and its kubeconfig.

`pystol up` and a rehearsal both start the simulator as a child process and learn where
it listens from the first line of its stdout, `pystol-sim: serving URL kubeconfig=PATH`
(it binds port 0, so nobody knows the port before). One parser, here, so the two can
never read the line differently. Only that first line counts: the simulator's stderr and
later output may quote a snapshot's own names and are never parsed.
"""

from __future__ import annotations

import re
from pathlib import Path

SIM_SERVING = re.compile(r"^pystol-sim: serving (?P<url>https?://\S+) kubeconfig=(?P<path>.+)$")


def parse_sim_serving(line: str) -> tuple[str, Path] | None:
    """(url, kubeconfig) from `pystol-sim: serving URL kubeconfig=PATH`, else None."""
    match = SIM_SERVING.match(line.strip())
    return (match["url"], Path(match["path"])) if match else None
