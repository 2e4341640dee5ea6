#!/usr/bin/env bash
# ssehub beside Nchan (nginx + nchan_module), the same `ssehub bench` scenarios against both in one
# run. The common case first: ONE publisher in a closed loop (it sends the next event when the
# previous one is answered), fast, at 1,000, 5,000, 10,000 and 19,000 subscribers; then 16
# publishers at 10,000; light load (1 event/s) at 1,000 and 10,000; 4 KB payloads at 1,000.
# 100-byte payloads unless said. ssehub runs with `--history memory` like Nchan's in-memory
# buffer, and the one-publisher scenarios at 10,000 also run it with its default durable
# history ("ssehub-durable"). Each run gets a freshly started server, so its RSS figures start
# from a fresh process. Prints a Markdown table to stdout.
#
# Nchan runs in Debian's nginx (`nginx`, `libnginx-mod-nchan`, installed with apt-get when
# missing) with a config of its own in a temporary directory: `worker_processes 1`, one channel
# per URL (`/sub/<id>` EventSource subscriber, `/pub/<id>` publisher), a message buffer like
# ssehub's in-memory history, new subscribers start at the next message. ssehub runs as
# `serve --history memory --jwt-key k --anonymous`. `--server-pid` is the nginx worker for Nchan.
# Both servers log as they do by default (ssehub two info lines per stream, nginx its access log).
# Loopback only; every process started here is stopped by its PID.
#
# Usage: bench/compare.sh [--skip-10k | --smoke]   (--smoke: 50 subscribers, 20 events, to try it)
# ONLY="SUBS EVENTS RATE PAYLOAD PUBLISHERS" runs only the scenarios starting with that text
# (e.g. ONLY="10000 200 0 100 1" for 10,000 subscribers, fast, one publisher).
# ROUNDS=N (default 3): every scenario runs N times on both servers, alternating which goes first;
# the table gives the median of the rounds (and the worst delivery count).
# With COMPARE_JSON_DIR=DIR, every run's `ssehub bench --json` report is also copied to DIR
# (SERVER-SUBSCRIBERS-EVENTS-RATE-PAYLOAD-PUBLISHERS-rROUND.json) and the plots are drawn into
# COMPARE_PLOTS_DIR (default docs, or COMPARE_JSON_DIR for a partial run with ONLY) with
# `bench/compare_report.py plots` (matplotlib, installed from apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
ROUNDS=${ROUNDS:-3}
# shellcheck source=bench/servers.sh
. bench/servers.sh

# run SERVER SUBS EVENTS RATE PAYLOAD PUBLISHERS ROUND
#   -> writes $work/SERVER-SUBS-EVENTS-RATE-PAYLOAD-PUBLISHERS-rROUND.json
run() {
  local server=$1 subs=$2 events=$3 rate=$4 payload=$5 publishers=$6 round=$7
  "start_$server"
  local out="$work/$server-$subs-$events-$rate-$payload-$publishers-r$round.json"
  sleep 1
  $BIN bench "${EXTRA[@]}" --subscribers "$subs" --events "$events" --rate "$rate" \
    --payload-bytes "$payload" --publishers "$publishers" --server-pid "$SERVER_PID" \
    --timeout 60s --json \
    >"$out" 2>"$work/bench.err" || { echo "bench failed ($server $subs $rate $payload $publishers):" >&2; tail -5 "$work/bench.err" >&2; }
  stop_all
}

# subscribers events rate payload publishers label
scenarios=(
  "1000 200 0 100 1 fast, 1 publisher"
  "1000 200 0 4000 1 fast, 1 publisher"
  "1000 20 1 100 1 paced 1 event/s"
)
if [ "$MODE" = --smoke ]; then
  scenarios=("50 20 0 100 1 smoke")
elif [ "$MODE" != --skip-10k ]; then
  scenarios+=(
    "5000 200 0 100 1 fast, 1 publisher"
    "10000 200 0 100 1 fast, 1 publisher"
    "10000 400 0 100 16 fast, 16 publishers"
    "10000 20 1 100 1 paced 1 event/s"
    "19000 200 0 100 1 fast, 1 publisher"
  )
fi

if [ -n "${ONLY:-}" ]; then
  kept=()
  for s in "${scenarios[@]}"; do [[ $s == "$ONLY"* ]] && kept+=("$s"); done
  scenarios=("${kept[@]}")
fi

i=0
for round in $(seq "$ROUNDS"); do
  for s in "${scenarios[@]}"; do
    read -r subs events rate payload publishers _ <<<"$s"
    # Alternate which server goes first, so drift on the machine spreads over both.
    if [ $((i % 2)) = 0 ]; then order="ssehub nchan"; else order="nchan ssehub"; fi
    # The durable default beside them, where the issue of one publisher is sharpest.
    if [ "$subs" = 10000 ] && [ "$rate" = 0 ] && [ "$publishers" = 1 ]; then
      order="$order ssehub-durable"
    fi
    echo "== round $round/$ROUNDS: $s ($order)" >&2
    for server in $order; do
      run "$server" "$subs" "$events" "$rate" "$payload" "$publishers" "$round"
    done
    i=$((i + 1))
  done
done

if [ -n "${COMPARE_JSON_DIR:-}" ]; then
  mkdir -p "$COMPARE_JSON_DIR"
  cp "$work"/*.json "$COMPARE_JSON_DIR"/
  # The plots, with a python3 that has matplotlib (Debian's, installed if need be).
  plotter=""
  for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import matplotlib' 2>/dev/null; then plotter=$candidate; break; fi
  done
  if [ -z "$plotter" ]; then
    apt-get install -y -qq python3-matplotlib >&2
    plotter=/usr/bin/python3
  fi
  # A partial run (ONLY) does not redraw the plots the docs show, unless told where to.
  plots_dir=${COMPARE_PLOTS_DIR:-docs}
  [ -n "${ONLY:-}" ] && plots_dir=${COMPARE_PLOTS_DIR:-$COMPARE_JSON_DIR}
  "$plotter" bench/compare_report.py plots "$COMPARE_JSON_DIR" "$plots_dir"
fi

python3 bench/compare_report.py table "$work" "$ROUNDS" "${scenarios[@]}"
