#!/usr/bin/env bash
# Offline tests of the Iron Helm chart (charts/iron), run by scripts/test:
#   - helm lint --strict and helm template for the default values and every ci/*-values.yaml,
#     with the Helm v4 SDK bundled in the PyPI package helm-python-sdk;
#   - every rendered object validated by kubernetes-validate --strict (Kubernetes 1.25 and
#     1.37 schemas), ServiceMonitor / PrometheusRule against the Prometheus Operator CRD models;
#   - ci/invalid/*-values.yaml rejected by values.schema.json;
#   - proxy.toml / control.toml from the rendered ConfigMaps pass `iron-proxy --check-config` and
#     `iron-control --check-config`, started like the pod starts them;
#   - hardened pods (non-root, read-only root fs, no privilege escalation, capabilities dropped,
#     seccomp RuntimeDefault), resources, probes, config checksum, termination grace;
#   - dashboards and rules in the chart are the files check-observability.sh checks;
#   - unit tests in the spirit of helm-unittest (which cannot be installed from a registry).
#
#   bash charts/iron/ci/test-chart.sh            # everything
#   bash charts/iron/ci/test-chart.sh -k redis   # extra arguments go to pytest
#
# Needs python3 >= 3.11 and, unless target/debug/iron-proxy and iron-control exist (or
# IRON_PROXY_BIN / IRON_CONTROL_BIN name them), cargo to build them; IRON_CHART_REBUILD=1
# runs the (incremental) cargo build even when they exist. The Python packages
# (ci/requirements.txt) go into $IRON_CHART_VENV (default: <repo>/.venv-chart) from PyPI.
set -euo pipefail

CHART_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$CHART_DIR/../.." && pwd)"
VENV="${IRON_CHART_VENV:-$REPO_DIR/.venv-chart}"
REQUIREMENTS="$CHART_DIR/ci/requirements.txt"

log() { printf '==> test-chart: %s\n' "$*" >&2; }
die() { printf 'test-chart: FAIL: %s\n' "$*" >&2; echo "0 passed, 1 failed"; exit 1; }

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "$PYTHON is older than 3.11 (the tests use tomllib)"

# --- Python environment ------------------------------------------------------------------
stamp="$VENV/.iron-chart-requirements"
want="$(cat "$REQUIREMENTS")"
if [[ ! -x $VENV/bin/python || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  log "installing $(grep -cv '^#' "$REQUIREMENTS") packages into ${VENV#"$REPO_DIR"/}"
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV" || die "cannot create $VENV (python3-venv missing?)"
  # Keep the venv out of git without touching the repository's .gitignore.
  [[ -f $VENV/.gitignore ]] || echo '*' >"$VENV/.gitignore"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" ||
    die "pip install -r ${REQUIREMENTS#"$REPO_DIR"/} failed"
  printf '%s' "$want" >"$stamp"
fi

# --- the binaries whose --check-config judges the rendered configs ------------------------
target="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
export IRON_PROXY_BIN="${IRON_PROXY_BIN:-$target/debug/iron-proxy}"
export IRON_CONTROL_BIN="${IRON_CONTROL_BIN:-$target/debug/iron-control}"
if [[ ${IRON_CHART_REBUILD:-0} == 1 || ! -x $IRON_PROXY_BIN || ! -x $IRON_CONTROL_BIN ]]; then
  log "building iron-proxy and iron-control (cargo build -p iron-proxy -p iron-control)"
  (cd "$REPO_DIR" && cargo build -q -p iron-proxy -p iron-control) || die "cargo build failed"
fi

# --- the tests ------------------------------------------------------------------------------
log "helm $("$VENV/bin/python" -c 'import helm_python as h; print(h.helm_sdk_version())') (helm-python-sdk), kubernetes-validate $("$VENV/bin/python" -c 'import kubernetes_validate as k; print(k.__version__)')"
export PYTHONDONTWRITEBYTECODE=1
# cloudcoil registers a pytest plugin for live clusters; it is not used here.
exec "$VENV/bin/python" -m pytest -p no:cloudcoil -p no:cacheprovider -q -rfE \
  "$CHART_DIR/ci/test_chart.py" "$@"
