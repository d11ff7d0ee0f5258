#!/usr/bin/env bash
# fluxrelay's whole test suite, from a fresh clone on a fresh machine.
# Installs what it needs, then runs every check CI runs. Exit status 0 means all passed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "toolchain"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
cargo --version
rustc --version

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lint (cargo clippy --all-targets -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit, table and property tests (cargo test)"
cargo test --workspace --locked

step "benchmark smoke run (each benchmark once, so none can rot)"
cargo bench -p fluxrelay-core --locked -- --test

step "done in $(( $(date +%s) - started )) s"
