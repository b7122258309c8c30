#!/usr/bin/env bash
# CPU per /metrics scrape of etcd 3.4 (Debian's `etcd`), etcd 3.5.1 (corekv-bench's copy under
# ~/.cache/corekv-bench/etcd-3.5.1, if there) and corekv (target/release/corekv, or $COREKV):
# each single member on free ports with a fresh data dir, 200 puts and a lease first, then
# SCRAPES sequential GETs of /metrics; CPU is the server's utime + stime from /proc/<pid>/stat
# over the scrapes, less its CPU over as long a time idle just after, divided by SCRAPES.
#   bench/scrape-cost.sh [SCRAPES]     (default 500; needs curl and etcdctl)
set -euo pipefail
SCRAPES=${1:-500}
COREKV=${COREKV:-$(dirname "$0")/../target/release/corekv}
ETCD35=${ETCD35:-$HOME/.cache/corekv-bench/etcd-3.5.1/etcd}
TICK=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # label binary extra-flags...
  local label=$1 bin=$2; shift 2
  local c p
  c=$(port); p=$(port)
  "$bin" --name m --data-dir "$work/$label" --listen-client-urls "http://127.0.0.1:$c" \
    --advertise-client-urls "http://127.0.0.1:$c" --listen-peer-urls "http://127.0.0.1:$p" \
    --initial-advertise-peer-urls "http://127.0.0.1:$p" --initial-cluster "m=http://127.0.0.1:$p" \
    "$@" >"$work/$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$c/health" >/dev/null && break; sleep 0.1; done
  for i in $(seq 200); do ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$c" put "k$i" v >/dev/null; done
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$c" lease grant 100 >/dev/null
  local bytes series
  bytes=$(curl -s "http://127.0.0.1:$c/metrics" | wc -c)
  series=$(curl -s "http://127.0.0.1:$c/metrics" | grep -vc '^#')
  sleep 1
  local before after t0 t1 idle
  before=$(cpu_ticks $pid); t0=$(date +%s.%N)
  for _ in $(seq "$SCRAPES"); do curl -s -o /dev/null "http://127.0.0.1:$c/metrics"; done
  after=$(cpu_ticks $pid); t1=$(date +%s.%N)
  # The same time idle: what the server spends anyway (heartbeats, timers), subtracted.
  idle=$(cpu_ticks $pid); sleep "$(python3 -c "print($t1-$t0)")"; idle=$(( $(cpu_ticks $pid) - idle ))
  python3 -c "print(f'{\"$label\":<22} {($after-$before-$idle)/$TICK/$SCRAPES*1e3:7.3f} ms CPU/scrape  (idle {$idle/$TICK:.2f} s CPU in {$t1-$t0:.1f} s)  {$bytes:>7} bytes  {$series:>5} series')"
  kill $pid; wait $pid 2>/dev/null || true
}

echo "CPU per /metrics scrape, $SCRAPES scrapes each, $(date -u '+%Y-%m-%d %H:%M UTC')"
measure "etcd 3.4" etcd
[ -x "$ETCD35" ] && measure "etcd 3.5.1" "$ETCD35"
measure "corekv" "$COREKV"
measure "corekv extensive" "$COREKV" --metrics extensive
measure "etcd 3.4 extensive" etcd --metrics extensive
