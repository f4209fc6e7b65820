#!/usr/bin/env bash
# Runs every bundle's policy tests (`regent test DIR`) and checks every bundle directory builds
# (`regent build DIR`). Used by `make policy-test` (part of `make test`). Exit status: 0 when every
# test passes and every bundle builds, 1 otherwise.
#
# A bundle directory is any directory right under policies/ holding a .rego file. The build also
# compiles each decision path listed below exactly as a sidecar configured with it would (the rule
# must exist and call no unknown function), so a renamed rule fails here, not in production.
# Then every policies/<bundle>/checks/<decision.path>/<case>.<allowed|denied>.json (an Envoy
# CheckRequest) goes through `regent check`, i.e. the sidecar's own input builder (path parsing,
# JSON and gRPC body decoding with proto/orders.pb) and decision mapping, and must get that answer
# on both evaluators.
# REGENT=/path/to/regent skips the cargo build.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ -z "${REGENT:-}" ]]; then
	"${CARGO:-cargo}" build --quiet -p regent-bundle-server
	REGENT="${CARGO_TARGET_DIR:-$repo/target}/debug/regent"
fi

decision_paths() {
	case "$1" in
	envoy | rbac) echo envoy/authz/allow ;;
	library) echo regent/edge/allow regent/s2s/allow regent/obo/allow regent/tenants/allow \
		regent/refunds/allow regent/grpc/allow system/log/mask ;;
	esac
}

# Every check runs on both evaluators and must get the same answer on each: regorus's bytecode VM
# (`--engine vm`, which refuses a policy the VM cannot run, so a change that pushes a bundle off the
# fast path fails here) and the interpreter.
check_engines() {
	echo vm interpreter
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
for dir in policies/*/; do
	dir="${dir%/}"
	if [[ -z "$(find "$dir" -name '*.rego' -print -quit)" ]]; then
		continue
	fi
	name="$(basename "$dir")"
	echo "== $dir: tests"
	if ! "$REGENT" test "$dir"; then
		failed+=("$dir (tests)")
	fi
	echo "== $dir: bundle build"
	path_args=()
	for p in $(decision_paths "$name"); do
		path_args+=(--path "$p")
	done
	if ! "$REGENT" build "$dir" -o "$work/$name.tar.gz" "${path_args[@]}"; then
		failed+=("$dir (build)")
	fi
	for check in "$dir"/checks/*/*.json; do
		[[ -e "$check" ]] || continue
		path="$(basename "$(dirname "$check")")"
		path="${path//.//}"
		case "$check" in
		*.allowed.json) want=0 ;;
		*.denied.json) want=3 ;;
		*)
			failed+=("$check (name must end in .allowed.json or .denied.json)")
			continue
			;;
		esac
		for engine in $(check_engines "$name"); do
			got=0
			"$REGENT" check --bundle "$dir" --path "$path" --engine "$engine" \
				--proto-descriptor proto/orders.pb \
				--request "$check" >"$work/check.out" 2>&1 || got=$?
			if [[ "$got" == "$want" ]]; then
				echo "PASS check ($engine) $check"
			else
				echo "FAIL check ($engine) $check (exit $got, want $want)"
				cat "$work/check.out"
				failed+=("$check ($engine)")
			fi
		done
	done
done

if ((${#failed[@]} > 0)); then
	printf 'policy-test: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "policy-test: every bundle passed its tests and builds"
