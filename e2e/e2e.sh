#!/usr/bin/env bash
# `make e2e`: end-to-end scenarios through a real Envoy (e2e/tests/*.rs).
# Installs Envoy into .venv on first use, builds the real binaries, then runs the scenarios.
# Logs of a scenario that fails are kept under e2e/.work/<scenario>-*/logs and their tails printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO="${CARGO:-cargo}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The post-receive hook signs its webhook call with curl and openssl; repositories need git.
tools/debian-deps.sh git curl openssl prometheus
ENVOY="$(e2e/envoy.sh)"

"$CARGO" build -p regent-bundle-server -p regent-sidecar --bins

export REGENT_E2E_ENVOY="$ENVOY"
export REGENT_BIN="$TARGET_DIR/debug/regent"
export REGENT_SIDECAR_BIN="$TARGET_DIR/debug/regent-sidecar"
# Each scenario starts its own Envoy, sidecar, bundle server and upstreams; two at a time keeps a
# 2-core CI machine busy without starving any one scenario.
export RUST_TEST_THREADS="${REGENT_E2E_THREADS:-2}"
# Arguments go to cargo test, e.g. `e2e/e2e.sh --test rollout -- --nocapture`.
exec "$CARGO" test -p regent-e2e "$@"
