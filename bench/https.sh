#!/usr/bin/env bash
# The cost of TLS per delivered event, measured with `ssehub bench`: one hub (in-memory
# history) plain, with TLS (subscriptions on HTTP/1.1, one connection each), and with TLS and
# HTTP/2 (subscriptions sharing connections, H2_STREAMS per connection); each fast (--rate 0)
# and paced (--rate 100), RUNS times against a hub started fresh for each run. Prints one JSON
# report per line, prefixed by "MODE RATE"; bench/https_table.py turns them into the table.
# Also plain-h2: HTTP/2 with prior knowledge (h2c), to tell HTTP/2's cost from TLS's.
# The certificate is a self-signed P-256 one for localhost, made with openssl, marked
# CA:FALSE: openssl's default CA:TRUE makes rustls (webpki) refuse it as a server certificate
# (CaUsedAsEndEntity) even when it is the trusted root. Loopback only; every process started
# here is stopped by its PID.
# Usage: bench/https.sh [SUBSCRIBERS] [EVENTS] [RUNS] [H2_STREAMS]
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${1:-1000}
EVENTS=${2:-200}
RUNS=${3:-3}
H2_STREAMS=${4:-100}
KEY=bench-https-key
BIN=./target/release/ssehub
cargo build --release --quiet
ulimit -Sn "$(ulimit -Hn)"

work=$(mktemp -d)
hub_pid=""
stop_hub() {
  if [ -n "$hub_pid" ]; then
    kill "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
    hub_pid=""
  fi
}
cleanup() { stop_hub; rm -rf "$work"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" \
  -out "$work/cert.pem" -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -addext basicConstraints=critical,CA:FALSE 2>/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_hub PORT [extra args...]: sets hub_pid.
start_hub() {
  local port=$1; shift
  $BIN serve --addr "127.0.0.1:$port" --jwt-key "$KEY" --anonymous --history memory "$@" \
    >"$work/hub.log" 2>&1 &
  hub_pid=$!
  for _ in $(seq 100); do grep -q "listening" "$work/hub.log" 2>/dev/null && break; sleep 0.1; done
}

for mode in plain plain-h2 tls tls-h2; do
  for rate in 0 100; do
    for _ in $(seq "$RUNS"); do
      port=$(free_port)
      extra=()
      case $mode in
        plain|plain-h2)
          start_hub "$port"
          url="http://127.0.0.1:$port/.well-known/mercure"
          [ "$mode" = plain-h2 ] && extra=(--http2 "$H2_STREAMS") ;;
        tls|tls-h2)
          start_hub "$port" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
          url="https://localhost:$port/.well-known/mercure"
          extra=(--ca-cert "$work/cert.pem")
          [ "$mode" = tls-h2 ] && extra+=(--http2 "$H2_STREAMS") ;;
      esac
      echo -n "$mode $rate "
      $BIN bench --url "$url" --jwt-key "$KEY" --subscribers "$SUBS" --events "$EVENTS" \
        --rate "$rate" --server-pid "$hub_pid" --json "${extra[@]}"
      stop_hub
    done
  done
done
