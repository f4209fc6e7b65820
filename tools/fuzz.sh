#!/usr/bin/env bash
# `make fuzz`: builds and runs each of bundle/fuzz's targets with libFuzzer (cargo fuzz), starting
# from the committed seeds (bundle/fuzz/seeds/, see its README.md) and the dictionary.
#
# Knobs (environment):
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_SMOKE=1   the CI smoke run: 20 s per target unless FUZZ_SECONDS is set
#   FUZZ_TARGETS   the targets, in order (default: every target `cargo fuzz list` names)
#   FUZZ_TOOLCHAIN the toolchain: "nightly" (default when rustup has one) or "stable", which
#                  builds with RUSTC_BOOTSTRAP=1 (cargo fuzz's -Z flags on stable; what CI uses,
#                  since a fresh machine has only the one stable toolchain)
#   FUZZ_JOBS      extra libFuzzer arguments (e.g. "-jobs=2 -workers=2")
#
# libFuzzer works in a copy of the seeds under target/fuzz/corpus/<target> (kept between runs, so
# later runs start from what earlier ones found; the committed seeds are never written). The build
# goes to target/fuzz/build. A crash, a timeout (an input taking over 2 s: the parse budgets promise
# quick refusals) or a memory blow-up over -rss_limit_mb is a finding: the script exits non-zero
# and prints the path of the input that caused it (under target/fuzz/artifacts/<target>/).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_DIR=$ROOT/bundle/fuzz
WORK=$ROOT/target/fuzz
if [ "${FUZZ_SMOKE:-0}" = 1 ]; then
    SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
else
    SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
fi
export CARGO_INCREMENTAL=0

# cargo-fuzz, from crates.io, on first use.
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (cargo install cargo-fuzz --locked; a few minutes, once)"
    cargo install cargo-fuzz --locked
fi

# The toolchain: nightly if rustup has one, else stable with RUSTC_BOOTSTRAP=1.
TOOLCHAIN=${FUZZ_TOOLCHAIN:-}
if [ -z "$TOOLCHAIN" ]; then
    if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
        TOOLCHAIN=nightly
    else
        TOOLCHAIN=stable
    fi
fi
CARGO_FUZZ=(cargo "+$TOOLCHAIN" fuzz)
if [ "$TOOLCHAIN" = stable ]; then
    echo "== toolchain stable: building with RUSTC_BOOTSTRAP=1 (cargo fuzz's unstable -Z flags on stable)"
    export RUSTC_BOOTSTRAP=1
fi
RUSTC=(rustc "+$TOOLCHAIN")
if ! command -v rustup >/dev/null; then
    CARGO_FUZZ=(cargo fuzz)
    RUSTC=(rustc)
fi
echo "== toolchain: $("${RUSTC[@]}" --version)"

cd "$FUZZ_DIR"
# The fuzz crate is its own workspace (it needs its own build settings); starting from the main
# workspace's lock file builds the same dependency versions as the product.
[ -f Cargo.lock ] || cp "$ROOT/Cargo.lock" Cargo.lock

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    mapfile -t TARGETS < <("${CARGO_FUZZ[@]}" list)
fi
[ "${#TARGETS[@]}" -gt 0 ] || { echo "fuzz: no targets found" >&2; exit 1; }

# -max_len: the whole archive for unpack_verify (its compressed limit is 1 MiB; the seeds are a
# few KB that expand to about 1 MiB), data files up to 400 KB for data_parse. -len_control=0 lets
# mutations use that length from the start instead of growing towards it over a long run.
max_len() {
    case "$1" in
        unpack_verify) echo 1048576 ;;
        *) echo 400000 ;;
    esac
}

echo "== building ${TARGETS[*]} (release, with debug assertions and AddressSanitizer)"
for t in "${TARGETS[@]}"; do
    "${CARGO_FUZZ[@]}" build --debug-assertions --target-dir "$WORK/build" "$t"
done

FAILED=()
for t in "${TARGETS[@]}"; do
    corpus=$WORK/corpus/$t
    artifacts=$WORK/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    if [ -d "seeds/$t" ]; then
        # Copies (never links) of the committed seeds; libFuzzer adds its finds beside them.
        find "seeds/$t" -maxdepth 1 -type f -exec cp -f {} "$corpus/" \;
    fi
    log=$WORK/$t.log
    echo "== fuzzing $t for ${SECONDS_PER_TARGET}s (corpus $corpus, $(find "$corpus" -type f | wc -l) inputs; log $log)"
    # shellcheck disable=SC2086 # FUZZ_JOBS is a list of arguments
    if "${CARGO_FUZZ[@]}" run --debug-assertions --target-dir "$WORK/build" "$t" "$corpus" -- \
        -dict="$FUZZ_DIR/dict/data.dict" \
        -max_len="$(max_len "$t")" \
        -len_control=0 \
        -timeout=2 \
        -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 \
        -max_total_time="$SECONDS_PER_TARGET" \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        ${FUZZ_JOBS:-} >"$log" 2>&1; then
        status=ok
    else
        status=failed
    fi
    # libFuzzer's own summary: the last status line, and its final stats.
    grep -E '^#[0-9]+' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb|new_units_added)' "$log" || true
    if [ "$status" = failed ]; then
        tail -40 "$log" >&2
        found=$(grep -oE "Test unit written to [^ ]+" "$log" | awk '{print $NF}' | tail -1 || true)
        echo "FUZZ FINDING in $t: ${found:-see $log} (reproduce: cd bundle/fuzz && cargo +$TOOLCHAIN fuzz run --target-dir $WORK/build $t ${found:-<input>})" >&2
        FAILED+=("$t")
    fi
done

if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "fuzz: findings in ${FAILED[*]}" >&2
    exit 1
fi
echo "fuzz: no findings in ${TARGETS[*]} (${SECONDS_PER_TARGET}s each)"
