#!/usr/bin/env bash
# Creates p8hsm's local SoftHSM token store and a token labelled "p8hsm" (or $P8HSM_TOKEN)
# with a random user PIN and SO PIN, each in a file of mode 0600. Safe to run twice: an
# existing token is kept. Prints, on stdout, the environment that points p8hsm at it:
#   eval "$(scripts/softhsm-init.sh)"
# P8HSM_SOFTHSM_DIR chooses another directory than softhsm/ (tests use one per test).
# The PINs never appear on a command line: pkcs11-tool reads them from its environment.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${P8HSM_SOFTHSM_DIR:-$root/softhsm}
label=${P8HSM_TOKEN:-p8hsm}
module=${P8HSM_MODULE:-}
if [ -z "$module" ]; then
    for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so \
        /usr/local/lib/softhsm/libsofthsm2.so; do
        if [ -f "$candidate" ]; then module=$candidate; break; fi
    done
fi
if [ -z "$module" ]; then
    echo "error: SoftHSM's module libsofthsm2.so is not installed" >&2
    echo "hint: apt-get install softhsm2 (or set P8HSM_MODULE)" >&2
    exit 1
fi
command -v pkcs11-tool >/dev/null || { echo "error: pkcs11-tool is missing; hint: apt-get install opensc" >&2; exit 1; }

# Everything created from here on is private to the user from the start.
umask 077
mkdir -p "$dir/tokens"
conf=$dir/softhsm2.conf
sed "s|@TOKENDIR@|$dir/tokens|" "$root/softhsm/softhsm2.conf.in" >"$conf.tmp"
mv "$conf.tmp" "$conf"
export SOFTHSM2_CONF=$conf

if pkcs11-tool --module "$module" --list-token-slots 2>/dev/null | grep -Eq "token label +: $label\$"; then
    if [ ! -f "$dir/user.pin" ]; then
        echo "error: token \"$label\" exists in $dir/tokens but $dir/user.pin is missing" >&2
        echo "hint: remove $dir/tokens to start over (its keys are lost)" >&2
        exit 1
    fi
    echo "token \"$label\" already exists in $dir/tokens" >&2
else
    random_pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
    P8HSM_INIT_SO_PIN=$(random_pin)
    P8HSM_INIT_USER_PIN=$(random_pin)
    export P8HSM_INIT_SO_PIN P8HSM_INIT_USER_PIN
    printf '%s\n' "$P8HSM_INIT_SO_PIN" >"$dir/so.pin.tmp"
    printf '%s\n' "$P8HSM_INIT_USER_PIN" >"$dir/user.pin.tmp"
    quietly() { local out; out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }; }
    quietly pkcs11-tool --module "$module" --init-token --label "$label" \
        --so-pin env:P8HSM_INIT_SO_PIN
    quietly pkcs11-tool --module "$module" --token-label "$label" --login --login-type so \
        --so-pin env:P8HSM_INIT_SO_PIN --init-pin --pin env:P8HSM_INIT_USER_PIN
    unset P8HSM_INIT_SO_PIN P8HSM_INIT_USER_PIN
    mv "$dir/so.pin.tmp" "$dir/so.pin"
    mv "$dir/user.pin.tmp" "$dir/user.pin"
    echo "created token \"$label\" in $dir/tokens (PINs in $dir/user.pin and $dir/so.pin, mode 0600)" >&2
fi

printf 'export SOFTHSM2_CONF=%q\n' "$conf"
printf 'export P8HSM_MODULE=%q\n' "$module"
printf 'export P8HSM_TOKEN=%q\n' "$label"
printf 'export P8HSM_PIN_SOURCE=%q\n' "file:$dir/user.pin"
