#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: builds the release binaries, runs the iron-bench load harness
# (pinned, full length) and every criterion suite of the workspace, and stores everything under
# benches/results/<version>/ (machine.md, harness.{json,md,txt}, criterion.txt).
#
#   benches/reproduce.sh                     # both parts, ≈ 15 min on 2 cores after the build
#   benches/reproduce.sh --harness-only      # the load harness alone (≈ 5 min)
#   benches/reproduce.sh --criterion-only    # the criterion suites alone (≈ 10 min)
#   WAIT_IDLE=600 benches/reproduce.sh       # before each harness run and each suite, wait up
#                                            # to 600 s (default 120) for idle CPUs
#
# Criterion suites, one section each in criterion.txt, run one after the other pinned to CPU 1
# (`taskset -c 1`, when available), as the harness pins its load generator:
#   iron-bench  sse, token, request      (benches/benches/)
#   iron-core   pii, meter               (core/benches/)
#   iron-proxy  ledger, guard            (proxy/benches/)
set -euo pipefail

run_harness=1
run_criterion=1
for arg in "$@"; do
  case "$arg" in
    --harness-only) run_criterion=0 ;;
    --criterion-only) run_harness=0 ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "reproduce.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done
if ((!run_harness && !run_criterion)); then
  echo "reproduce.sh: --harness-only and --criterion-only exclude each other" >&2
  exit 2
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
out="benches/results/${version}"
mkdir -p "$out"
wait_idle="${WAIT_IDLE:-120}"

# crate → its criterion suites, in the order they run.
suites=(
  "iron-bench:sse token request"
  "iron-core:pii meter"
  "iron-proxy:ledger guard"
)

pin=()
pinned="not pinned (taskset unavailable or fewer than 2 CPUs)"
if command -v taskset >/dev/null && taskset -c 1 true 2>/dev/null; then
  pin=(taskset -c 1)
  pinned="pinned to CPU 1 (taskset -c 1)"
fi

# Waits up to $wait_idle seconds until the other processes use < 10% of one core over 1 s
# (the harness's own --wait-idle rule); measures anyway after that, and says so in $idle_note
# (recorded with the suite's output).
idle_note=""
wait_for_idle() {
  local deadline=$((SECONDS + wait_idle)) tck a b busy
  idle_note=""
  tck="$(getconf CLK_TCK)"
  busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
  while :; do
    a="$(busy_jiffies)"
    sleep 1
    b="$(busy_jiffies)"
    busy=$((b - a))
    if ((busy * 10 < tck)); then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      idle_note="WARNING: other processes used $((busy * 100 / tck))% of a core when this suite started (waited ${wait_idle} s): figures disturbed"
      echo "reproduce.sh: $idle_note" >&2
      return 0
    fi
  done
}

parts=()
((run_harness)) && parts+=("load harness")
((run_criterion)) && parts+=("criterion (${pinned})")
{
  echo "# Machine for the ${version} results"
  echo
  echo "Recorded by \`benches/reproduce.sh\` on $(date -u +%Y-%m-%d): ${parts[0]}${parts[1]:+, ${parts[1]}}."
  echo
  echo '```'
  uname -srm
  grep -m1 'model name' /proc/cpuinfo || true
  echo "logical CPUs: $(grep -c ^processor /proc/cpuinfo)"
  grep MemTotal /proc/meminfo
  rustc -V
  echo "revision: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo '```'
} >"$out/machine.md"

if ((run_harness)); then
  cargo build --release -p iron-proxy -p iron-bench
  # The harness pins itself (proxy on CPU 0, generator + mock on CPU 1) and exits 1 on any
  # failed request: with `set -o pipefail` that stops this script too.
  target/release/iron-bench --wait-idle "$wait_idle" \
    --json "$out/harness.json" --markdown "$out/harness.md" | tee "$out/harness.txt"
fi

if ((run_criterion)); then
  # Build every suite first, so the timed runs do not share the CPUs with the compiler.
  for entry in "${suites[@]}"; do
    crate="${entry%%:*}"
    args=()
    for b in ${entry#*:}; do args+=(--bench "$b"); done
    cargo bench --no-run -p "$crate" "${args[@]}"
  done
  : >"$out/criterion.txt"
  for entry in "${suites[@]}"; do
    crate="${entry%%:*}"
    for b in ${entry#*:}; do
      wait_for_idle
      {
        echo "=== ${crate} --bench ${b} (${pinned}, $(date -u +%H:%M:%SZ))"
        if [[ -n "$idle_note" ]]; then echo "$idle_note"; fi
        echo
      } | tee -a "$out/criterion.txt"
      "${pin[@]}" cargo bench -p "$crate" --bench "$b" 2>&1 |
        grep -vE '^(Gnuplot|Benchmarking|Warning: Unable)' | tee -a "$out/criterion.txt"
      echo | tee -a "$out/criterion.txt"
    done
  done
fi

echo "results in $out"
