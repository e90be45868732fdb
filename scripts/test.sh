#!/usr/bin/env bash
# The whole test suite: unit tests, store conformance (SQLite and a real etcd), and end-to-end
# tests that drive the real kubectl and the official Python client against a started rkube.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export RUST_BACKTRACE=1
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads 4
