#!/usr/bin/env bash
# Installs what the tests need (SoftHSM, OpenSC, openssl, p11-kit, and the other PKCS#11
# implementations), then checks formatting and lints, the lock file against known
# advisories (cargo-audit, built from crates.io once), runs the whole suite against real
# SoftHSM tokens, the integration suite again against Kryoptic (built from crates.io),
# NSS softoken and a TPM 2.0 on swtpm, the interop checks against PyJWT
# and Apple's library (when python3 is there), the installs (cargo install, the Debian
# package), the CI guide's steps, the demo and the library example.
#   scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
p8hsm_for_tests=1
source scripts/deps.sh

cargo fmt --check
cargo clippy --all-targets --all-features -- -D warnings

echo "== cargo audit: Cargo.lock against the RustSec advisory database, offline"
# The database is the snapshot in ../shared (P8HSM_ADVISORY_DB for another copy); every
# advisory accepted is in .cargo/audit.toml with its reason, so a new one fails the run.
advisories=${P8HSM_ADVISORY_DB:-../shared/advisory-db}
if [ -d "$advisories" ]; then
    audit=$(command -v cargo-audit || true)
    if [ -z "$audit" ]; then
        audit=target/tools/bin/cargo-audit
        # Without binary scanning, which a lock file does not need: a quicker build.
        [ -x "$audit" ] || cargo install --locked --quiet --no-default-features cargo-audit@0.22.2 \
            --root target/tools
    fi
    "$audit" audit --db "$advisories" --no-fetch --stale --deny warnings
else
    echo "skipped: no advisory database at $advisories (set P8HSM_ADVISORY_DB to one)"
fi
# Kryoptic without ECDSA, for tokens::: built before the suite, not by the test that
# needs it while the others run.
scripts/kryoptic.sh --without-ecdsa >/dev/null
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

echo "== the integration suite against NSS softoken, loaded directly with its arguments"
# Not here: tests that write with pkcs11-tool or read with cryptoki (neither can give NSS
# its arguments), that name the token "p8hsm" (NSS's is "NSS Certificate DB"), that
# record --kind metadata or claims (NSS refuses data objects), or that need SoftHSM's
# store or p11-kit's server; pkcs11-spy cannot give NSS its arguments either.
P8HSM_TEST_NSS=1 cargo test --all-features --test integration -- \
    import:: token:: kinds:: errors:: uri:: catalogue:: attack:: renew:: agent:: \
    --skip a_wrong_pin_is_tried_exactly_once --skip the_agent_also_tries_a_wrong_pin_exactly_once \
    --skip the_agent_never_tries_a_pin_again --skip an_hsm_outage_serves \
    --skip a_duplicated_key_id_fails_doctor --skip a_full_token_store_never_reports \
    --skip an_import_killed_halfway --skip missing_module_token_key_and_pin_source \
    --skip import_infers_the_key_id --skip vendor_profiles_shape_the_import \
    --skip recorded_metadata_supplies_identities --skip modules_lists_what_p8hsm_finds \
    --skip options_win_over_the_uri --skip a_live_key_is_never_taken_for_an_unfinished_import \
    --skip a_key_on_another_curve_is_refused_as_one

echo "== the integration suite against a TPM 2.0: tpm2-pkcs11 on swtpm, behind tpm2-abrmd"
# Keys go in with tpm2_ptool (tpm2-pkcs11 takes none through PKCS#11) or are generated.
# Not here: tests of p8hsm's own import (refused on a TPM, tested in tokens::), of
# --kind metadata, of SoftHSM's p11-kit server, or of another uid (the TPM's D-Bus is
# root's), nor of a key deleted under a running agent (tpm2-pkcs11 reads its store only
# when initialized: the agent signs on with the key it loaded).
tpm_dir=$(mktemp -d)
trap 'scripts/swtpm.sh stop "$tpm_dir"; rm -rf "$tpm_dir"' EXIT
eval "$(scripts/swtpm.sh start "$tpm_dir")"
P8HSM_TEST_TPM2=1 cargo test --all-features --test integration -- \
    keygen:: token:: kinds:: renew:: agent:: \
    --skip keygen_and_assign_refuse_what_they_cannot_do --skip new_kinds_refuse_bad_input \
    --skip an_hsm_outage_serves --skip a_peer_of_another_uid_is_refused \
    --skip one_request_for_a_deleted_key_does_not_delay_the_others \
    --skip recorded_metadata_supplies_identities
scripts/swtpm.sh stop "$tpm_dir"
unset DBUS_SESSION_BUS_ADDRESS TPM2_PKCS11_TCTI

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
