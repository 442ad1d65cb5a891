#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target in fuzz/fuzz_targets/ (or those named in
# FUZZ_TARGETS) for SECONDS each, from its committed seeds (fuzz/seeds/TARGET/) and
# the corpus it grew before (fuzz/corpus/TARGET/, not committed), under a memory
# limit. Writes fuzz/stats.csv (target, seconds, executions, per second, result) and
# prints it; exits 1 when a target failed, naming the input libFuzzer kept.
#
#   scripts/fuzz.sh SECONDS [TARGET...]
set -euo pipefail

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "FUZZ_SECONDS=$seconds: expected a whole number of seconds, 1 or more" >&2
  exit 2
fi
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz needs the nightly toolchain (rustup toolchain install nightly); the product itself stays on stable" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for file in fuzz/fuzz_targets/*.rs; do
    targets+=("$(basename "$file" .rs)")
  done
fi
for target in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$target.rs" ]; then
    echo "FUZZ_TARGETS: no target $target (fuzz/fuzz_targets/ has: $(ls fuzz/fuzz_targets | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 2
  fi
done

mkdir -p fuzz/logs
# No sanitizer: the code is safe Rust, and what is sought (a panic, an abort, a hang,
# memory without bound) libFuzzer catches without one, at several times the speed.
fuzz=(cargo +nightly fuzz)
flags=(-O --sanitizer none)
jobs=$(nproc)
if ! "${fuzz[@]}" build "${flags[@]}" >fuzz/logs/build.log 2>&1; then
  tail -n 30 fuzz/logs/build.log >&2
  echo "fuzz: building the targets failed (fuzz/logs/build.log)" >&2
  exit 1
fi
stats=fuzz/stats.csv
echo "target,seconds,executions,per_second,result" > "$stats.part"
failed=()
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log="fuzz/logs/$target.log"
  echo "fuzz: $target for ${seconds}s (log: $log)" >&2
  # A memory limit per process and per allocation, a time limit per input, one
  # worker per core; the seeds are read but never written: new inputs go to the
  # corpus.
  if "${fuzz[@]}" run "${flags[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -fork="$jobs" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -timeout=10 >"$log" 2>&1; then
    result=ok
  else
    result="failed: $(ls -t "fuzz/artifacts/$target" 2>/dev/null | head -n 1)"
    failed+=("$target")
  fi
  # The fork mode's status lines start with the executions so far: `#N: cov: ...`.
  executions=$(grep -o '^#[0-9]*: cov' "$log" | tail -n 1 | tr -dc '0-9' || true)
  executions=${executions:-0}
  echo "$target,$seconds,$executions,$((executions / seconds)),$result" >> "$stats.part"
done
mv "$stats.part" "$stats"
column -s, -t < "$stats"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${failed[*]} failed; the input is in fuzz/artifacts/TARGET/ and the log in fuzz/logs/. Once fixed, copy the input to fuzz/regressions/TARGET/ (the stable replay test runs it)." >&2
  exit 1
fi
