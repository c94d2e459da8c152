#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: builds the release binaries, runs the iron-bench load harness
# (pinned, full length) and every criterion suite, and stores everything under
# benches/results/<version>/ (machine.md, harness.{json,md,txt}, criterion.txt).
#
#   benches/reproduce.sh            # ≈ 10 min on 2 cores, after the build
#   WAIT_IDLE=600 benches/reproduce.sh   # on a shared machine: wait for idle CPUs per run
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
out="benches/results/${version}"
mkdir -p "$out"

cargo build --release -p iron-proxy -p iron-bench

{
  echo "# Machine for the ${version} results"
  echo
  echo "Recorded by \`benches/reproduce.sh\` on $(date -u +%Y-%m-%d)."
  echo
  echo '```'
  uname -srm
  grep -m1 'model name' /proc/cpuinfo || true
  echo "logical CPUs: $(grep -c ^processor /proc/cpuinfo)"
  grep MemTotal /proc/meminfo
  rustc -V
  echo "revision: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo '```'
} > "$out/machine.md"

target/release/iron-bench --wait-idle "${WAIT_IDLE:-120}" \
  --json "$out/harness.json" --markdown "$out/harness.md" | tee "$out/harness.txt"

cargo bench -p iron-bench 2>&1 | grep -vE '^(Gnuplot|Benchmarking|Warning: Unable)' | tee "$out/criterion.txt"

echo "results in $out"
