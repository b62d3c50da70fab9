# Sourced by demo.sh and test.sh: makes sure the Debian packages p8hsm needs are there
# (test.sh sets p8hsm_for_tests=1 first: the other PKCS#11 implementations it tests on).
# As root it installs them with apt-get; otherwise it prints the exact command and stops.
p8hsm_packages=(softhsm2 opensc openssl p11-kit p11-kit-modules)
p8hsm_test_packages=(libnss3 libnss3-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools swtpm tpm2-abrmd
    libtss2-tcti-tabrmd0 tpm2-tools dbus-daemon opencryptoki gnome-keyring gnome-keyring-pkcs11)

p8hsm_install_deps() {
    local missing=()
    command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
    command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v p11-kit >/dev/null 2>&1 || missing+=(p11-kit)
    ls /usr/lib/*/pkcs11/p11-kit-client.so >/dev/null 2>&1 || missing+=(p11-kit-modules)
    if [ "${p8hsm_for_tests:-}" = 1 ]; then
        local tool
        for tool in certutil tpm2_ptool swtpm tpm2-abrmd tpm2_getrandom dbus-daemon pkcsslotd \
            gnome-keyring-daemon; do
            command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null 2>&1 ||
                missing+=("$tool")
        done
        ls /usr/lib/*/libsoftokn3.so /usr/lib/*/libtss2-tcti-tabrmd.so.0 \
            /usr/lib/*/pkcs11/gnome-keyring-pkcs11.so >/dev/null 2>&1 ||
            missing+=(libnss3 libtss2-tcti-tabrmd0 gnome-keyring-pkcs11)
        [ ${#missing[@]} -eq 0 ] || p8hsm_packages+=("${p8hsm_test_packages[@]}")
    fi
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
