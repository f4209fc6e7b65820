#!/usr/bin/env bash
# `make bench`: Check throughput/latency of the sidecar against a NOP ext_authz floor, policy
# evaluation cost (VM vs interpreter), bundle activation time, and the bundle server's long-poll
# fan-out. Not part of the tests.
# Prints Markdown tables (also saved to target/bench/results.md); figures go in BENCHMARKS.md.
#
# Knobs (environment): SECS (measured seconds per run, 10), WARMUP (2), CONCURRENCY ("1 64"),
# ROUNDS (3: the floor and the sidecar are measured in turn this many times; on a shared virtual
# machine one pair can be off by a fifth, so the ratios reported are the median round's),
# ACTIVATION_SIZES ("1 10 50", MiB of bundle data), SERVER_CPU (0), LOAD_CPU (1),
# LONGPOLL_CLIENTS (10000 parked long polls on the bundle server; 0 skips it).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
SECS=${SECS:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-"1 64"}
ROUNDS=${ROUNDS:-3}
ACTIVATION_SIZES=${ACTIVATION_SIZES:-"1 10 50"}
OUT=$ROOT/target/bench
mkdir -p "$OUT"
RESULTS=$OUT/results.md
: >"$RESULTS"

say() { echo "$@" | tee -a "$RESULTS"; }

echo "building (release)..." >&2
$CARGO build --release -p regent-sidecar -p regent-bench --bins
$CARGO build --release -p regent-sidecar --example activation_bench
BIN=$ROOT/target/release

# Server and load generator on different cores when the machine has at least two.
SERVER_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c "${SERVER_CPU:-0}")
    LOAD_PIN=(taskset -c "${LOAD_CPU:-1}")
fi

# The RBAC example policy of the policy library (the request mix in bench/src/lib.rs is written for it).
POLICY=$ROOT/policies/rbac

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# wait_for_line FILE REGEX: the first line of FILE matching REGEX (bounded: 60 s).
wait_for_line() {
    for _ in $(seq 600); do
        if line=$(grep -m1 -E "$2" "$1" 2>/dev/null); then
            echo "$line"
            return 0
        fi
        sleep 0.1
    done
    echo "timed out waiting for /$2/ in $1:" >&2
    cat "$1" >&2
    return 1
}

load_rows() { # ADDR PID EXPECT LABEL
    for c in $CONCURRENCY; do
        "${LOAD_PIN[@]}" "$BIN/load" --addr "http://$1" --server-pid "$2" --expect "$3" \
            --concurrency "$c" --secs "$SECS" --warmup "$WARMUP" --label "$4" | tee -a "$RESULTS"
    done
}

say "## Check over gRPC (closed loop, ${SECS}s measured after ${WARMUP}s warm-up; server pinned: ${SERVER_PIN[*]:-no})"
say ""
say "| server | concurrency | rps | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | server VmHWM MB |"
say "|---|---|---|---|---|---|---|---|"

start_nop() { # [--current-thread]
    "${SERVER_PIN[@]}" "$BIN/nop_authz" --addr 127.0.0.1:0 "$@" >"$OUT/nop.out" 2>&1 &
    NOP_PID=$!
    PIDS+=("$NOP_PID")
    NOP_ADDR=$(wait_for_line "$OUT/nop.out" '^listening ' | awk '{print $2}')
}

start_sidecar() {
    "${SERVER_PIN[@]}" "$BIN/regent-sidecar" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 \
        --bundle "$POLICY" --log-format json >"$OUT/sidecar.stdout" 2>"$OUT/sidecar.log" &
    SIDECAR_PID=$!
    PIDS+=("$SIDECAR_PID")
    LISTENING=$(wait_for_line "$OUT/sidecar.log" 'regent-sidecar listening')
    GRPC_ADDR=$(sed -E 's/.*"grpc":"([^"]+)".*/\1/' <<<"$LISTENING")
    HTTP_ADDR=$(sed -E 's/.*"http":"([^"]+)".*/\1/' <<<"$LISTENING")
    for _ in $(seq 300); do
        curl -fs "http://$HTTP_ADDR/ready" >/dev/null && break
        sleep 0.1
    done
    curl -fs "http://$HTTP_ADDR/ready" >/dev/null || { echo "sidecar never became ready" >&2; exit 1; }
}

