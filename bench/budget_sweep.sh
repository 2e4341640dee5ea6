#!/usr/bin/env bash
# The fan-out's trade-offs, side by side in one run: one publisher in a closed loop, 10,000
# subscribers, 200 events of 100 bytes, against a fresh `ssehub serve` each time:
# --max-queued-bytes at 4, 8, 16 and 32 (the default) MiB and without a budget; the durable
# default; 16 publishers; the hub alone on one core (`taskset -c 1`, the load generator on
# core 0), with one and 16 publishers. ROUNDS (default 2) rounds. Prints a Markdown table.
# Loopback only; every process started here is stopped by its PID.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
ulimit -Sn "$(ulimit -Hn)"
BIN=./target/release/ssehub
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() { # label history-flags serve-cpus bench-cpus extra-serve... -- extra-bench...
  local label=$1 hist=$2 scpu=$3 bcpu=$4; shift 4
  local serve=() bench=(); while [ $# -gt 0 ] && [ "$1" != -- ]; do serve+=("$1"); shift; done; shift || true; bench=("$@")
  local port; port=$(free_port)
  local H=(--history memory); [ "$hist" = durable ] && { rm -rf "$work/data"; H=(--data-dir "$work/data"); }
  taskset -c "$scpu" $BIN serve --addr "127.0.0.1:$port" --jwt-key k --anonymous "${H[@]}" "${serve[@]}" >"$work/hub.log" 2>&1 & local HP=$!
  for _ in $(seq 100); do grep -q listening "$work/hub.log" 2>/dev/null && break; sleep 0.1; done
  taskset -c "$bcpu" $BIN bench --url "http://127.0.0.1:$port/.well-known/mercure" --jwt-key k --subscribers 10000 --events 200 --payload-bytes 100 --server-pid $HP --json "${bench[@]}" > "$work/run.json" 2>/dev/null
  kill $HP; wait $HP 2>/dev/null
  python3 - "$label" "$work/run.json" <<'PY'
import json,sys
r=json.load(open(sys.argv[2])); s=r.get("server") or {}
cpu=s.get("publish_phase_cpu_seconds") or 0
print(f"| {sys.argv[1]} | {r['delivered']:,}/{r['expected']:,} | {r['delivered_per_second']:,.0f} | {r['publish_latency_ms']['p50']:.2f} / {r['publish_latency_ms']['p99']:.2f} / {r['publish_latency_ms']['max']:.1f} | {r['latency_ms']['p50']:.0f} / {r['latency_ms']['p99']:.0f} | {cpu*1e6/max(r['delivered'],1):.2f} |")
PY
}
echo "| run | delivered | events/s | publish round trip p50 / p99 / max ms | delivery p50 / p99 ms | server CPU µs/delivery |"
echo "|---|---|---|---|---|---|"
for round in $(seq "${ROUNDS:-2}"); do
for b in 4 8 16 32; do run "memory, budget ${b} MiB, r$round" memory 0-1 0-1 --max-queued-bytes $((b<<20)); done
run "memory, no budget (2^40), r$round" memory 0-1 0-1 --max-queued-bytes $((1<<40))
run "durable (default), budget 32 MiB, r$round" durable 0-1 0-1
run "memory, 16 publishers, r$round" memory 0-1 0-1 -- --publishers 16 --events 400
run "hub on 1 core (taskset 1), bench on the other, r$round" memory 1 0
run "hub on 1 core, 16 publishers, r$round" memory 1 0 -- --publishers 16 --events 400
done
