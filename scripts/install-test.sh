#!/usr/bin/env bash
# p8hsm outside its repository, as a user who does not clone it would run it: installed
# with `cargo install` from a clone and from the repository's URL (here the clone's own
# file:// URL: the same git path), and from the Debian package (scripts/package.sh) with
# dpkg -i. Each installed binary runs from a directory outside the clone with a clean
# environment: its version, a fresh SoftHSM token (`p8hsm softhsm init`), an import and a
# token verified with openssl; the package's file list and its agent unit's command are
# checked too. Run by scripts/test.sh; the package part needs root.
#   scripts/install-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A signer from nothing but the installed binary BIN: softhsm init, import, token.
signs() {
    local bin=$1 dir
    dir=$(mktemp -d "$work/run.XXXX")
    (
        cd "$dir"
        clean=(env -i PATH=/usr/bin:/bin HOME="$dir")
        "${clean[@]}" "$bin" --version
        eval "$("${clean[@]}" "$bin" softhsm init --dir "$dir/softhsm" 2>/dev/null)"
        clean+=(SOFTHSM2_CONF="$SOFTHSM2_CONF" P8HSM_MODULE="$P8HSM_MODULE"
            P8HSM_TOKEN="$P8HSM_TOKEN" P8HSM_PIN_SOURCE="$P8HSM_PIN_SOURCE")
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out AuthKey_INSTALL001.p8
        "${clean[@]}" "$bin" import AuthKey_INSTALL001.p8 >/dev/null
        rm AuthKey_INSTALL001.p8
        "${clean[@]}" "$bin" pubkey --key-id INSTALL001 >public.pem
        token=$("${clean[@]}" "$bin" token connect --key-id INSTALL001 --individual)
        "$root/scripts/verify-jws.sh" "$token" public.pem >/dev/null
        echo "ok: $bin signs from $dir with a clean environment"
    )
}

echo "== cargo install --locked --path . (from a clone)"
CARGO_TARGET_DIR=$root/target cargo install --locked --quiet --path . --root "$work/clone"
signs "$work/clone/bin/p8hsm"

echo "== cargo install --locked --git URL p8hsm (the repository's URL; here the clone's file:// URL)"
CARGO_TARGET_DIR=$root/target cargo install --locked --quiet --git "file://$root" --root "$work/url" p8hsm
signs "$work/url/bin/p8hsm"

echo "== the Debian package"
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: dpkg -i needs root"
    exit 0
fi
if dpkg -s p8hsm >/dev/null 2>&1; then
    echo "skipped: a p8hsm package is installed already; this test does not replace it"
    exit 0
fi
# cargo-deb reads the binary's library needs with dpkg-shlibdeps.
command -v dpkg-shlibdeps >/dev/null || apt-get install -y -qq --no-install-recommends dpkg-dev >&2
deb=$(scripts/package.sh)
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$work/files"
for expected in /usr/bin/p8hsm /usr/share/man/man1/p8hsm.1.gz /usr/share/man/man1/p8hsm-token-connect.1.gz \
    /usr/share/man/man1/p8hsm-softhsm-init.1.gz /usr/share/bash-completion/completions/p8hsm \
    /usr/share/zsh/vendor-completions/_p8hsm /usr/share/fish/vendor_completions.d/p8hsm.fish \
    /usr/lib/systemd/user/p8hsm-agent.service /usr/lib/systemd/system/p8hsm-serve.service \
    /usr/share/doc/p8hsm/examples/agent.env \
    /usr/share/doc/p8hsm/manual.md /usr/share/doc/p8hsm/copyright; do
    grep -qx "$expected" "$work/files" || { echo "error: the package lacks $expected" >&2; exit 1; }
done
echo "ok: the package holds the binary, man pages, completions, the agent unit and the example"
dpkg -i "$deb" >/dev/null
trap 'dpkg -r p8hsm >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
signs /usr/bin/p8hsm

# The agent unit's command, as systemd would run it (%t and %h filled in), configured
# as the example says.
home=$work/home
mkdir -p "$home/.config/p8hsm" "$work/runtime"
eval "$(env -i PATH=/usr/bin:/bin /usr/bin/p8hsm softhsm init --dir "$home/softhsm" 2>/dev/null)"
sed -e "s|^SOFTHSM2_CONF=.*|SOFTHSM2_CONF=$SOFTHSM2_CONF|" \
    -e "s|^P8HSM_PIN_SOURCE=.*|P8HSM_PIN_SOURCE=$P8HSM_PIN_SOURCE|" \
    /usr/share/doc/p8hsm/examples/agent.env >"$home/.config/p8hsm/agent.env"
