# Sourced by demo.sh and test.sh: makes sure the Debian packages p8hsm needs are there.
# As root it installs them with apt-get; otherwise it prints the exact command and stops.
p8hsm_packages=(softhsm2 opensc openssl p11-kit p11-kit-modules)

p8hsm_install_deps() {
    local missing=()
    command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
    command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v p11-kit >/dev/null 2>&1 || missing+=(p11-kit)
    ls /usr/lib/*/pkcs11/p11-kit-client.so >/dev/null 2>&1 || missing+=(p11-kit-modules)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "p8hsm needs: ${missing[*]}. Install them with:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y ${p8hsm_packages[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${p8hsm_packages[@]}" >&2
}

p8hsm_install_deps
