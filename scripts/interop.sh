#!/usr/bin/env bash
# Interop with independent verifiers: PyJWT verifies every token kind p8hsm signs, and
# Apple's App Store Server Library (Python) builds the same tokens and signatures from
# the same key; scripts/interop.py compares headers and claim names and verifies the
# legacy signature with `cryptography`; and Apple's library's client takes its tokens
# from p8hsm's service and agent (examples/python/p8hsm_tokens.py). Installs them from PyPI into a virtual
# environment under target/. Run by scripts/test.sh.
#   scripts/interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/interop-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        echo "error: python3 cannot make a virtual environment; hint: apt-get install python3-venv" >&2
        exit 1
    }
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "PyJWT==2.15.1" "cryptography>=42" "app-store-server-library==3.1.2"

cargo build --quiet --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
eval "$(P8HSM_BIN=target/release/p8hsm P8HSM_SOFTHSM_DIR=$work scripts/softhsm-init.sh 2>/dev/null)"
umask 077
key_id=INTEROP001
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/AuthKey_$key_id.p8"
target/release/p8hsm import "$work/AuthKey_$key_id.p8" >/dev/null

# p8hsm's service (a CA, its certificate and a client's, a policy) and agent, for Apple's
# library to take tokens from.
pki=$work/pki
mkdir "$pki"
quiet() { "$@" >/dev/null 2>&1 || { echo "error: $*" >&2; exit 1; }; }
quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/ca.key" \
    -out "$pki/ca.pem" -subj /CN=interop-ca -days 1 -addext "keyUsage=critical,keyCertSign,cRLSign"
for name in server client; do
    quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/$name.key" \
        -out "$pki/$name.csr" -subj "/CN=interop-$name"
done
# Python's ssl checks strictly: the CA needs a key usage, the server's certificate an
# authority key identifier.
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\n' >"$pki/server.ext"
printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
for name in server client; do
    quiet openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
        -out "$pki/$name.pem" -days 1 -extfile "$pki/$name.ext"
done
printf '[[caller]]\nname = "cn:interop-client"\nkeys = ["%s"]\nkinds = ["server"]\n' "$key_id" >"$pki/policy.toml"
target/release/p8hsm serve --listen 127.0.0.1:0 --tls-cert "$pki/server.pem" --tls-key "$pki/server.key" \
    --client-ca "$pki/ca.pem" --policy "$pki/policy.toml" >"$work/serve.url" 2>"$work/serve.log" &
serve_pid=$!
eval "$(target/release/p8hsm agent --socket "$work/agent.sock")" >/dev/null
trap 'kill "$serve_pid" "$P8HSM_AGENT_PID" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -s "$work/serve.url" ] && break; sleep 0.1; done
export P8HSM_SERVE_URL P8HSM_SERVE_CA=$pki/ca.pem P8HSM_SERVE_CLIENT_CERT=$pki/client.pem \
    P8HSM_SERVE_CLIENT_KEY=$pki/client.key
P8HSM_SERVE_URL=$(head -n 1 "$work/serve.url")

# The key file stays only so that Apple's library, which needs the raw key, can build
# the reference tokens; it is removed with $work. The direct calls below must not go
# through the agent.
P8HSM_AGENT_SOCK_FOR_TEST=$P8HSM_AGENT_SOCK
P8HSM_AGENT_SOCK= P8HSM_AGENT_SOCK_FOR_TEST=$P8HSM_AGENT_SOCK_FOR_TEST \
    "$venv/bin/python" scripts/interop.py "$PWD/target/release/p8hsm" "$work/AuthKey_$key_id.p8" "$key_id"
