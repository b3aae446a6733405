#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, unit tests and end-to-end
# tests that run the real server binary. Installs nothing globally except what it says below.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artefacts live outside the clone so CI runs on the same machine stay warm.
rust_id=$(rustc -V | sha256sum | cut -c1-12)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pbs-cloud/target-$rust_id}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== build server binary for the end-to-end tests"
cargo build -p pbs-cloud-server --bins
export PBS_CLOUD_SERVER_BIN="$CARGO_TARGET_DIR/debug/pbs-cloud-server"

echo "== cargo test"
cargo test --workspace -- --test-threads=2
