#!/usr/bin/env bash
# Measures p8hsm against the raw PKCS#11 ceiling in one run, on a fresh SoftHSM token
# with an imported key: in-process, then through p11-kit's server and client. Prints a
# markdown table (the README carries one from a real run). No assertions: compare the
# ratios with the anchors in the README.
#   scripts/bench.sh    # BENCH_SECONDS=3: how long each side of a comparison runs
#   scripts/bench.sh --against OTHER_P8HSM
#       only `serve`'s fresh tokens: this build's service and OTHER_P8HSM's (another
#       build of p8hsm) side by side, in alternating 1-second windows (BENCH_ROUNDS=10
#       each), so that a change is told from the host's drift between runs
set -euo pipefail
against=
if [ "${1:-}" = --against ]; then
    against=${2:-}
    [ -f "$against" ] && [ -x "$against" ] || { echo "error: --against needs another p8hsm binary, and '$against' is not an executable file; hint: build the other commit with cargo build --release and give its target/release/p8hsm" >&2; exit 2; }
    against=$(realpath "$against")
fi
cd "$(dirname "$0")/.."
source scripts/deps.sh
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" -ne 0 ]; then echo "error: needs GNU time; hint: sudo apt-get install time" >&2; exit 1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2
fi

cargo build --release --quiet
cargo bench --quiet --bench bench --no-run

