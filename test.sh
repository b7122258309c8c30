#!/usr/bin/env bash
# Runs corekv's whole test suite on a fresh machine: installs what the tests need (real etcd
# and etcdctl for the comparison tests, protoc for the Rust etcd-client crate, promtool for
# the metrics test, iproute2 for network partitions, Go and etcd's Go client for the Go load
# generator, honcho for the Procfile, etcd3gw and Patroni with PostgreSQL for the real-client
# tests), then tests every crate of the workspace.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# promtool checks the /metrics exposition (tests/metrics.rs).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# curl: the JSON gateway's HTTP/2 checks (tests/gateway.rs).
command -v curl >/dev/null 2>&1 || need+=(curl)
# Network namespaces for the partition tests.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The Go load generator (bench/go, built in GOPATH mode on the official client's sources).
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || need+=(golang-etcd-server-dev)
# Patroni managing PostgreSQL 15 with corekv as its store (tests/patroni.rs).
command -v patroni >/dev/null 2>&1 || need+=(patroni)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
fi

# honcho runs the Procfile's local cluster (tests/procfile.rs), as the README shows.
if ! command -v honcho >/dev/null 2>&1; then
  echo "test.sh: installing honcho (PyPI)" >&2
  python3 -m pip install -q honcho
fi

# etcd3gw, the JSON gateway's Python client (tests/etcd3gw.rs), at the version it was checked with.
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("etcd3gw"))' 2>/dev/null)" != 2.7.0 ]; then
  echo "test.sh: installing etcd3gw 2.7.0 (PyPI)" >&2
  python3 -m pip install -q etcd3gw==2.7.0
fi

# Release mode: the property, crash and fuzz-corpus tests run many cases (tests/fuzz_corpus.rs
# runs every fuzz target on stable; the libFuzzer runs are fuzz/run.sh, see fuzz/README.md),
# and the integration tests
# start the real server binaries (cargo builds them for the tests).
cargo test --workspace --release "$@"
