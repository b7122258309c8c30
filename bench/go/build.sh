#!/usr/bin/env bash
# Builds corekv-go-bench (bench/go/main.go) with Debian's Go toolchain and the etcd 3.4 client
# sources from golang-etcd-server-dev, in GOPATH mode (no module downloads: the packages'
# sources under /usr/share/gocode/src are the whole dependency tree).
#   bench/go/build.sh [OUTPUT]     # default: ${CARGO_TARGET_DIR:-target}/go/corekv-go-bench
# Installs golang-go and golang-etcd-server-dev with apt when they are missing (as root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${CARGO_TARGET_DIR:-$here/../../target}/go/corekv-go-bench}"
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ]; then
  echo "build.sh: installing golang-go golang-etcd-server-dev" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq golang-go golang-etcd-server-dev
fi
mkdir -p "$(dirname "$out")"
# A private GOPATH entry first (GOPATH mode wants one writable dir), then Debian's sources; the
# build cache is kept next to the binary so rebuilds are fast.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cache="$(dirname "$out")/go-build-cache"
cd "$here"
GOPATH="$tmp:/usr/share/gocode" GO111MODULE=off GOFLAGS= GOCACHE="$cache" GOPROXY=off \
  go build -o "$out" .
echo "$out"
