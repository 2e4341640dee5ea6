#!/usr/bin/env bash
# The servers the comparison scripts run (sourced, not run, from the repository's root:
# bench/compare.sh, bench/frontier.sh): ssehub with the in-memory or the durable history, and
# Nchan in Debian's nginx with a config of its own (installed with apt-get when missing).
# Sourcing it builds the release binary (`BIN`), raises the open-file limit to the hard one,
# makes the temporary directory `work`, and stops every server and removes `work` on exit; the
# caller calls `stop_all` when a run ends. Every process started here is stopped by its PID.
# Loopback only.
#
# start_ssehub [SERVE FLAGS...]   (default: --history memory)
# start_ssehub-durable            (the default durable history, in a fresh directory)
# start_nchan
#   each sets SERVER_PID (for Nchan, its one worker) and EXTRA (the `ssehub bench` flags that
#   point at it).
# With SERVER_CPUS set (a `taskset -c` list, e.g. 1), either server runs on those cores only.
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
KEY=k
BIN=./target/release/ssehub

if ! command -v nginx >/dev/null || [ ! -f "$NCHAN_MODULE" ]; then
  # Read whole first: with pipefail, `grep -q` closing the pipe early would fail apt-cache.
  policy=$(apt-cache policy libnginx-mod-nchan)
  if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
    echo "libnginx-mod-nchan is not available from apt here; nothing to compare" >&2
    exit 1
  fi
  apt-get install -y -qq nginx libnginx-mod-nchan >&2
fi
cargo build --release --quiet
ulimit -Sn "$(ulimit -Hn)"
work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  pids=()
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_ssehub [HISTORY FLAGS...] -> sets URL_SUB, URL_PUB, SERVER_PID, EXTRA
start_ssehub() {
  local port; port=$(free_port)
  local history=("$@")
  [ ${#history[@]} -gt 0 ] || history=(--history memory)
  ${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} $BIN serve --addr "127.0.0.1:$port" --jwt-key "$KEY" --anonymous "${history[@]}" \
    >"$work/ssehub.log" 2>&1 &
  SERVER_PID=$!
  pids+=("$SERVER_PID")
  for _ in $(seq 100); do grep -q "listening" "$work/ssehub.log" 2>/dev/null && break; sleep 0.1; done
  URL_SUB="http://127.0.0.1:$port/.well-known/mercure"
  EXTRA=(--url "$URL_SUB" --jwt-key "$KEY")
}

# start_ssehub-durable: the default durable history, in a fresh directory.
start_ssehub-durable() {
  rm -rf "$work/data"
  start_ssehub --data-dir "$work/data"
}

# start_nchan -> sets SERVER_PID (the worker), EXTRA
start_nchan() {
  local port; port=$(free_port)
  local dir="$work/nginx"
  rm -rf "$dir"; mkdir -p "$dir/logs" "$dir/tmp"
  local user=""
  [ "$(id -u)" = 0 ] && user="user root;"
  cat > "$dir/nginx.conf" <<CONF
load_module $NCHAN_MODULE;
$user
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $(ulimit -Hn);
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections $(( $(ulimit -Hn) - 100 )); multi_accept on; }
http {
  access_log $dir/logs/access.log;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  client_body_buffer_size 64k;
  client_max_body_size 1m;
  server {
    listen 127.0.0.1:$port backlog=4096;
    # Like ssehub's in-memory history: up to 100,000 messages for an hour; a new subscriber
    # without Last-Event-ID starts at the next message, as on ssehub.
    nchan_message_buffer_length 100000;
    nchan_message_timeout 1h;
    nchan_subscriber_first_message newest;
    location ~ /sub/(\w+)\$ { nchan_subscriber eventsource; nchan_channel_id \$1; }
    location ~ /pub/(\w+)\$ { nchan_publisher; nchan_channel_id \$1; }
  }
}
CONF
  ${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/logs/stderr.log" 2>&1 &
  local master=$!
  pids+=("$master")
  SERVER_PID=""
  for _ in $(seq 100); do
    SERVER_PID=$(pgrep -P "$master" | head -1 || true)
    [ -n "$SERVER_PID" ] && curl -s -o /dev/null "http://127.0.0.1:$port/pub/warmup" -d x && break
    sleep 0.1
  done
  [ -n "$SERVER_PID" ] || { cat "$dir/logs/stderr.log" "$dir/logs/error.log" >&2; exit 1; }
  EXTRA=(--subscribe-url "http://127.0.0.1:$port/sub/bench" --publish-url "http://127.0.0.1:$port/pub/bench"
    --publish-content-type text/plain --publish-body '{payload}')
}

