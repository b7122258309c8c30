#!/usr/bin/env bash
# Runs corekv's cargo-fuzz targets (libFuzzer): with AddressSanitizer on nightly, without it
# on stable. Installs cargo-fuzz from crates.io if missing.
#
#   fuzz/run.sh                 every target, 60 s each
#   fuzz/run.sh -t 300 grpc_request storage_open
#
# New corpus entries go to fuzz/corpus-work/<target>/ (not checked in); the checked-in seeds
# in fuzz/corpus/<target>/ are only read. Crashes go to fuzz/artifacts/<target>/. Exits
# non-zero if any target found a crash.
set -euo pipefail
cd "$(dirname "$0")"

seconds=60
while getopts "t:" opt; do
  case $opt in
    t) seconds=$OPTARG ;;
    *) echo "usage: $0 [-t SECONDS] [TARGET...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

# Nightly gives AddressSanitizer; stable builds the same coverage-guided binaries without a
# sanitizer (cargo-fuzz's flags are otherwise stable codegen options).
if rustup toolchain list | grep -q '^nightly'; then
  toolchain=+nightly
  sanitizer=()
else
  echo "fuzz/run.sh: no nightly toolchain: building without AddressSanitizer" >&2
  toolchain=+stable
  sanitizer=(--sanitizer none)
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz (crates.io)" >&2
  cargo install --locked cargo-fuzz
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo "$toolchain" fuzz list)
fi

# One build for all targets (they share every dependency).
cargo "$toolchain" fuzz build -O "${sanitizer[@]}"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus-work/$t"
  echo "== $t: ${seconds}s" >&2
  # -rss_limit_mb: a decoder that allocates without bound is a finding too.
  if ! cargo "$toolchain" fuzz run -O "${sanitizer[@]}" "$t" "corpus-work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: crashes in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
