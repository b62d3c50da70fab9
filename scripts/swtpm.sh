#!/usr/bin/env bash
# A software TPM 2.0 for tests: `scripts/swtpm.sh start DIR` starts swtpm (state in DIR),
# a private D-Bus and tpm2-abrmd in front of it (the resource manager flushes what each
# client leaves in the TPM), and prints the environment tpm2-pkcs11 needs to reach it;
# `scripts/swtpm.sh stop DIR` stops them. Needs swtpm, dbus, tpm2-abrmd,
# libtss2-tcti-tabrmd0 and libtpm2-pkcs11-1.
#   eval "$(scripts/swtpm.sh start DIR)"; …; scripts/swtpm.sh stop DIR
set -euo pipefail

action=${1:?start DIR or stop DIR}
dir=${2:?start DIR or stop DIR}

stop() {
    for pid in "$dir"/*.pid; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
        rm -f "$pid"
    done
}

case $action in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: scripts/swtpm.sh start|stop DIR" >&2; exit 2 ;;
esac

mkdir -p "$dir/state"
# A free pair of ports (the swtpm TCTI expects the control port right after the command
# port), from a random start: tests start TPMs at once, and two starts that both found the
# same free pair would race for it — the loser tries another pair.
free_ports() {
    python3 -c 'import random, socket
while True:
    p = random.randrange(20000, 60000, 2)
    s, t = socket.socket(), socket.socket()
    try:
        s.bind(("127.0.0.1", p)); t.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError: pass
    finally: s.close(); t.close()'
}
for attempt in $(seq 10); do
    port=$(free_ports)
    swtpm socket --tpm2 --daemon --pid "file=$dir/swtpm.pid" --tpmstate "dir=$dir/state" \
        --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
        --flags not-need-init,startup-clear 2>"$dir/swtpm.err" && break
    grep -q "Address already in use" "$dir/swtpm.err" && [ "$attempt" -lt 10 ] ||
        { cat "$dir/swtpm.err" >&2; exit 1; }
done
bus="unix:path=$dir/bus"
dbus-daemon --session --fork --address="$bus" --print-pid >"$dir/dbus.pid"
DBUS_SESSION_BUS_ADDRESS=$bus setsid tpm2-abrmd --allow-root --session \
    --tcti="swtpm:host=127.0.0.1,port=$port" >"$dir/abrmd.log" 2>&1 &
echo $! >"$dir/abrmd.pid"
# Ready when a client gets through it to the TPM.
for _ in $(seq 50); do
    DBUS_SESSION_BUS_ADDRESS=$bus tpm2_getrandom -T tabrmd:bus_type=session 1 >/dev/null 2>&1 && break
    sleep 0.1
done
DBUS_SESSION_BUS_ADDRESS=$bus tpm2_getrandom -T tabrmd:bus_type=session 1 >/dev/null 2>&1 || {
    echo "error: tpm2-abrmd did not come up; see $dir/abrmd.log" >&2
    stop
    exit 1
}
printf 'export DBUS_SESSION_BUS_ADDRESS=%q\n' "$bus"
printf 'export TPM2_PKCS11_TCTI=%q\n' "tabrmd:bus_type=session"