exec_start=$(sed -n 's/^ExecStart=//p' /usr/lib/systemd/user/p8hsm-agent.service)
exec_start=${exec_start//%t/$work/runtime}
exec_start=${exec_start//%h/$home}
(
    set -a
    # shellcheck disable=SC1091
    source "$home/.config/p8hsm/agent.env"
    set +a
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/AuthKey_AGENT00001.p8"
    /usr/bin/p8hsm import "$work/AuthKey_AGENT00001.p8" >/dev/null
    # shellcheck disable=SC2086
    $exec_start >"$work/agent.out" 2>"$work/agent.log" &
    agent=$!
    socket=$work/runtime/p8hsm/agent.sock
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
    token=$(env -i PATH=/usr/bin:/bin P8HSM_AGENT_SOCK="$socket" /usr/bin/p8hsm token apns \
        --key-id AGENT00001 --team-id A1B2C3D4E5)
    kill "$agent"
    wait "$agent" || true
    /usr/bin/p8hsm pubkey --key-id AGENT00001 >"$work/agent.pem"
    "$root/scripts/verify-jws.sh" "$token" "$work/agent.pem" >/dev/null
    echo "ok: the agent unit's command serves a token as configured by the example"
)

# The service unit's command, as systemd would run it, with a test directory for /etc/p8hsm
# and a free port for [::]:8443: its TLS key in the token, as the unit has it.
etc=$work/etc/p8hsm
mkdir -p "$etc/tls"
eval "$(env -i PATH=/usr/bin:/bin /usr/bin/p8hsm softhsm init --dir "$work/serve-softhsm" 2>/dev/null)"
printf 'SOFTHSM2_CONF=%s\nP8HSM_MODULE=%s\nP8HSM_TOKEN=%s\nP8HSM_PIN_SOURCE=%s\n' \
    "$SOFTHSM2_CONF" "$P8HSM_MODULE" "$P8HSM_TOKEN" "$P8HSM_PIN_SOURCE" >"$etc/serve.env"
(
    set -a
    source "$etc/serve.env"
    set +a
    cd "$etc/tls"
    quiet() { "$@" >/dev/null 2>&1 || { echo "error: $*" >&2; exit 1; }; }
    /usr/bin/p8hsm keygen --label tls >server-public.pem 2>/dev/null
    /usr/bin/p8hsm assign --label tls --key-id TLSSERVER1 >/dev/null
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out AuthKey_SERVE00001.p8
    /usr/bin/p8hsm import AuthKey_SERVE00001.p8 --kind developer --team-id A1B2C3D4E5 >/dev/null
    quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
        -out clients-ca.pem -subj /CN=ca -days 1
    quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout throwaway.key \
        -out server.csr -subj /CN=server
    printf 'subjectAltName=IP:127.0.0.1\n' >server.ext
    quiet openssl x509 -req -in server.csr -CA clients-ca.pem -CAkey ca.key -out server.pem -days 1 \
        -extfile server.ext -force_pubkey server-public.pem
    quiet openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key \
        -out client.csr -subj /CN=worker
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    quiet openssl x509 -req -in client.csr -CA clients-ca.pem -CAkey ca.key -out client.pem -days 1 \
        -extfile client.ext
    printf '[[caller]]\nname = "cn:worker"\nkeys = ["SERVE00001"]\nkinds = ["apns"]\n' >"$etc/policy.toml"
    exec_start=$(sed -n '/^ExecStart=/,/[^\\]$/p' /usr/lib/systemd/system/p8hsm-serve.service |
        sed -e 's/^ExecStart=//' -e 's/\\$//' | tr '\n' ' ')
    exec_start=${exec_start//\/etc\/p8hsm/$etc}
    exec_start=${exec_start//\[::\]:8443/127.0.0.1:0}
    # shellcheck disable=SC2086
    $exec_start >"$work/serve.url" 2>"$work/serve.log" &
    serve=$!
    for _ in $(seq 50); do [ -s "$work/serve.url" ] && break; sleep 0.1; done
    url=$(head -n 1 "$work/serve.url")
    token=$(curl -sS --cacert clients-ca.pem --cert client.pem --key client.key "$url/v1/tokens" \
        -d '{"kind":"apns","key_id":"SERVE00001"}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    kill -TERM "$serve"
    wait "$serve"
    /usr/bin/p8hsm pubkey --key-id SERVE00001 >"$work/serve.pem"
    "$root/scripts/verify-jws.sh" "$token" "$work/serve.pem" >/dev/null
    echo "ok: the service unit's command serves a token over HTTPS, its TLS key in the token"
)

dpkg -r p8hsm >/dev/null
[ ! -e /usr/bin/p8hsm ] || { echo "error: dpkg -r left /usr/bin/p8hsm" >&2; exit 1; }
echo "ok: dpkg -r removes it"
