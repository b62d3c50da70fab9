#!/usr/bin/env bash
# Fuzzes p8hsm's parsers with libFuzzer through cargo-fuzz (from crates.io; stable
# toolchain with RUSTC_BOOTSTRAP=1): .p8 parsing, PKCS#11 URI parsing, and check's JWT
# decoding. The corpora under tests/fuzz/corpus/ are committed and grow with each run.
#   scripts/fuzz.sh [SECONDS per target]      # default 600
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in p8 uri check; do
    echo "== fuzzing $target for ${seconds}s"
    cargo fuzz run --fuzz-dir tests/fuzz "$target" "tests/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E 'stat::|Done|ERROR|SUMMARY|panicked' || true
    # A finding leaves an artifact and a non-zero exit: report it.
    if ls "tests/fuzz/artifacts/$target"/crash-* >/dev/null 2>&1; then
        echo "error: the $target fuzz target found a crash: tests/fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
