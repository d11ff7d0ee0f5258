#!/usr/bin/env bash
# fluxrelay's whole test suite, from a fresh clone on a fresh machine (Debian, root).
# Installs what it needs (Debian packages, a Python virtualenv with moto, cfn-lint and the
# SAM CLI, and a kube-apiserver built once from Debian's source package; all cached under
# ~/.cache/fluxrelay), then runs every check CI runs. Exit status 0 means all passed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "toolchain"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
cargo --version
rustc --version

step "test environment: moto, cfn-lint, SAM CLI, kube-apiserver (cold: about 10 minutes, once; then cached)"
tests/env/setup.sh
# shellcheck source=/dev/null
. "${FLUXRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxrelay}/env.sh"

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lint (cargo clippy --all-targets -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "each Lambda function compiles alone (sam build builds one package, with only its own features)"
# The workspace build unifies features across every crate (serve turns on more of hyper, for
# one), so code that compiles there can fail in one function's own build.
for function in ingest route dispatch confirm; do
  cargo check --locked -p "fluxrelay-$function"
done

step "tests: unit, table and property tests; adapters on moto and a real kube-apiserver; end to end"
# Tests that need the apiserver re-run themselves inside a private network namespace.
cargo test --workspace --locked

step "SAM template: cfn-lint, sam validate --lint, and fluxrelay's own template checks"
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1
"$FLUXRELAY_CFN_LINT" template.yaml
"$FLUXRELAY_SAM" validate --lint -t template.yaml
"$FLUXRELAY_CACHE/venv/bin/python" tests/template/check_template.py template.yaml
"$FLUXRELAY_CACHE/venv/bin/python" tests/template/test_check_template.py
"$FLUXRELAY_CACHE/venv/bin/python" tests/template/check_docs.py

step "fuzz targets compile (their own workspace under fuzz/, so none can rot)"
# A plain check: no libFuzzer run, no sanitizer, no nightly. The targets call core's own
# functions, so a change of signature there breaks them here first.
(cd fuzz && cargo check --bins --locked)

step "benchmark smoke run (each benchmark once, so none can rot)"
cargo bench -p fluxrelay-core --locked -- --test
cargo run --locked -p fluxrelay-bench -- --smoke >/dev/null  # every stage briefly; not judged on numbers

step "done in $(( $(date +%s) - started )) s"
