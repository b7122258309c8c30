#!/usr/bin/env bash
# Builds corekv and corekv-bench (release) and runs the side-by-side comparison with real etcd
# (Debian's etcd 3.4 and etcd 3.5.1; the latter is installed with pip into
# ~/.cache/corekv-bench/etcd-3.5.1 the first time, unless --etcd35-bin PATH or --no-etcd35):
#   bench/compare.sh                 # single node, full run (3 reps per workload, a few minutes)
#   bench/compare.sh --quick         # fast check that everything works (not a measurement)
#   bench/compare.sh --members 3     # 3-member clusters
#   bench/compare.sh --load-generator go --server-cpus 0 --client-cpus 1
#                                    # the official Go client only; servers on CPU 0, it on 1
# The Go load generator (bench/go) is built into target/go on first use when Go is installed.
# Every flag is passed on to `corekv-bench compare` (see `corekv-bench compare --help`).
# Honours CARGO_TARGET_DIR (the binaries are taken from there).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v etcd >/dev/null 2>&1 || {
  echo "compare.sh: etcd is not installed (Debian: apt-get install etcd-server)" >&2
  exit 1
}
cargo build --release --bin corekv -p corekv >&2
cargo build --release --bin corekv-bench -p corekv-bench >&2
exec "${CARGO_TARGET_DIR:-target}/release/corekv-bench" compare "$@"
