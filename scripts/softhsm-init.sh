#!/usr/bin/env bash
# Creates p8hsm's local SoftHSM token store and a token labelled "p8hsm" (or $P8HSM_TOKEN)
# with random user and SO PINs, each in a file of mode 0600, by running
# `p8hsm softhsm init` (which does it through PKCS#11 itself). Safe to run twice: an
# existing token is kept. Prints, on stdout, the environment that points p8hsm at it:
#   eval "$(scripts/softhsm-init.sh)"
# P8HSM_SOFTHSM_DIR chooses another directory than softhsm/ (tests use one per test);
# P8HSM_BIN the p8hsm binary (default: the newer of target/release/p8hsm and
# target/debug/p8hsm, else it is built).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${P8HSM_SOFTHSM_DIR:-$root/softhsm}
label=${P8HSM_TOKEN:-p8hsm}
bin=${P8HSM_BIN:-}
if [ -z "$bin" ]; then
    for candidate in "$root/target/release/p8hsm" "$root/target/debug/p8hsm"; do
        if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then
            bin=$candidate
        fi
    done
fi
if [ -z "$bin" ]; then
    (cd "$root" && cargo build --release --quiet) >&2
    bin=$root/target/release/p8hsm
fi
exec "$bin" softhsm init --dir "$dir" --label "$label"
