#!/usr/bin/env bash
# Checks the Python SDK end to end (called by scripts/test):
#   1. .venv-sdk with maturin, pytest, mypy, openai, anthropic (created when missing);
#   2. the `iron` and `iron-mock` binaries the tests start (built when missing);
#   3. `maturin build --release`, then the wheel installed into a fresh venv of the oldest
#      Python >= 3.9 available, which must import it (the abi3 promise);
#   4. the same wheel installed into .venv-sdk; mypy --strict and stubtest on the package;
#   5. pytest (its summary is the last line printed).
# Exits non-zero if any step fails.
#
# Environment: IRON_BIN_DIR (default target/debug) — where iron and iron-mock are;
# SDK_PROFILE=debug — build a debug wheel (faster; default release);
# SDK_SKIP_WHEEL=1 — skip 3 and install with `maturin develop` instead.
# Extra arguments go to pytest (e.g. `sdk-py/test.sh -k local_proxy -x`).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv-sdk"
sdk="$root/sdk-py"
status=0

log() { printf '\n==> %s\n' "$*"; }
fail() { printf '!!! %s\n' "$*" >&2; status=1; }

# 1. The venv.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import maturin, pytest, mypy, openai, anthropic' 2>/dev/null; then
  log "creating $venv"
  python3 -m venv "$venv" || exit 1
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip || exit 1
  "$venv/bin/pip" install -q --disable-pip-version-check 'maturin>=1.9.4,<2' 'pytest>=8' 'mypy>=1.10' 'openai>=1.50' 'anthropic>=0.40' || exit 1
fi
py="$venv/bin/python"

# 2. The binaries the tests start.
bin_dir="${IRON_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
export IRON_BIN_DIR="$bin_dir"
if [ ! -x "$bin_dir/iron" ] || [ ! -x "$bin_dir/iron-mock" ]; then
  log "building iron and iron-mock"
  cargo build -p iron-cli -p iron-testkit --bins || exit 1
fi

# 3. The wheel, in a fresh venv.
if [ "${SDK_SKIP_WHEEL:-0}" = 1 ]; then
  log "maturin develop (into $venv)"
  VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop -q -m "$sdk/Cargo.toml" || exit 1
else
  profile_flag=(--release)
  [ "${SDK_PROFILE:-release}" = debug ] && profile_flag=()
  wheels=$(mktemp -d)
  fresh=$(mktemp -d)
  trap 'rm -rf "$wheels" "$fresh"' EXIT
  log "maturin build ${profile_flag[*]}"
  start=$(date +%s)
  "$venv/bin/maturin" build "${profile_flag[@]}" -q -m "$sdk/Cargo.toml" --out "$wheels" || exit 1
  wheel=$(ls "$wheels"/iron_sdk-*.whl)
  echo "built $(basename "$wheel") in $(($(date +%s) - start)) s"

  # The oldest interpreter >= 3.9 that works (pyenv shims of inactive versions do not).
  oldest=""
  for v in 3.9 3.10 3.11 3.12 3.13; do
    for cand in "python$v" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
      if "$cand" -c 'import venv, ensurepip' >/dev/null 2>&1; then oldest="$cand"; break 2; fi
    done
  done
  [ -n "$oldest" ] || oldest=python3
  log "fresh venv ($oldest): pip install the wheel, import iron_sdk"
  if "$oldest" -m venv "$fresh/venv" &&
     "$fresh/venv/bin/pip" install -q --disable-pip-version-check --no-index "$wheel" &&
     (cd "$fresh" && env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u IRON_API_KEY "$fresh/venv/bin/python" - <<'EOF'
import sys
import iron_sdk
from iron_sdk import BudgetConfig, redact, estimate_cost, LocalProxy, _iron_sdk
from importlib import resources
assert redact("mail a@b.io") == "mail [REDACTED:EMAIL]"
assert BudgetConfig(0.1).usd == "0.1"
assert estimate_cost("gpt-4o", 1000, 500) > 0
assert (resources.files("iron_sdk") / "py.typed").is_file()
assert (resources.files("iron_sdk") / "_iron_sdk.pyi").is_file()
p = LocalProxy({"openai": "sk-x"}, upstream_base_urls={"openai": "http://127.0.0.1:9"})
assert p.api_key.startswith("ic_") and p.running
p.stop()
import os
from iron_sdk import protect_agent, current_scope
with protect_agent(budget=1, local=True, provider_keys={"openai": "sk-x"},
                   upstream_base_urls={"openai": "http://127.0.0.1:9"}) as scope:
    assert os.environ["OPENAI_API_KEY"] == scope.api_key and current_scope() is scope
assert "OPENAI_API_KEY" not in os.environ
print(f"ok: iron_sdk {iron_sdk.__version__} on Python {sys.version.split()[0]} from {iron_sdk.__file__}")
EOF
     ); then :; else fail "the wheel does not install or import in a fresh venv"; fi

  log "installing the wheel into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel" || exit 1
  # A `maturin develop` build next to the sources would shadow nothing, but keep the tree clean.
  rm -f "$sdk"/python/iron_sdk/_iron_sdk*.so
fi

# 4. Types and stubs.
log "mypy --strict (package) and stubtest (native module vs _iron_sdk.pyi)"
(cd "$sdk" && "$py" -m mypy --no-error-summary) || fail "mypy"
(cd "$sdk" && "$py" -m mypy.stubtest iron_sdk._iron_sdk) || fail "stubtest"

# 5. pytest (last, so its summary line ends the output).
log "pytest"
(cd "$sdk" && "$py" -m pytest -p no:cacheprovider "$@") || status=1
exit $status
