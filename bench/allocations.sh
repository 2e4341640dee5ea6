#!/usr/bin/env bash
# Does tracing that is off allocate on the event path? Runs tests/allocations.rs (heap
# allocations per published-and-delivered event, counted by a global allocator) in two builds:
# without the `otel` feature (no tracing code at all) and with it (tracing compiled in, off at
# run time, the default of `ssehub serve` without an OTLP endpoint). Exits 1 unless both count
# the same allocations per event.
#
# Usage: bench/allocations.sh   (two test builds: a few minutes the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

count() {
  cargo test --locked --quiet "$@" --test allocations -- --nocapture 2>&1 \
    | sed -n 's/^allocations per event: //p'
}
without=$(count --no-default-features)
with=$(count --no-default-features --features otel)
echo "without the otel feature:        $without"
echo "with it, tracing off (no OTLP):  $with"
if [ -z "$without" ] || [ "$without" != "$with" ]; then
  echo "FAIL: tracing that is off changes the allocations per event" >&2
  exit 1
fi
echo "ok: the same allocations per event"
