#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installed from crates.io when missing): the
# release binary, its man pages and shell completions (generated from the command line's
# own definitions), the agent's systemd user unit and an example configuration. Prints the
# package's path on stdout.
#   scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb >&2
cargo build --release --quiet
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/p8hsm man "$assets/man"
target/release/p8hsm completions bash >"$assets/completions/p8hsm.bash"
target/release/p8hsm completions zsh >"$assets/completions/_p8hsm"
target/release/p8hsm completions fish >"$assets/completions/p8hsm.fish"
cargo deb --no-build --quiet 2>&1 | tail -n 1 | grep -E '\.deb$' || {
    echo "error: cargo deb made no package" >&2
    exit 1
}
