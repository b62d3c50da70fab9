#!/usr/bin/env bash
# Creates a Kryoptic token store (one SQLite file) with a token labelled "p8hsm" and a
# random user PIN and SO PIN in files of mode 0600, like softhsm-init.sh does for
# SoftHSM, and prints the environment that points p8hsm at it. Safe to run twice.
#   eval "$(P8HSM_KRYOPTIC_DIR=DIR P8HSM_KRYOPTIC_MODULE=$(scripts/kryoptic.sh) scripts/kryoptic-init.sh)"
set -euo pipefail

dir=${P8HSM_KRYOPTIC_DIR:?set P8HSM_KRYOPTIC_DIR to the token store directory}
module=${P8HSM_KRYOPTIC_MODULE:?set P8HSM_KRYOPTIC_MODULE to the module scripts/kryoptic.sh built}
label=${P8HSM_TOKEN:-p8hsm}
umask 077
mkdir -p "$dir"
export KRYOPTIC_CONF=$dir/token.sql
quietly() { local out; out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }; }

if [ ! -f "$dir/user.pin" ]; then
    random_pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
    P8HSM_INIT_SO_PIN=$(random_pin)
    P8HSM_INIT_USER_PIN=$(random_pin)
    export P8HSM_INIT_SO_PIN P8HSM_INIT_USER_PIN
    printf '%s\n' "$P8HSM_INIT_SO_PIN" >"$dir/so.pin.tmp"
    printf '%s\n' "$P8HSM_INIT_USER_PIN" >"$dir/user.pin.tmp"
    quietly pkcs11-tool --module "$module" --init-token --label "$label" --so-pin env:P8HSM_INIT_SO_PIN
    quietly pkcs11-tool --module "$module" --token-label "$label" --login --login-type so \
        --so-pin env:P8HSM_INIT_SO_PIN --init-pin --pin env:P8HSM_INIT_USER_PIN
    mv "$dir/so.pin.tmp" "$dir/so.pin"
    mv "$dir/user.pin.tmp" "$dir/user.pin"
fi

printf 'export KRYOPTIC_CONF=%q\n' "$KRYOPTIC_CONF"
printf 'export P8HSM_MODULE=%q\n' "$module"
printf 'export P8HSM_TOKEN=%q\n' "$label"
printf 'export P8HSM_PIN_SOURCE=%q\n' "file:$dir/user.pin"
