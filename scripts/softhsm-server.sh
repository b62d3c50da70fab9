#!/usr/bin/env bash
# Serves the local SoftHSM token through `p11-kit server` on a unix socket, so that
# SoftHSM's code — and the private key while it signs — lives in the server process,
# and p8hsm, loading p11-kit's client module, never holds the key in its memory.
#   eval "$(scripts/softhsm-server.sh)"    # start (or reuse) the server; prints the
#                                          # environment that points p8hsm at it
#   scripts/softhsm-server.sh --stop
# P8HSM_SOFTHSM_DIR chooses the token store as for softhsm-init.sh (which it runs first).
# P8HSM_SERVER_USER runs the server as another user (needs root): the token store then
# belongs to that user and only the calling user may connect to the socket.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${P8HSM_SOFTHSM_DIR:-$root/softhsm}
rundir=$dir/server
socket=$rundir/p11-kit.sock
pidfile=$rundir/p11-kit.pid

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [ -S "$socket" ]; }

if [ "${1:-}" = "--stop" ]; then
    if running; then
        # The server forks a process per client connection: end its whole process group.
        pid=$(cat "$pidfile")
        kill -- "-$pid" 2>/dev/null || kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "stopped the p11-kit server for $dir" >&2
    fi
    rm -f "$pidfile" "$socket"
    exit 0
fi

command -v p11-kit >/dev/null || {
    echo "error: p11-kit is missing; hint: apt-get install p11-kit p11-kit-modules" >&2
    exit 1
}
client=
for candidate in /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so \
    /usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so /usr/lib64/pkcs11/p11-kit-client.so \
    /usr/lib/pkcs11/p11-kit-client.so; do
    if [ -f "$candidate" ]; then client=$candidate; break; fi
done
[ -n "$client" ] || {
    echo "error: p11-kit's client module p11-kit-client.so is missing; hint: apt-get install p11-kit-modules" >&2
    exit 1
}

# The token store and the environment for SoftHSM itself (the server's side).
eval "$(P8HSM_SOFTHSM_DIR=$dir "$root/scripts/softhsm-init.sh")"
label=$P8HSM_TOKEN
softhsm=$P8HSM_MODULE

if running; then
    echo "p11-kit server already serves token \"$label\" on $socket" >&2
else
    rm -f "$socket"
    mkdir -p "$rundir"
    user_args=()
    if [ -n "${P8HSM_SERVER_USER:-}" ]; then
        # The server user owns the token store and the socket's directory; the PIN
        # files stay the caller's.
        chown -R "$P8HSM_SERVER_USER" "$dir/tokens" "$rundir"
        chmod 0711 "$dir"
        chmod 0644 "$dir/softhsm2.conf"
        user_args=(--run-as-user "$P8HSM_SERVER_USER" --user "$(id -un)")
    fi
    # setsid: the server outlives this script and ignores the caller's terminal signals.
    setsid p11-kit server --foreground --name "$socket" --provider "$softhsm" \
        "${user_args[@]}" "pkcs11:token=$label" </dev/null >"$rundir/p11-kit.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
    if ! running; then
        echo "error: p11-kit server did not start:" >&2
        cat "$rundir/p11-kit.log" >&2
        exit 1
    fi
    echo "p11-kit server (pid $(cat "$pidfile")) serves token \"$label\" on $socket" >&2
fi

printf 'export P8HSM_MODULE=%q\n' "$client"
printf 'export P11_KIT_SERVER_ADDRESS=%q\n' "unix:path=$socket"
printf 'export P8HSM_TOKEN=%q\n' "$label"
printf 'export P8HSM_PIN_SOURCE=%q\n' "$P8HSM_PIN_SOURCE"
