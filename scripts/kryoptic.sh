#!/usr/bin/env bash
# Builds Kryoptic, the PKCS#11 soft token written in Rust (crates.io), into a module p8hsm
# can load, and prints its path. A second PKCS#11 implementation for the tests, so p8hsm
# is not tuned to SoftHSM's quirks. Needs Debian's libssl-dev libsqlite3-dev libclang-dev
# pkg-config (installed when run as root). The throwaway crate lives under target/.
#   module=$(scripts/kryoptic.sh)
# With --without-ecdsa it builds one that offers no CKM_ECDSA (under another name), for
# the tests that a token which cannot sign is refused before anything is written.
set -euo pipefail
cd "$(dirname "$0")/.."
features='"dynamic", "sqlitedb", "ecdsa", "hash", "aes", "pbkdf2", "hkdf"'
name=kryoptic
if [ "${1:-}" = --without-ecdsa ]; then
    features='"dynamic", "sqlitedb", "hash", "aes", "pbkdf2", "hkdf"'
    name=kryoptic-without-ecdsa
fi

missing=()
for package in libssl-dev libsqlite3-dev libclang-dev pkg-config; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: building Kryoptic needs ${missing[*]}; hint: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

dir=$PWD/target/$name
mkdir -p "$dir/src"
cat >"$dir/Cargo.toml" <<TOML
[package]
name = "kryoptic-module"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
kryoptic = { version = "=1.5.4", default-features = false }
kryoptic-lib = { version = "=1.5.4", default-features = false, features = [$features] }
TOML
: >"$dir/src/lib.rs"
cargo build --quiet --release --manifest-path "$dir/Cargo.toml" >&2
module=$(ls "$dir"/target/release/deps/libkryoptic_pkcs11-*.so | head -n 1)
cp "$module" "$dir/libkryoptic_pkcs11.so"
echo "$dir/libkryoptic_pkcs11.so"
