#!/usr/bin/env bash
# Instructions per Check of the sidecar process, counted by callgrind, for each benchmark policy
# (part of `make bench`; skipped there with CALLGRIND=0). Also runs alone after a release build:
# `bench/callgrind.sh`.
#
# Method: the release sidecar runs under `valgrind --tool=callgrind`, pinned to SERVER_CPU. `load`
# (pinned to LOAD_CPU, not under valgrind) sends CALLGRIND_WARMUP Checks (400: more than one cycle
# of the largest mix, the edge JWT one's 300 tokens, which take 316 requests) at concurrency 1, then
# `callgrind_control --dump` writes the counts so far (start-up, compilation, warm-up) and zeroes
# them; `load` sends CALLGRIND_CHECKS Checks (1000), and a second dump holds exactly what the
# process executed from the first dump to the second: those Checks, their HTTP/2 connection set-up
# and tear-down, and whatever the idle sidecar does meanwhile (its 1 s bundle-directory poll: about
# 80k instructions a second under callgrind, under 0.5% of any figure here).
# Instructions per Check = total Ir of the second dump / CALLGRIND_CHECKS. Counts are user-space
# instructions of every thread of the process; the kernel is not counted. Caches in the sidecar
# (verified tokens, parsed key sets) are warm after the warm-up, except for the requests of the mix
# that are new by design (edge JWT: 1 in 20); the sidecar's regent_jwt_cache_* counters over the
# measured part are printed under the table to show it.
#
# Knobs: CALLGRIND_WARMUP (400), CALLGRIND_CHECKS (1000), CALLGRIND_POLICIES ("NAME:DIR ..."; NAME
# is the `load --expect` mix), SERVER_CPU (0), LOAD_CPU (1), BIN (target/release), OUT
# (target/bench). Prints a Markdown table; writes OUT/callgrind.tsv (policy, evaluator,
# instructions per Check) for run.sh's targets; the dumps stay in OUT/callgrind/ (NAME.cg.PID.2 is
# the measured part, self-contained: `callgrind_annotate --inclusive=yes FILE` reads it alone).
# Evaluations get a 60 s timeout instead of the default 100 ms, since everything runs ~50x slower
# under callgrind.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench}
WORK=$OUT/callgrind
WARM=${CALLGRIND_WARMUP:-400}
CHECKS=${CALLGRIND_CHECKS:-1000}
POLICIES=${CALLGRIND_POLICIES:-"rbac:policies/rbac edge_jwt:bench/policies/edge_jwt edge_jwt_remote:bench/policies/edge_jwt_remote bindings:bench/policies/bindings"}
mkdir -p "$WORK"
rm -f "$WORK"/*.cg.* "$OUT/callgrind.tsv"

for tool in valgrind callgrind_control; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool not found" >&2; exit 1; }
done
for b in regent-sidecar load; do
    [ -x "$BIN/$b" ] || { echo "callgrind.sh: $BIN/$b missing (cargo build --release -p regent-sidecar -p regent-bench --bins)" >&2; exit 1; }
done

SERVER_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c "${SERVER_CPU:-0}")
    LOAD_PIN=(taskset -c "${LOAD_CPU:-1}")
fi

CG_PID=
cleanup() {
    [ -n "${JWKS_PID:-}" ] && kill "$JWKS_PID" 2>/dev/null || true
    if [ -n "$CG_PID" ]; then
        kill "$CG_PID" 2>/dev/null || true
        wait "$CG_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# wait_for FILE REGEX SECONDS: the first line of FILE matching REGEX.
wait_for() {
    for _ in $(seq $(($3 * 10))); do
        if line=$(grep -m1 -E "$2" "$1" 2>/dev/null); then
            echo "$line"
            return 0
        fi
        kill -0 "$CG_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "callgrind.sh: no /$2/ in $1:" >&2
    tail -20 "$1" >&2
    return 1
}

# dump NAME PID N: asks for dump N of the process and waits until the file is complete.
dump() {
    callgrind_control --dump="$1" "$2" >/dev/null
    local f="$WORK/$1.cg.$2.$3"
    for _ in $(seq 600); do
        grep -q '^totals:' "$f" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "callgrind.sh: dump $f not written" >&2
    return 1
}

CONFIG=$WORK/sidecar.yaml
printf 'policy:\n  eval_timeout_ms: 60000\n' >"$CONFIG"
# edge_jwt_remote: the keys from a remote key set served by jwks_server (started on first use).
JWKS_PID=
JWKS_CONFIG=$WORK/sidecar.jwks.yaml
config_for() { # NAME -> $config, the config file of that policy (not in a subshell: JWKS_PID)
    if [ "$1" != edge_jwt_remote ]; then
        config=$CONFIG
        return
    fi
    if [ -z "$JWKS_PID" ]; then
        "$BIN/jwks_server" --addr 127.0.0.1:0 >"$WORK/jwks_server.out" 2>&1 &
        JWKS_PID=$!
        for _ in $(seq 100); do grep -q '^listening ' "$WORK/jwks_server.out" 2>/dev/null && break; sleep 0.1; done
        local addr
        addr=$(awk '/^listening / { print $2; exit }' "$WORK/jwks_server.out")
        printf 'policy:\n  eval_timeout_ms: 60000\nidentity:\n  jwks:\n    - issuer: "https://login.bench.example"\n      jwks_url: "http://%s/jwks"\n      min_refresh_interval_seconds: 1\n      timeout_seconds: 60\n' \
            "$addr" >"$JWKS_CONFIG"
    fi
    config=$JWKS_CONFIG
}

echo "| policy | evaluator | instructions per Check | ratio to RBAC |"
echo "|---|---|---|---|"
RBAC_IR=
NOTES=()
# jwt_cache_counts HTTP_ADDR: "CACHE/hits VALUE" and "CACHE/misses VALUE" lines of the sidecar's
# JWT cache counters (none if it has no such metrics).
jwt_cache_counts() {
    curl -fs "http://$1/metrics" | awk '/^regent_jwt_cache_(hits|misses)_total/ {
        kind = ($1 ~ /hits/) ? "hits" : "misses"; c = $1; sub(/.*cache="/, "", c); sub(/".*/, "", c)
        print c "/" kind, $2 }' || true
}
for entry in $POLICIES; do
    name=${entry%%:*}
    dir=${entry#*:}
    log=$WORK/$name.log
    config_for "$name"
    "${SERVER_PIN[@]}" valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$WORK/$name.cg.%p" \
        "$BIN/regent-sidecar" --config "$config" --bundle "$ROOT/$dir" \
        --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --log-format json \
        >"$WORK/$name.stdout" 2>"$log" &
    CG_PID=$!
    listening=$(wait_for "$log" 'regent-sidecar listening' 300)
    grpc=$(sed -E 's/.*"grpc":"([^"]+)".*/\1/' <<<"$listening")
    http=$(sed -E 's/.*"http":"([^"]+)".*/\1/' <<<"$listening")
    for _ in $(seq 3000); do
        curl -fs "http://$http/ready" >/dev/null && break
        kill -0 "$CG_PID" 2>/dev/null || break
        sleep 0.1
    done
    curl -fs "http://$http/ready" >/dev/null || {
        echo "callgrind.sh: the sidecar never became ready with $dir:" >&2
        tail -20 "$log" >&2
        exit 1
    }
    # A remote key set is fetched in the background (/ready does not wait for it): wait for it.
    if [ "$config" = "$JWKS_CONFIG" ]; then
        for _ in $(seq 3000); do
            curl -fs "http://$http/ready" | grep -q '"unavailable":false' && break
            sleep 0.1
        done
    fi
    evaluator=$(grep -m1 '"policy activated"' "$log" | sed -E 's/.*"evaluator":"([^"]+)".*/\1/')
    "${LOAD_PIN[@]}" "$BIN/load" --addr "http://$grpc" --expect "$name" --concurrency 1 \
        --requests "$WARM" --label "callgrind warm-up, $dir" >"$WORK/$name.warmup.row"
    before=$(jwt_cache_counts "$http")
    dump "$name" "$CG_PID" 1
    "${LOAD_PIN[@]}" "$BIN/load" --addr "http://$grpc" --expect "$name" --concurrency 1 \
        --requests "$CHECKS" --label "callgrind, $dir" >"$WORK/$name.measured.row"
    dump "$name" "$CG_PID" 2
    after=$(jwt_cache_counts "$http")
    cache=$(join -a2 <(sort <<<"$before") <(sort <<<"$after") |
        awk 'NF == 3 { d = $3 - $2 } NF == 2 { d = $2 } d > 0 { printf "%s%s %d", sep, $1, d; sep = ", " }')
    [ -n "$cache" ] && NOTES+=("$dir: JWT cache counters over the measured Checks: $cache.")
    ir=$(awk '/^totals:/ { print $2; exit }' "$WORK/$name.cg.$CG_PID.2")
    kill "$CG_PID"
    wait "$CG_PID" 2>/dev/null || true
    CG_PID=
    per=$(awk -v ir="$ir" -v n="$CHECKS" 'BEGIN { printf "%.0f", ir / n }')
    [ "$name" = rbac ] && RBAC_IR=$per
    ratio=$([ -n "$RBAC_IR" ] && awk -v a="$per" -v b="$RBAC_IR" 'BEGIN { printf "%.2f", a / b }' || echo "-")
    printf '%s\t%s\t%s\t%s\n' "$name" "$evaluator" "$per" "$dir" >>"$OUT/callgrind.tsv"
    echo "| $dir | $evaluator | $(awk -v p="$per" 'BEGIN { printf "%.1fk", p / 1000 }') | $ratio |"
done
echo ""
for n in "${NOTES[@]}"; do
    echo "$n"
    echo ""
done
echo "callgrind: $WARM warm-up Checks, then $CHECKS measured Checks per policy at concurrency 1; instructions per Check = Ir between two \`callgrind_control --dump\`s / $CHECKS (start-up, compilation and warm-up excluded)."
