#!/usr/bin/env bash
# Creates an NSS softoken database (the "NSS Certificate DB" token) protected by a random
# user PIN in a file of mode 0600, like softhsm-init.sh does for SoftHSM, and prints the
# environment that points p8hsm at it — the module loaded directly, with the
# initialization arguments NSS needs. Safe to run twice. Needs certutil (libnss3-tools).
#   eval "$(P8HSM_NSS_DIR=DIR scripts/nss-init.sh)"
set -euo pipefail

dir=${P8HSM_NSS_DIR:?set P8HSM_NSS_DIR to the database directory}
umask 077
mkdir -p "$dir/db"
module=
for candidate in /usr/lib/x86_64-linux-gnu/libsoftokn3.so /usr/lib/aarch64-linux-gnu/libsoftokn3.so \
    /usr/lib64/libsoftokn3.so /usr/lib/libsoftokn3.so; do
    [ -f "$candidate" ] && { module=$candidate; break; }
done
[ -n "$module" ] || { echo "error: NSS softoken not found: apt-get install libnss3" >&2; exit 1; }
command -v certutil >/dev/null || { echo "error: certutil not found: apt-get install libnss3-tools" >&2; exit 1; }

if [ ! -f "$dir/user.pin" ]; then
    od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$dir/user.pin.tmp"
    echo >>"$dir/user.pin.tmp"
    out=$(certutil -N -d "sql:$dir/db" -f "$dir/user.pin.tmp" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
    mv "$dir/user.pin.tmp" "$dir/user.pin"
fi

printf 'export P8HSM_MODULE=%q\n' "$module"
printf 'export P8HSM_MODULE_ARGS=%q\n' "configdir='sql:$dir/db' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
printf 'export P8HSM_TOKEN=%q\n' "NSS Certificate DB"
printf 'export P8HSM_PIN_SOURCE=%q\n' "file:$dir/user.pin"
