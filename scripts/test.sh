#!/usr/bin/env bash
# Installs what the tests need (SoftHSM, OpenSC, openssl, p11-kit), then checks
# formatting and lints, runs the whole suite against real SoftHSM tokens, the integration
# suite again against Kryoptic (built from crates.io), the interop checks against PyJWT
# and Apple's library (when python3 is there), the installs (cargo install, the Debian
# package), the CI guide's steps, the demo and the library example.
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

cargo fmt --check
cargo clippy --all-targets --all-features -- -D warnings
# --all-features turns on fault-injection, which only the cleanup test uses.
cargo test --all-features

echo "== the integration suite against Kryoptic, a second PKCS#11 implementation"
kryoptic=$(scripts/kryoptic.sh)
# pkcs11-spy (OpenSC 0.23) passes a PKCS#11 3.0 module's calls through without logging
# them, so C_Login is counted on SoftHSM only; the recovery and custody tests run on
# SoftHSM behind p11-kit's server.
P8HSM_TEST_KRYOPTIC=$kryoptic cargo test --all-features --test integration -- \
    import:: token:: kinds:: errors:: uri:: attributes:: doctor:: catalogue:: hygiene:: parity:: attack:: \
    keygen:: renew:: \
    --skip a_wrong_pin_is_tried_exactly_once --skip the_agent_also_tries_a_wrong_pin_exactly_once \
    --skip the_agent_never_tries_a_pin_again

echo "== fuzzing smoke run: each target for 15 s from its committed seeds (scripts/fuzz.sh)"
scripts/fuzz.sh 15

echo "== scripts/interop.sh: PyJWT and Apple's App Store Server Library"
if command -v python3 >/dev/null; then
    scripts/interop.sh
else
    echo "skipped: python3 is not installed (apt-get install python3 python3-venv to run it)"
fi

echo "== scripts/install-test.sh: cargo install, the Debian package, outside the clone"
scripts/install-test.sh

echo "== scripts/ci-guide.sh: every step of docs/ci.md on a fresh directory"
scripts/ci-guide.sh

echo "== scripts/demo.sh on a token store of its own"
demo_dir=$(mktemp -d)
trap 'rm -rf "$demo_dir"' EXIT
P8HSM_SOFTHSM_DIR=$demo_dir scripts/demo.sh

echo "== examples/sign_token.rs against the demo's token"
eval "$(P8HSM_SOFTHSM_DIR=$demo_dir scripts/softhsm-init.sh 2>/dev/null)"
cargo run --quiet --all-features --example sign_token -- DEMOKEY001 57246542-96fe-1a63-e053-0824d011072a
