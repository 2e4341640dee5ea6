#!/usr/bin/env bash
# Did a change make ssehub slower? Builds the release binary of BASE (a git ref, default HEAD~1)
# and of the working tree, then runs the same `ssehub bench` scenarios against both, interleaved
# (base, new, base, new, ...) in one run so that both see the same machine noise, and compares
# the medians. Three scenarios: "one" (one publisher in a closed loop, as fast as answered: the
# common case), "fast" (4 publishers, as fast as answered) and "paced" (100 events/s). Exits 1
# when the working tree is clearly slower:
#   - publish round trip p99 (one publisher) above 1.3x the base and more than 2 ms worse, or
#   - delivered events/s (fast mode) below 0.85x the base, or
#   - p99 latency (paced mode) above 1.3x the base and more than 5 ms worse, or
#   - idle memory per stream above 1.15x the base and more than 512 bytes worse.
# The thresholds sit above the run-to-run noise measured on the 2-core machines (BENCHMARKS.md).
#
# Usage: bench/regress.sh [BASE_REF] [ROUNDS]   (defaults: HEAD~1, 3)
# Environment: REGRESS_SUBSCRIBERS (default 2000), REGRESS_EVENTS (default 200).
# Loopback only; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REF=${1:-HEAD~1}
ROUNDS=${2:-3}
SUBSCRIBERS=${REGRESS_SUBSCRIBERS:-2000}
EVENTS=${REGRESS_EVENTS:-200}
KEY=regress-key

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  git worktree remove --force "$work/base-tree" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -Sn "$(ulimit -Hn)"

base_commit=$(git rev-parse --verify "$BASE_REF^{commit}")
echo "== building the base ($BASE_REF = ${base_commit:0:10}) and the working tree (release)" >&2
git worktree add --detach --quiet "$work/base-tree" "$base_commit"
# One target directory for both: the dependencies are built once.
CARGO_TARGET_DIR="$PWD/target" cargo build --release --quiet --manifest-path "$work/base-tree/Cargo.toml"
cp target/release/ssehub "$work/ssehub-base"
# The same package in the same target directory: cargo would take the base's binary as fresh for
# the working tree (its recorded sources, the base tree's, are older than the binary). Only the
# ssehub crate itself is rebuilt.
cargo clean --release --quiet -p ssehub
cargo build --release --quiet
if cmp -s target/release/ssehub "$work/ssehub-base"; then
  echo "the working tree's binary is the base's: nothing to compare" >&2
  exit 2
fi
cp target/release/ssehub "$work/ssehub-new"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run_one BIN NAME ROUND SCENARIO: one hub, one bench run, JSON into $work/NAME-SCENARIO-ROUND.json
run_one() {
  local bin=$1 name=$2 round=$3 scenario=$4 port pid rate publishers
  case $scenario in
    one) rate=0; publishers=1 ;;
    fast) rate=0; publishers=4 ;;
    paced) rate=100; publishers=1 ;;
  esac
  port=$(free_port)
  "$bin" serve --addr "127.0.0.1:$port" --jwt-key "$KEY" --anonymous --history memory \
    >"$work/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do grep -q listening "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
  # The load generator is the same binary (the new one) for both hubs.
  "$work/ssehub-new" bench --url "http://127.0.0.1:$port/.well-known/mercure" --jwt-key "$KEY" \
    --subscribers "$SUBSCRIBERS" --events "$EVENTS" --rate "$rate" --publishers "$publishers" \
    --server-pid "$pid" --timeout 60s --json >"$work/$name-$scenario-$round.json" 2>/dev/null
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for round in $(seq "$ROUNDS"); do
  for scenario in one fast paced; do
    echo "== round $round/$ROUNDS, $scenario: base, then new" >&2
    run_one "$work/ssehub-base" base "$round" "$scenario"
    run_one "$work/ssehub-new" new "$round" "$scenario"
  done
done

python3 - "$work" "$ROUNDS" "$BASE_REF" <<'EOF'
import json, statistics, sys
work, rounds, base_ref = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def runs(name, scenario):
    return [json.load(open(f"{work}/{name}-{scenario}-{r}.json")) for r in range(1, rounds + 1)]

def median(values):
    return statistics.median(values)

rows, failures = [], []
for name in ("base", "new"):
    for run in runs(name, "one") + runs(name, "fast") + runs(name, "paced"):
        if run["lost"] or run["publish_failed"]:
            failures.append(f"{name}: lost {run['lost']}, failed publishes {run['publish_failed']}")

figures = {}
for name in ("base", "new"):
    one, fast, paced = runs(name, "one"), runs(name, "fast"), runs(name, "paced")
    figures[name] = {
        "one publisher: round trip p99 ms": median(r["publish_latency_ms"]["p99"] for r in one),
        "one publisher: round trip p50 ms": median(r["publish_latency_ms"]["p50"] for r in one),
        "one publisher: events/s": median(r["delivered_per_second"] for r in one),
        "one publisher: p99 ms": median(r["latency_ms"]["p99"] for r in one),
        "fast events/s": median(r["delivered_per_second"] for r in fast),
        "fast p99 ms": median(r["latency_ms"]["p99"] for r in fast),
        "paced p99 ms": median(r["latency_ms"]["p99"] for r in paced),
        "paced p50 ms": median(r["latency_ms"]["p50"] for r in paced),
        "idle bytes/stream": median(
            r["server"]["idle_bytes_per_connection"] for r in one + fast + paced),
    }
base, new = figures["base"], figures["new"]
print(f"| figure (median of {rounds}) | base {base_ref} | working tree | new / base |")
print("|---|---|---|---|")
for key in base:
    ratio = new[key] / base[key] if base[key] else float("nan")
    print(f"| {key} | {base[key]:,.1f} | {new[key]:,.1f} | {ratio:.2f} |")

rtt = "one publisher: round trip p99 ms"
if new[rtt] > 1.3 * base[rtt] and new[rtt] - base[rtt] > 2:
    failures.append("the publish round trip p99 (one publisher) rose above 1.3x the base")
if new["fast events/s"] < 0.85 * base["fast events/s"]:
    failures.append("delivered events/s fell below 0.85x the base")
if new["paced p99 ms"] > 1.3 * base["paced p99 ms"] and new["paced p99 ms"] - base["paced p99 ms"] > 5:
    failures.append("paced p99 latency rose above 1.3x the base")
if (new["idle bytes/stream"] > 1.15 * base["idle bytes/stream"]
        and new["idle bytes/stream"] - base["idle bytes/stream"] > 512):
    failures.append("idle memory per stream rose above 1.15x the base")
if failures:
    print("\nSLOWER: " + "; ".join(failures))
    sys.exit(1)
print("\nno regression beyond the thresholds")
EOF
