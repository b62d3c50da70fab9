#!/usr/bin/env bash
# Makes a tpm2-pkcs11 token labelled "p8hsm" in a store of its own, with a random user
# PIN and SO PIN in files of mode 0600, like softhsm-init.sh does for SoftHSM, and prints
# the environment that points p8hsm at it. The TPM is the one TPM2_PKCS11_TCTI reaches
# (scripts/swtpm.sh starts a software one). Safe to run twice.
#   eval "$(P8HSM_TPM2_DIR=DIR scripts/tpm2-init.sh)"
set -euo pipefail

dir=${P8HSM_TPM2_DIR:?set P8HSM_TPM2_DIR to the token store directory}
: "${TPM2_PKCS11_TCTI:?set TPM2_PKCS11_TCTI to reach the TPM (scripts/swtpm.sh start DIR prints it)}"
label=${P8HSM_TOKEN:-p8hsm}
module=
for candidate in /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so \
    /usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so /usr/lib64/pkcs11/libtpm2_pkcs11.so; do
    [ -f "$candidate" ] && { module=$candidate; break; }
done
[ -n "$module" ] || { echo "error: tpm2-pkcs11 not found: apt-get install libtpm2-pkcs11-1" >&2; exit 1; }
umask 077
mkdir -p "$dir"
export TPM2_PKCS11_STORE=$dir
source "$(dirname "$0")/token-init.sh"
reset_store() { rm -f "$dir/tpm2_pkcs11.sqlite3"; }
p8hsm_token_init "$module" "$dir" "$label" reset_store

printf 'export TPM2_PKCS11_STORE=%q\n' "$dir"
printf 'export P8HSM_MODULE=%q\n' "$module"
printf 'export P8HSM_TOKEN=%q\n' "$label"
printf 'export P8HSM_PIN_SOURCE=%q\n' "file:$dir/user.pin"
