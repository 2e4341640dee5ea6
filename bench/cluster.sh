#!/usr/bin/env bash
# Cross-instance delivery over Redis, measured with `ssehub bench`:
#   A. one instance, no Redis (the baseline);
#   B. one instance with --history redis (publish and subscribe on it);
#   C. three instances with Redis: subscribers on instance 2, publishes to instance 1
#      (every event crosses Redis);
#   D. three instances, three topics, three benches at once: subscribers on one instance, publishes
#      to another, all three pairs together (aggregate throughput).
# Each scenario runs paced (--rate, latency without queueing) and fast (--rate 0, throughput).
# Loopback only; every process started here is stopped by its PID.
# Usage: bench/cluster.sh [SUBSCRIBERS] [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${1:-1000}
EVENTS=${2:-200}
KEY=bench-cluster-key
BIN=./target/release/ssehub
cargo build --release --quiet
command -v redis-server >/dev/null || apt-get install -y -qq redis-server
ulimit -Sn "$(ulimit -Hn)"

work=$(mktemp -d)
# Every process started here writes its PID into $work/pids: the helpers below run inside
# command substitutions (subshells), so a shell array would not see their PIDs.
touch "$work/pids"
stop_all() {
  while read -r p; do kill "$p" 2>/dev/null || true; done < "$work/pids"
  : > "$work/pids"
  sleep 0.5
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_redis() {
  local port; port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  echo $! >> "$work/pids"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "redis://127.0.0.1:$port/0"
}

# start_hub NAME [extra args...] -> prints the hub URL
start_hub() {
  local name=$1; shift
  local port; port=$(free_port)
  $BIN serve --addr "127.0.0.1:$port" --jwt-key "$KEY" --anonymous --history memory "$@" \
    >"$work/$name.log" 2>&1 &
  echo $! >> "$work/pids"
  echo $! > "$work/$name.pid"
  for _ in $(seq 100); do grep -q "listening" "$work/$name.log" 2>/dev/null && break; sleep 0.1; done
  echo "http://127.0.0.1:$port/.well-known/mercure"
}


# run LABEL MODE SUB_URL PUB_URL TOPIC PID
run() {
  local label=$1 mode=$2 sub=$3 pub=$4 topic=$5 pid=$6
  local rate=0; [ "$mode" = paced ] && rate=100
  $BIN bench --url "$sub" --publish-url "$pub" --topic "$topic" --jwt-key "$KEY" \
    --subscribers "$SUBS" --events "$EVENTS" --rate "$rate" --server-pid "$pid" --json \
    > "$work/$label-$mode.json" 2>/dev/null
  python3 - "$label" "$mode" "$work/$label-$mode.json" <<'PY'
import json, sys
label, mode, path = sys.argv[1:]
r = json.load(open(path))
lat = r.get("latency_ms") or {}
print(f"| {label} | {mode} | {r['delivered']}/{r['expected']} | {r['delivered_per_second']:.0f} | "
      f"{lat.get('p50', 0):.1f} | {lat.get('p99', 0):.1f} | {lat.get('max', 0):.1f} |")
PY
}

echo "$SUBS subscribers, $EVENTS events of 100 bytes; paced = 100 events/s; latencies in ms"
echo
echo "| setup | mode | delivered | delivered events/s | p50 | p99 | max |"
echo "|---|---|---|---|---|---|---|"
for mode in paced fast; do
  url=$(start_hub solo); run "A. 1 instance, no Redis" "$mode" "$url" "$url" bench "$(cat "$work/solo.pid")"; stop_all

  redis=$(start_redis)
  url=$(start_hub one --history redis --redis-url "$redis"); run "B. 1 instance + Redis" "$mode" "$url" "$url" bench "$(cat "$work/one.pid")"; stop_all

  redis=$(start_redis)
  u1=$(start_hub i1 --history redis --redis-url "$redis"); u2=$(start_hub i2 --history redis --redis-url "$redis"); u3=$(start_hub i3 --history redis --redis-url "$redis")
  run "C. 3 instances, publish on 1, subscribe on 2" "$mode" "$u2" "$u1" bench "$(cat "$work/i2.pid")"
  stop_all
done

redis=$(start_redis)
u1=$(start_hub i1 --history redis --redis-url "$redis"); u2=$(start_hub i2 --history redis --redis-url "$redis"); u3=$(start_hub i3 --history redis --redis-url "$redis")
echo
echo "D. three benches at once (subscribers on one instance, publishes to the next), fast mode:"
echo
echo "| pair | mode | delivered | delivered events/s | p50 | p99 | max |"
echo "|---|---|---|---|---|---|---|"
run "subs on 1, pub to 2" fast "$u1" "$u2" t1 "$(cat "$work/i1.pid")" &
b1=$!
run "subs on 2, pub to 3" fast "$u2" "$u3" t2 "$(cat "$work/i2.pid")" &
b2=$!
run "subs on 3, pub to 1" fast "$u3" "$u1" t3 "$(cat "$work/i3.pid")" &
b3=$!
wait $b1 $b2 $b3