# 1 and 2, in turn: the NOP floor (tonic on tokio's default multi-thread runtime, what
# `#[tokio::main]` gives), the same floor on the single-threaded scheduler (what the sidecar picks when
# it may use one CPU, as pinned here), then the sidecar with the RBAC policy.
for round in $(seq "$ROUNDS"); do
    start_nop
    load_rows "$NOP_ADDR" "$NOP_PID" allow "NOP floor (multi-thread runtime), round $round"
    kill "$NOP_PID"
    start_nop --current-thread
    load_rows "$NOP_ADDR" "$NOP_PID" allow "NOP floor (single-threaded runtime), round $round"
    kill "$NOP_PID"
    start_sidecar
    load_rows "$GRPC_ADDR" "$SIDECAR_PID" rbac "regent-sidecar, policies/rbac, round $round"
    EVALUATOR=$(grep -m1 '"policy activated"' "$OUT/sidecar.log" | sed -E 's/.*"evaluator":"([^"]+)".*/\1/')
    SCHEDULER=$(grep -m1 '"async runtime"' "$OUT/sidecar.log" | sed -E 's/.*"scheduler":"([^"]+)".*/\1/')
    kill "$SIDECAR_PID"
done
say ""
say "Sidecar evaluator for the RBAC policy: $EVALUATOR; its async runtime: $SCHEDULER. Policy: ${POLICY#"$ROOT"/}."
# Ratios to each floor per concurrency, round by round (each sidecar run against the floor runs just
# before it): throughput, and server CPU per Check (floor / sidecar), which holds up better than
# throughput when the load generator or other jobs limit the floor. The median round is the figure.
for c in $CONCURRENCY; do
    awk -F'|' -v c="$c" '
        function median(a, n,    i, j, t) {
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return a[int((n + 1) / 2)]
        }
        $3 + 0 == c && $2 ~ /NOP floor \(multi/ { mrps = $4; mcpu = $8 }
        $3 + 0 == c && $2 ~ /NOP floor \(single/ { srps = $4; scpu = $8 }
        $3 + 0 == c && $2 ~ /regent-sidecar/ && mrps > 0 && srps > 0 && $8 > 0 {
            n++; mthr[n] = $4 / mrps; mcp[n] = mcpu / $8; sthr[n] = $4 / srps; scp[n] = scpu / $8
            mrounds = mrounds sprintf(" %.2f/%.2f", mthr[n], mcp[n])
            srounds = srounds sprintf(" %.2f/%.2f", sthr[n], scp[n])
        }
        END {
            if (n > 0) {
                printf "c=%s, against the floor on the multi-thread runtime: sidecar/floor throughput %.2f, floor/sidecar CPU per Check %.2f (median of %d rounds; each round:%s)\n", c, median(mthr, n), median(mcp, n), n, mrounds
                printf "c=%s, against the floor on the single-threaded runtime: sidecar/floor throughput %.2f, floor/sidecar CPU per Check %.2f (median of %d rounds; each round:%s)\n", c, median(sthr, n), median(scp, n), n, srounds
            }
        }
    ' "$RESULTS" | tee -a "$RESULTS"
done

# 3. Policy evaluation in-process.
say ""
say "## Policy evaluation in-process (RBAC, per decision)"
say ""
say "| evaluator | eval µs | pruned input + eval + response µs | whole input + eval + response µs | compile ms |"
say "|---|---|---|---|---|"
"${LOAD_PIN[@]}" "$BIN/eval_bench" --policy "$POLICY" | tee -a "$RESULTS"

# 4. Bundle activation.
say ""
say "## Bundle activation"
say ""
say "| bundle data | bundle size (gzip) | activation (unpack, verify, compile, swap) | activation CPU | peak RSS | evaluations during the run | failed or mixed | slowest evaluation during the swap |"
say "|---|---|---|---|---|---|---|---|"
for mb in $ACTIVATION_SIZES; do
    for _ in $(seq "$ROUNDS"); do
        "$BIN/examples/activation_bench" "$mb" | tee -a "$RESULTS"
    done
done
# A revision that changes only policy, with the largest data unchanged.
for _ in $(seq "$ROUNDS"); do
    "$BIN/examples/activation_bench" "${ACTIVATION_SIZES##* }" --same-data | tee -a "$RESULTS"
done

# 5. Bundle server: long-poll fan-out (its own table; figures go in BENCHMARKS.md "Bundle server").
if [ "${LONGPOLL_CLIENTS:-10000}" -gt 0 ]; then
    say ""
    say "## Bundle server long-poll fan-out (${LONGPOLL_CLIENTS:-10000} clients)"
    say ""
    $CARGO build --release -p regent-bundle-server --example longpoll_bench
    "$BIN/examples/longpoll_bench" "${LONGPOLL_CLIENTS:-10000}" | tee -a "$RESULTS"
fi

echo "results: $RESULTS" >&2
