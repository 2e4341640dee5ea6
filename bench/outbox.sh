#!/usr/bin/env bash
# End-to-end throughput of the outbox relay (`serve --outbox`): rows inserted into a PostgreSQL
# outbox table → received by an SSE subscriber (`ssehub subscribe --count`), in rows/s, from
# the first INSERT to the last event received.
#   A. all ROWS in one transaction (a bulk job);
#   B. ROWS in transactions of TX_ROWS rows each, committed one after the other (psql in
#      autocommit, one INSERT … SELECT generate_series per transaction).
# The table is made from deploy/postgres/outbox.sql under a unique name and dropped at the end.
# Loopback only; every process started here is stopped by its PID.
# Usage: bench/outbox.sh [ROWS] [TX_ROWS] [POSTGRES_URL]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-20000}
TX_ROWS=${2:-10}
PG=${3:-postgres://postgres@127.0.0.1:5432/test}
KEY=bench-outbox-key-of-at-least-32-bytes
# SSEHUB_BIN: a binary already built (then nothing is built here).
BIN=${SSEHUB_BIN:-./target/release/ssehub}
[ -n "${SSEHUB_BIN:-}" ] || cargo build --release --quiet --bin ssehub

work=$(mktemp -d)
TABLE=ssehub_outbox_bench_$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  psql -q "$PG" -c "DROP TABLE IF EXISTS $TABLE; DROP FUNCTION IF EXISTS ${TABLE}_notify();" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

sed "s/ssehub_outbox/$TABLE/g" deploy/postgres/outbox.sql | psql -q -v ON_ERROR_STOP=1 "$PG" >/dev/null

run() { # name, sql file
  local name=$1 sql=$2 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$work/data"
  RUST_LOG=warn "$BIN" serve --addr "127.0.0.1:$port" --jwt-key "$KEY" --anonymous \
    --data-dir "$work/data" --outbox "$PG" --outbox-table "$TABLE" 2>"$work/hub.log" &
  local hub=$!; pids+=("$hub")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  "$BIN" subscribe --url "http://127.0.0.1:$port/.well-known/mercure" --topic bench \
    --count "$ROWS" >/dev/null &
  local sub=$!; pids+=("$sub")
  sleep 1 # the subscriber connects (a bench script; the tests await conditions)
  local start end
  start=$(date +%s.%N)
  psql -q -v ON_ERROR_STOP=1 "$PG" -f "$sql" >/dev/null
  local inserted; inserted=$(date +%s.%N)
  wait "$sub"
  end=$(date +%s.%N)
  kill "$hub"; wait "$hub" 2>/dev/null || true
  python3 - "$name" "$ROWS" "$start" "$inserted" "$end" <<'PY'
import sys
name, rows, start, inserted, end = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
print(f"{name}: {rows} rows in {end - start:.2f} s = {rows / (end - start):,.0f} rows/s end to end "
      f"(inserts took {inserted - start:.2f} s)")
PY
}

insert="INSERT INTO $TABLE (topics, data) SELECT ARRAY['bench'], repeat('x', 100) FROM generate_series(1, %d);\n"
printf "$insert" "$ROWS" > "$work/bulk.sql"
: > "$work/small.sql"
for _ in $(seq $((ROWS / TX_ROWS))); do printf "$insert" "$TX_ROWS" >> "$work/small.sql"; done

run "A. one transaction of $ROWS rows" "$work/bulk.sql"
run "B. $((ROWS / TX_ROWS)) transactions of $TX_ROWS rows" "$work/small.sql"
