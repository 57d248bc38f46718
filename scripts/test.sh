#!/usr/bin/env bash
# The whole test suite: environment + release build, Rust lints and tests, Python tests.
# This is the command the README gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "==> cargo test"
cargo test --release -p hierdraft-core -p hierdraft-kernels
echo "==> pytest"
python -m pytest -q "$@"
