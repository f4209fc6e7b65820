#!/usr/bin/env bash
# Makes sure the system tools the project's scripts use are present, installing the missing ones
# from Debian's packages when run as root on a Debian/Ubuntu machine (a fresh CI box), or saying
# exactly what to install otherwise. Quiet and quick when everything is there.
#
#   tools/debian-deps.sh git curl openssl python3-venv npm unzip prometheus
#
# Each argument is a Debian package; the command that proves it present is looked up below.
set -euo pipefail

present() {
	case "$1" in
	python3-venv) python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ;;
	# Debian's prometheus package: promtool (rule checks) and the server (e2e dashboard queries).
	prometheus) command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 ;;
	*) command -v "$1" >/dev/null 2>&1 ;;
	esac
}

missing=()
for pkg in "$@"; do
	present "$pkg" || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
	echo "debian-deps: installing ${missing[*]} (apt-get)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	for pkg in "${missing[@]}"; do
		present "$pkg" || { echo "debian-deps: $pkg was installed but is still not usable" >&2; exit 1; }
	done
	exit 0
fi
echo "debian-deps: missing ${missing[*]}; install them (on Debian: sudo apt-get install ${missing[*]})" >&2
exit 1
