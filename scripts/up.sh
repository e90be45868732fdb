#!/usr/bin/env bash
# Quick start: install what is missing, build rkube, start a single-node cluster.
# Extra arguments go to `rkube server` (e.g. --data-dir /tmp/rkube --https-port 7443).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bin rkube
exec target/release/rkube server "$@"
