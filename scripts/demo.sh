#!/usr/bin/env bash
# p8hsm end to end on the embedded SoftHSM token: import a key once, sign an App Store
# Connect token inside the token, and check the signature with openssl against the
# public key the token holds. The token is served by `p11-kit server`, so p8hsm talks to
# it through p11-kit's client module and never holds the key in its own memory.
#   scripts/demo.sh
# P8HSM_SOFTHSM_DIR chooses another token store than softhsm/ (scripts/test.sh uses one);
# P8HSM_DEMO_IN_PROCESS=1 loads SoftHSM into p8hsm instead of using the p11-kit server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
command -v cargo >/dev/null || { echo "error: cargo is missing; hint: install Rust with rustup" >&2; exit 1; }

step() { printf '\n== %s\n' "$*"; }
stop_server=

step "building p8hsm (release)"
cargo build --release --quiet
p8hsm=$PWD/target/release/p8hsm
export P8HSM_BIN=$p8hsm

umask 077
work=$(mktemp -d)
cleanup() {
    rm -rf "$work"
    if [ -n "${stop_server:-}" ]; then scripts/softhsm-server.sh --stop; fi
}
trap cleanup EXIT

if [ -n "${P8HSM_DEMO_IN_PROCESS:-}" ]; then
    step "SoftHSM token, loaded in-process"
    eval "$(P8HSM_BIN=$p8hsm scripts/softhsm-init.sh)"
    echo "module=$P8HSM_MODULE SOFTHSM2_CONF=$SOFTHSM2_CONF"
else
    step "SoftHSM token, served by p11-kit server"
    server_dir=${P8HSM_SOFTHSM_DIR:-$PWD/softhsm}
    # Stop the server this demo starts; leave one that was already running.
    [ -f "$server_dir/server/p11-kit.pid" ] || stop_server=1
    eval "$(scripts/softhsm-server.sh)"
    echo "module=$P8HSM_MODULE $P11_KIT_SERVER_ADDRESS"
fi
echo "token=$P8HSM_TOKEN pin-source=$P8HSM_PIN_SOURCE"

key_id=DEMOKEY001
issuer=57246542-96fe-1a63-e053-0824d011072a

step "a throwaway key standing in for Apple's AuthKey_$key_id.p8"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/AuthKey_$key_id.p8"
if "$p8hsm" keys --json | grep -q "\"id\":\"$key_id\""; then
    echo "replacing the demo key left by an earlier run"
    "$p8hsm" delete --key-id "$key_id" --yes
fi

step "p8hsm import $work/AuthKey_$key_id.p8"
"$p8hsm" import "$work/AuthKey_$key_id.p8"
rm -f "$work/AuthKey_$key_id.p8"
echo "(the .p8 is deleted: the key now exists only inside the token)"

step "p8hsm keys"
"$p8hsm" keys

step "p8hsm token connect --key-id $key_id --issuer $issuer --scope 'GET /v1/apps'"
token=$("$p8hsm" token connect --key-id "$key_id" --issuer "$issuer" --scope "GET /v1/apps")
echo "$token"

step "verifying the ES256 signature with openssl against p8hsm pubkey"
"$p8hsm" pubkey --key-id "$key_id" >"$work/public.pem"
cat "$work/public.pem"
scripts/verify-jws.sh "$token" "$work/public.pem"