work=$(mktemp -d)
export P8HSM_SOFTHSM_DIR=$work
started=() # the agent and services this run started: stopped however it ends
cleanup() {
    [ ${#started[@]} -eq 0 ] || kill "${started[@]}" 2>/dev/null || true
    scripts/softhsm-server.sh --stop 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
eval "$(P8HSM_BIN=target/release/p8hsm scripts/softhsm-init.sh 2>/dev/null)"
umask 077
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/AuthKey_BENCH00001.p8"
target/release/p8hsm import "$work/AuthKey_BENCH00001.p8" >/dev/null
rm "$work/AuthKey_BENCH00001.p8"
export BENCH_KEY_ID=BENCH00001 BENCH_SECONDS=${BENCH_SECONDS:-3}
export P8HSM_BIN=$PWD/target/release/p8hsm BENCH_PIN_FILE=$work/user.pin

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "SoftHSM $(softhsm2-util --version), $(openssl version | cut -d' ' -f1-2), p11-kit $(dpkg-query -W -f='${Version}' p11-kit 2>/dev/null)"
echo "software ECDSA ceiling: $(openssl speed -seconds 2 ecdsap256 2>/dev/null | awk '/256 bits ecdsa/ {print $(NF-1)}') signatures/s on one core (openssl speed ecdsap256)"
echo
# The service (twice: its TLS key in a file, then in the token), auditing to a file.
pki=$work/pki
mkdir "$pki"
quiet() { "$@" >/dev/null 2>&1 || { echo "error: $*" >&2; exit 1; }; }
quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/ca.key" \
    -out "$pki/ca.pem" -subj /CN=bench-ca -days 1
target/release/p8hsm keygen --label tls 2>/dev/null >"$pki/token.pub"
target/release/p8hsm assign --label tls --key-id TLSSERVER1 >/dev/null
printf 'subjectAltName=DNS:localhost\n' >"$pki/server.ext"
printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
for name in server token client; do
    quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/$name.key" \
        -out "$pki/$name.csr" -subj "/CN=bench-$name"
done
quiet openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -out "$pki/server.pem" \
    -days 1 -extfile "$pki/server.ext"
quiet openssl x509 -req -in "$pki/token.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -out "$pki/token.pem" \
    -days 1 -extfile "$pki/server.ext" -force_pubkey "$pki/token.pub"
quiet openssl x509 -req -in "$pki/client.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -out "$pki/client.pem" \
    -days 1 -extfile "$pki/client.ext"
printf '[[caller]]\nname = "cn:bench-client"\nkeys = ["BENCH00001"]\nkinds = ["connect"]\n' >"$pki/policy.toml"
# Builds from before callers were named cn:/dns:/uri: (they have no --crl) take the bare CN.
sed 's/"cn:/"/' "$pki/policy.toml" >"$pki/policy-bare.toml"
serve() { # CERT KEY NAME [BINARY]
    local binary=${4:-target/release/p8hsm} policy=$pki/policy.toml
    "$binary" serve --help | grep -q -- --crl || policy=$pki/policy-bare.toml
    "$binary" serve --listen 127.0.0.1:0 --tls-cert "$1" --tls-key "$2" --client-ca "$pki/ca.pem" \
        --policy "$policy" --audit-log "$work/serve-$3.log" >"$work/serve-$3.url" 2>/dev/null &
    echo $!
}
if [ -n "$against" ]; then
    this_pid=$(serve "$pki/server.pem" "$pki/server.key" this)
    other_pid=$(serve "$pki/server.pem" "$pki/server.key" other "$against")
    started+=("$this_pid" "$other_pid")
    for _ in $(seq 50); do [ -s "$work/serve-this.url" ] && [ -s "$work/serve-other.url" ] && break; sleep 0.1; done
    BENCH_MODE=in-process BENCH_SERVE_CA=$pki/ca.pem BENCH_SERVE_CERT=$pki/client.pem BENCH_SERVE_KEY=$pki/client.key \
        BENCH_AGAINST_URLS="$(head -n 1 "$work/serve-this.url") $(head -n 1 "$work/serve-other.url")" \
        BENCH_AGAINST_PIDS="$this_pid $other_pid" cargo bench --quiet --bench bench
    exit
fi
echo "| mode | measurement | result | ratio |"
echo "|---|---|---|---|"
# The agent, in the background, auditing to a file: its socket is measured too.
agent_env=$(target/release/p8hsm agent --socket "$work/agent/agent.sock" --audit-log "$work/agent-audit.log")
agent_pid=$(printf '%s\n' "$agent_env" | sed -n 's/^P8HSM_AGENT_PID=\([0-9]*\);.*/\1/p')
serve_file_pid=$(serve "$pki/server.pem" "$pki/server.key" file)
serve_token_pid=$(serve "$pki/token.pem" pkcs11:object=TLSSERVER1 token)
started+=("$agent_pid" "$serve_file_pid" "$serve_token_pid")
for _ in $(seq 50); do [ -s "$work/serve-file.url" ] && [ -s "$work/serve-token.url" ] && break; sleep 0.1; done
BENCH_AGENT_SOCK=$work/agent/agent.sock BENCH_MODE=in-process \
    BENCH_SERVE_URL=$(head -n 1 "$work/serve-file.url") BENCH_SERVE_TOKEN_URL=$(head -n 1 "$work/serve-token.url") \
    BENCH_SERVE_PID=$serve_file_pid BENCH_SERVE_TOKEN_PID=$serve_token_pid \
    BENCH_SERVE_CA=$pki/ca.pem BENCH_SERVE_CERT=$pki/client.pem BENCH_SERVE_KEY=$pki/client.key \
    cargo bench --quiet --bench bench
kill "${started[@]}"
started=()
eval "$(scripts/softhsm-server.sh 2>/dev/null)"
# The service again, its TLS key in a file, signing through p11-kit: the token's code and
# key in the server's process, as docs/security.md advises.
serve_p11kit_pid=$(serve "$pki/server.pem" "$pki/server.key" p11-kit)
started+=("$serve_p11kit_pid")
for _ in $(seq 50); do [ -s "$work/serve-p11-kit.url" ] && break; sleep 0.1; done
BENCH_MODE=p11-kit BENCH_SERVE_URL=$(head -n 1 "$work/serve-p11-kit.url") BENCH_SERVE_PID=$serve_p11kit_pid \
    BENCH_SERVE_CA=$pki/ca.pem BENCH_SERVE_CERT=$pki/client.pem BENCH_SERVE_KEY=$pki/client.key \
    cargo bench --quiet --bench bench
kill "${started[@]}"
started=()
# One thread through p11-kit is a ping-pong between this process and the server's: how
# fast depends on whether the scheduler puts both ends on one core or on two, which it
# changes from run to run. Pinned to one core, the 1-thread ratio is stable.
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
    taskset -a -p -c 0 "$(cat "$work/server/p11-kit.pid")" >/dev/null
    BENCH_ONE_CORE=1 BENCH_MODE="p11-kit, one core" taskset -c 0 cargo bench --quiet --bench bench
fi
