# Sourced by kryoptic-init.sh and tpm2-init.sh: p8hsm_token_init MODULE DIR LABEL [RESET]
# makes a token labelled LABEL with OpenSC's pkcs11-tool (C_InitToken, C_InitPIN) with a
# random SO PIN and user PIN, written to DIR/so.pin and DIR/user.pin (mode 0600) once the
# token exists; the PINs reach pkcs11-tool through its environment, never its arguments.
# RESET, a command, is run before each of three attempts (a busy TPM can fail a step).
# Does nothing when DIR/user.pin exists.
p8hsm_token_init() {
    local module=$1 dir=$2 label=$3 reset=${4:-true} out attempt
    [ -f "$dir/user.pin" ] && return 0
    random_pin() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }
    P8HSM_INIT_SO_PIN=$(random_pin)
    P8HSM_INIT_USER_PIN=$(random_pin)
    export P8HSM_INIT_SO_PIN P8HSM_INIT_USER_PIN
    (umask 077 && printf '%s\n' "$P8HSM_INIT_SO_PIN" >"$dir/so.pin.tmp" &&
        printf '%s\n' "$P8HSM_INIT_USER_PIN" >"$dir/user.pin.tmp")
    for attempt in 1 2 3; do
        $reset
        out=$(pkcs11-tool --module "$module" --init-token --label "$label" \
            --so-pin env:P8HSM_INIT_SO_PIN 2>&1 &&
            pkcs11-tool --module "$module" --token-label "$label" --login --login-type so \
                --so-pin env:P8HSM_INIT_SO_PIN --init-pin --pin env:P8HSM_INIT_USER_PIN 2>&1) && break
        [ "$attempt" = 3 ] && { printf '%s\n' "$out" >&2; return 1; }
        sleep "$attempt"
    done
    mv "$dir/so.pin.tmp" "$dir/so.pin"
    mv "$dir/user.pin.tmp" "$dir/user.pin"
}
