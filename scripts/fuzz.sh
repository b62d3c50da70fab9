#!/usr/bin/env bash
# Fuzzes p8hsm's parsers with libFuzzer through cargo-fuzz (from crates.io; stable
# toolchain with RUSTC_BOOTSTRAP=1): .p8 parsing, PKCS#11 URI parsing, check's JWT
# decoding, and the agent's request parser with the signing it leads to. The corpora
# under tests/fuzz/corpus/ are committed: a run of a minute or more
# adds what it finds to them (minimize with `cargo fuzz cmin --fuzz-dir tests/fuzz T`);
# a shorter smoke run only reads them.
#   scripts/fuzz.sh [SECONDS per target]      # default 600
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
scratch=$(mktemp -d)
trap 'rm -rf "$log" "$scratch"' EXIT
for target in p8 uri check agent; do
    corpora=("tests/fuzz/corpus/$target")
    if [ "$seconds" -lt 60 ]; then
        mkdir -p "$scratch/$target"
        corpora=("$scratch/$target" "tests/fuzz/corpus/$target")
    fi
    if ! cargo fuzz run --fuzz-dir tests/fuzz "$target" "${corpora[@]}" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        grep -E 'panicked|ERROR|SUMMARY|error' "$log" | head -n 20 >&2
        echo "error: fuzzing $target failed; the input is under tests/fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log")"
done
