"""The README's first run, as a new user does it, in whatever venv runs this script.

`bash scripts/dev.sh wheel-smoke` runs it with the Python of a fresh venv into which
only the built wheel was installed (no test extra), so a runtime dependency that only
a test tool brings cannot hide here. It uses the standard library only.

Steps: `pystol up --sim` as a child; wait for the block it prints under "In another
terminal:"; paste that block into a new shell whose PATH has no virtualenv and whose
environment has none of Pystol's variables (what a new terminal has); expect the job
to end `succeeded`; then Ctrl-C `up` and expect it to stop cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

READY_TIMEOUT_SECONDS = 120.0
RUN_TIMEOUT_SECONDS = 180.0


def main() -> int:
    bin_dir = Path(sys.executable).parent
    pystol = bin_dir / "pystol"
    if not pystol.exists():
        print(f"first-run smoke: no {pystol}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="pystol-first-run-") as home:
        env = {"HOME": home, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               # a venv's scripts are found by their absolute path, as `dev.sh up` runs them
               "PATH": "/usr/local/bin:/usr/bin:/bin"}
        up = subprocess.Popen([str(pystol), "up", "--sim", "--port", "0"], cwd=home, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
        lines: list[str] = []

        def pump() -> None:
            assert up.stdout is not None
            for line in up.stdout:
                lines.append(line.rstrip("\n"))
                print(f"  | {line}", end="", flush=True)

        threading.Thread(target=pump, daemon=True).start()
        try:
            block = pasted_block(up, lines)
            print(f"first-run smoke: pasting into a new shell:\n{block}", flush=True)
            run = subprocess.run(["bash", "-ec", block], cwd=home, env=env, text=True,
                                 capture_output=True, timeout=RUN_TIMEOUT_SECONDS)
            print(run.stdout + run.stderr, flush=True)
            if run.returncode != 0 or "succeeded" not in run.stdout:
                print(f"first-run smoke: FAILED (exit {run.returncode})", file=sys.stderr)
                return 1
        finally:
            if up.poll() is None:
                up.send_signal(signal.SIGINT)
            try:
                code = up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                code = up.wait()
        if code != 0:
            print(f"first-run smoke: `pystol up` exited {code} after Ctrl-C", file=sys.stderr)
            return 1
    print("first-run smoke: ok (pasted command succeeded, `pystol up` stopped cleanly)")
    return 0


def pasted_block(up: subprocess.Popen[str], lines: list[str]) -> str:
    """The lines `pystol up` prints between "In another terminal:" and the run command."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        snapshot = list(lines)
        if "In another terminal:" in snapshot:
            start = snapshot.index("In another terminal:") + 1
            for index in range(start, len(snapshot)):
                if re.match(r"^pystol run ", snapshot[index]):
                    return "\n".join(line for line in snapshot[start:index + 1] if line)
        if up.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit("first-run smoke: `pystol up --sim` printed no command to paste:\n"
                     + "\n".join(lines[-40:]))


if __name__ == "__main__":
    sys.exit(main())
