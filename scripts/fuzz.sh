#!/usr/bin/env bash
# Fuzzes p8hsm's parsers with libFuzzer through cargo-fuzz (from crates.io; stable
# toolchain with RUSTC_BOOTSTRAP=1): .p8 parsing, PKCS#11 URI parsing, check's JWT
# decoding, and the agent's protocol with the signing it leads to. The committed seeds
# (tests/fuzz/corpus/TARGET, a few dozen each) are only read; what a run finds goes to
# tests/fuzz/target/corpus/TARGET (ignored by git), which later runs start from.
#   scripts/fuzz.sh [SECONDS per target]      # default 600
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
export RUSTC_BOOTSTRAP=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in p8 uri check agent; do
    grown="tests/fuzz/target/corpus/$target"
    mkdir -p "$grown"
    if ! cargo fuzz run --fuzz-dir tests/fuzz "$target" "$grown" "tests/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        grep -E 'panicked|ERROR|SUMMARY|error' "$log" | head -n 20 >&2
        echo "error: fuzzing $target failed; the input is under tests/fuzz/artifacts/$target/" >&2
        exit 1
    fi
    echo "$target: $(grep -E '^Done' "$log") ($(ls "$grown" | wc -l) inputs grown)"
done
