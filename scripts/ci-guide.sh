#!/usr/bin/env bash
# Follows docs/ci.md on a fresh directory: every shell block marked `ci-step` runs, in
# order, in one shell, and every block marked `ci-file PATH` is written to PATH, in a
# new Rust project that depends on this clone of p8hsm (standing in for its repository's
# URL, as P8HSM_GIT does). The environment is clean but for the Rust toolchain's.
# Run by scripts/test.sh.
#   scripts/ci-guide.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
project=$work/project
mkdir -p "$project/src" "$work/cargo"

cat >"$project/Cargo.toml" <<TOML
[package]
name = "ci-guide-example"
version = "0.0.0"
edition = "2021"
publish = false

[dev-dependencies]
p8hsm = { path = "$root" }
secrecy = "0.10"
TOML
: >"$project/src/lib.rs"

# The guide's blocks: steps into one script, files into the project.
{
    # GitHub's runners are not root and use sudo; as root here, sudo is not needed.
    [ "$(id -u)" -eq 0 ] && echo 'sudo() { "$@"; }'
    awk -v project="$project" '
        /^```sh ci-step$/ { mode = "step"; next }
        /^```rust ci-file / { mode = "file"; file = project "/" $3; system("mkdir -p \"$(dirname " file ")\""); printf "" > file; next }
        /^```/ { mode = ""; next }
        mode == "step" { print }
        mode == "file" { print >> file }
    ' docs/ci.md
} >"$work/steps.sh"
[ -f "$project/tests/sign.rs" ] || { echo "error: docs/ci.md has no ci-file block" >&2; exit 1; }
steps=$(grep -c . "$work/steps.sh")
echo "== docs/ci.md: $steps lines of ci-step blocks, run in $project"

cd "$project"
env -i HOME="$HOME" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
    PATH="$work/cargo/bin:${CARGO_HOME:-$HOME/.cargo}/bin:/usr/local/bin:/usr/bin:/bin" \
    P8HSM_GIT="file://$root" CARGO_INSTALL_ROOT="$work/cargo" CARGO_TARGET_DIR="$root/target" \
    RUNNER_TEMP="$work" DEBIAN_FRONTEND=noninteractive \
    bash -euo pipefail "$work/steps.sh"
echo "ok: every step of docs/ci.md ran"
