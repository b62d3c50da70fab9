#!/usr/bin/env bash
# Interop with independent verifiers: PyJWT verifies every token kind p8hsm signs, and
# Apple's App Store Server Library (Python) builds the same tokens and signatures from
# the same key; scripts/interop.py compares headers and claim names and verifies the
# legacy signature with `cryptography`. Installs them from PyPI into a virtual
# environment under target/. Run by scripts/test.sh.
#   scripts/interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        echo "error: python3 cannot make a virtual environment; hint: apt-get install python3-venv" >&2
        exit 1
    }
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "PyJWT==2.15.1" "cryptography>=42" "app-store-server-library==3.1.2"

cargo build --quiet --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
eval "$(P8HSM_BIN=target/release/p8hsm P8HSM_SOFTHSM_DIR=$work scripts/softhsm-init.sh 2>/dev/null)"
umask 077
key_id=INTEROP001
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/AuthKey_$key_id.p8"
target/release/p8hsm import "$work/AuthKey_$key_id.p8" >/dev/null
# The key file stays only so that Apple's library, which needs the raw key, can build
# the reference tokens; it is removed with $work.
"$venv/bin/python" scripts/interop.py "$PWD/target/release/p8hsm" "$work/AuthKey_$key_id.p8" "$key_id"
