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
source "$(dirname "$0")/token-init.sh"
p8hsm_token_init "$module" "$dir" "$label"

printf 'export KRYOPTIC_CONF=%q\n' "$KRYOPTIC_CONF"
printf 'export P8HSM_MODULE=%q\n' "$module"
printf 'export P8HSM_TOKEN=%q\n' "$label"
printf 'export P8HSM_PIN_SOURCE=%q\n' "file:$dir/user.pin"
