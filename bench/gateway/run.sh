#!/usr/bin/env bash
# Gateway throughput: POST /v3/kv/put and /v3/kv/range at 100 keep-alive HTTP/1.1
# connections (wrk, Debian's package) against corekv, etcd 3.4 (Debian's etcd) and, when
# corekv-bench has cached it, etcd 3.5.1 — each fresh, one after the other, in one run.
# Server CPU is utime + stime of the server process from /proc/<pid>/stat, read before and
# after each workload, divided by the requests served.
#   bench/gateway/run.sh [SECONDS] [COREKV_BINARY]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-10}
corekv=${2:-$here/../../target/release/corekv}
etcd35=${ETCD35:-$HOME/.cache/corekv-bench/etcd-3.5.1/etcd}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

servers=("corekv:$corekv" "etcd-3.4:$(command -v etcd)")
[ -x "$etcd35" ] && servers+=("etcd-3.5:$etcd35")
printf '%-9s %-6s %10s %12s %14s\n' server op "req/s" "p50/p99 ms" "CPU s/100k req"
for entry in "${servers[@]}"; do
  name=${entry%%:*}; bin=${entry#*:}
  cp=$(port); pp=$(port)
  "$bin" --name default --data-dir "$work/$name" \
    --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "default=http://127.0.0.1:$pp" >"$work/$name.log" 2>&1 &
  pid=$!; pids+=("$pid")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$cp/health" | grep -q true && break; sleep 0.1
  done
  for op in put range; do
    before=$(cpu "$pid")
    out=$(wrk -t2 -c100 -d"${secs}s" --latency -s "$here/$op.lua" "http://127.0.0.1:$cp")
    sleep 0.25
    after=$(cpu "$pid")
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    errs=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    cpus=$(python3 -c "print(f'{($after-$before)/$hz/$reqs*1e5:.2f}')")
    printf '%-9s %-6s %10s %12s %14s%s\n' "$name" "$op" "$rps" "$p50/$p99" "$cpus" "${errs:+  non-2xx: $errs}"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
