#!/usr/bin/env bash
# The trade-off of one publisher in a closed loop, measured beside Nchan in one run: at each
# pacing budget (`--max-queued-bytes`), how many deliveries per second ssehub reaches, against
# how late they arrive and how long a publish waits for its answer. Issue 13 asks for three
# things of the same run (10,000 subscribers, one publisher, fast): at least 10x Nchan's
# deliveries/s, a delivery p99 no worse than Nchan's, and a publish round trip p99 of 2 ms
# (memory) or 10 ms (durable). This script measures where each budget lands.
#
# Runs, each against a freshly started server, SUBS (default 10,000) subscribers, 200 events of
# 100 bytes, one publisher:
#   - ssehub `--history memory` at each budget of BUDGETS (MiB; default "4 8 16 24 32 48 64";
#     32 is the default), and "none" (2^40 bytes) unless NO_UNBOUNDED=1;
#   - ssehub with its default durable history (budget 32 MiB);
#   - Nchan (bench/servers.sh);
#   - and, as the floor of a pass over every socket, ssehub and Nchan at light load: 20 events
#     at 1 event/s (one event per write).
# ROUNDS (default 3) rounds; each round runs every configuration once, in an order rotated from
# round to round, so that drift on the machine spreads over all of them. Prints a Markdown table
# of medians, with the ratios to Nchan's medians of the same run, then each round's p99s.
# SERVER_CPUS and BENCH_CPUS (`taskset -c` lists, e.g. 1 and 0) pin the servers and the load
# generator to cores of their own: each server then has one core, and the load generator's
# reading no longer takes the server's CPU (as with clients on other machines).
# Loopback only; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SUBS=${SUBS:-10000}
BUDGETS=${BUDGETS:-4 8 16 24 32 48 64}
# shellcheck source=bench/servers.sh
. bench/servers.sh

configs=()
for b in $BUDGETS; do configs+=("memory-$b"); done
[ "${NO_UNBOUNDED:-0}" = 1 ] || configs+=("memory-none")
configs+=(durable nchan light-ssehub light-nchan)

# run CONFIG ROUND -> $work/CONFIG-rROUND.json
run() {
  local config=$1 round=$2 rate=0 events=200
  case $config in
    memory-none) start_ssehub --history memory --max-queued-bytes $((1 << 40)) ;;
    memory-*) start_ssehub --history memory --max-queued-bytes $((${config#memory-} << 20)) ;;
    durable) start_ssehub-durable ;;
    nchan) start_nchan ;;
    light-ssehub) start_ssehub; rate=1; events=20 ;;
    light-nchan) start_nchan; rate=1; events=20 ;;
  esac
  sleep 1
  ${BENCH_CPUS:+taskset -c "$BENCH_CPUS"} $BIN bench "${EXTRA[@]}" --subscribers "$SUBS" --events "$events" --rate "$rate" \
    --payload-bytes 100 --publishers 1 --server-pid "$SERVER_PID" --timeout 60s --json \
    >"$work/$config-r$round.json" 2>"$work/bench.err" ||
    { echo "bench failed ($config, round $round):" >&2; tail -5 "$work/bench.err" >&2; }
  stop_all
}

n=${#configs[@]}
for round in $(seq "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    config=${configs[$(((i + round - 1) % n))]}
    echo "== round $round/$ROUNDS: $config" >&2
    run "$config" "$round"
  done
done

python3 - "$work" "$ROUNDS" "$SUBS" "${configs[@]}" <<'PY'
import json, statistics, sys
work, rounds, subs, configs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

def runs(config):
    out = []
    for r in range(1, rounds + 1):
        try:
            out.append(json.load(open(f"{work}/{config}-r{r}.json")))
        except (OSError, ValueError):
            pass
    return out

def med(values):
    return statistics.median(values) if values else float("nan")

def figures(config):
    rs = runs(config)
    cpu = [((r.get("server") or {}).get("publish_phase_cpu_seconds") or 0) * 1e6 / max(r["delivered"], 1) for r in rs]
    return {
        "runs": len(rs),
        "complete": all(r["delivered"] == r["expected"] for r in rs),
        "rate": med([r["delivered_per_second"] for r in rs]),
        "p50": med([r["latency_ms"]["p50"] for r in rs]),
        "p99": med([r["latency_ms"]["p99"] for r in rs]),
        "p99s": [r["latency_ms"]["p99"] for r in rs],
        "rtt50": med([r["publish_latency_ms"]["p50"] for r in rs]),
        "rtt99": med([r["publish_latency_ms"]["p99"] for r in rs]),
        "rttmax": med([r["publish_latency_ms"]["max"] for r in rs]),
        "cpu": med(cpu),
    }

f = {c: figures(c) for c in configs}
label = {
    "durable": "ssehub, durable history (default), budget 32 MiB",
    "nchan": "Nchan",
    "light-ssehub": "light load (1 event/s): ssehub",
    "light-nchan": "light load (1 event/s): Nchan",
    "memory-none": "ssehub memory, no budget",
}
import os
pinned = os.environ.get("SERVER_CPUS")
if pinned:
    print(f"Servers on core(s) {pinned}, the load generator on {os.environ.get('BENCH_CPUS', 'any')}.")
print(f"{subs:,} subscribers, one publisher in a closed loop, 200 events of 100 B (light load: 20 at 1/s); medians of {rounds} rounds")
print()
print("| run | deliveries/s | x Nchan | delivery p50 / p99 ms | p99 / Nchan's | publish round trip p50 / p99 / max ms | server CPU µs/delivery |")
print("|---|---|---|---|---|---|---|")
for c in configs:
    x = f[c]
    ref = f["light-nchan"] if c.startswith("light") else f["nchan"]
    name = label[c] if c in label else f"ssehub memory, budget {c.split('-')[1]} MiB"
    if not x["complete"]:
        name += " (some events not delivered)"
    print(f"| {name} | {x['rate']:,.0f} | {x['rate'] / ref['rate']:.1f} | {x['p50']:.0f} / {x['p99']:.0f} | {x['p99'] / ref['p99']:.2f} "
          f"| {x['rtt50']:.2f} / {x['rtt99']:.2f} / {x['rttmax']:.1f} | {x['cpu']:.2f} |")
print()
print("Each round's delivery p99 (ms): " + "; ".join(f"{c} " + ", ".join(f"{p:.0f}" for p in f[c]["p99s"]) for c in configs))
PY
