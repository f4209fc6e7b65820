#!/usr/bin/env bash
# `make bench`: Check throughput/latency of the sidecar against a NOP ext_authz floor for three
# policies (the tuned RBAC one, an edge JWT policy and a policy over 5,000 bindings), instructions
# per Check under callgrind (bench/callgrind.sh), the issue-15 targets, policy evaluation cost (VM vs
# interpreter), bundle activation time, the refusal cost of hostile bundles (issue 22), and the
# bundle server's long-poll fan-out, and the cost of uploading every decision log. Not part of the
# tests.
# Prints Markdown tables (also saved to target/bench/results.md); figures go in BENCHMARKS.md.
#
# Knobs (environment): SECS (measured seconds per run, 10), WARMUP (2), CONCURRENCY ("1 64"),
# ROUNDS (3: the floor and the sidecar are measured in turn this many times; on a shared virtual
# machine one pair can be off by a fifth, so the ratios reported are the median round's),
# ACTIVATION_SIZES ("1 10 50", MiB of bundle data), SERVER_CPU (0), LOAD_CPU (1),
# LONGPOLL_CLIENTS (10000 parked long polls on the bundle server; 0 skips it), CALLGRIND (1; 0 skips
# the callgrind counts; CALLGRIND_WARMUP and CALLGRIND_CHECKS, see bench/callgrind.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
SECS=${SECS:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-"1 64"}
ROUNDS=${ROUNDS:-3}
ACTIVATION_SIZES=${ACTIVATION_SIZES:-"1 10 50"}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/bench
mkdir -p "$OUT"
RESULTS=$OUT/results.md
: >"$RESULTS"

say() { echo "$@" | tee -a "$RESULTS"; }

echo "building (release)..." >&2
$CARGO build --release -p regent-sidecar -p regent-bench --bins
BIN=$TARGET/release
# Generated bundle data of the real-world policies (deterministic: rewritten only if it changed).
"$BIN/fixtures" "$ROOT/bench/policies"

# Server and load generator on different cores when the machine has at least two.
SERVER_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c "${SERVER_CPU:-0}")
    LOAD_PIN=(taskset -c "${LOAD_CPU:-1}")
fi

# The policies measured, as MIX:DIR (MIX: the `load --expect` request mix, bench/src/mix.rs):
# - policies/rbac: the RBAC example policy of the policy library, written for speed (the mix in
#   bench/src/lib.rs is written for it);
# - bench/policies/edge_jwt: bearer tokens verified in Rego (io.jwt.decode_verify, RS256 and ES256,
#   JWKS in data), then tenant and role claims (bench/src/edge_jwt.rs);
# - bench/policies/bindings: a scan of 5,000 role bindings in data (bench/src/bindings.rs).
# - bench/policies/edge_jwt_remote: edge_jwt with the keys from the sidecar's remote key set
#   (`jwks_issuer`; identity.jwks pointing at `jwks_server` on 127.0.0.1, the same keys).
# POLICIES (knob): the names to measure, e.g. POLICIES="edge_jwt edge_jwt_remote" (default: all).
ALL_POLICIES="rbac:policies/rbac edge_jwt:bench/policies/edge_jwt edge_jwt_remote:bench/policies/edge_jwt_remote bindings:bench/policies/bindings"
WANTED=${POLICIES:-rbac edge_jwt edge_jwt_remote bindings}
POLICIES=
for entry in $ALL_POLICIES; do
    for w in $WANTED; do [ "$w" = "${entry%%:*}" ] && POLICIES="$POLICIES $entry"; done
done
POLICY=$ROOT/policies/rbac
declare -A EVALUATOR
FAILED=()

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
            --concurrency "$c" --secs "$SECS" --warmup "$WARMUP" --label "$4" | tee -a "$RESULTS" || return 1
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

# The JWKS endpoint of edge_jwt_remote (bench/src/bin/jwks_server.rs), started on first use; the
# sidecar's config for it sets min_refresh_interval_seconds to 1 (see cold_kid below).
JWKS_URL=
sidecar_config() { # NAME -> SIDECAR_ARGS, the --config arguments for that policy (not in a
    # subshell: the JWKS server's pid must reach PIDS)
    SIDECAR_ARGS=()
    [ "$1" = edge_jwt_remote ] || return 0
    if [ -z "$JWKS_URL" ]; then
        "$BIN/jwks_server" --addr 127.0.0.1:0 >"$OUT/jwks_server.out" 2>&1 &
        PIDS+=("$!")
        JWKS_URL="http://$(wait_for_line "$OUT/jwks_server.out" '^listening ' | awk '{print $2}')/jwks"
        printf 'identity:\n  jwks:\n    - issuer: "https://login.bench.example"\n      jwks_url: "%s"\n      min_refresh_interval_seconds: 1\n' \
            "$JWKS_URL" >"$OUT/sidecar.jwks.yaml"
    fi
    SIDECAR_ARGS=(--config "$OUT/sidecar.jwks.yaml")
}

start_sidecar() { # BUNDLE_DIR [CONFIG ARGS]
    local dir=$1
    shift
    "${SERVER_PIN[@]}" "$BIN/regent-sidecar" --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 "$@" \
        --bundle "$dir" --log-format json >"$OUT/sidecar.stdout" 2>"$OUT/sidecar.log" &
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
    # A remote key set is fetched in the background (/ready does not wait for it): wait for it.
    if [ "$#" -gt 0 ] && grep -q "^identity:" "${@: -1}"; then
        for _ in $(seq 300); do
            curl -fs "http://$HTTP_ADDR/ready" | grep -q '"unavailable":false' && break
            sleep 0.1
        done
    fi
}

# 1 and 2, in turn: the NOP floor (tonic on tokio's default multi-thread runtime, what
# `#[tokio::main]` gives), the same floor on the single-threaded scheduler (what the sidecar picks when
# it may use one CPU, as pinned here), then the sidecar with each policy. A policy whose run fails
# (a gRPC error or a wrong decision) is reported and skipped; the script then exits non-zero.
for round in $(seq "$ROUNDS"); do
    start_nop
    load_rows "$NOP_ADDR" "$NOP_PID" allow "NOP floor (multi-thread runtime), round $round"
    kill "$NOP_PID"
    start_nop --current-thread
    load_rows "$NOP_ADDR" "$NOP_PID" allow "NOP floor (single-threaded runtime), round $round"
    kill "$NOP_PID"
    for entry in $POLICIES; do
        mix=${entry%%:*}
        dir=${entry#*:}
        sidecar_config "$mix"
        start_sidecar "$ROOT/$dir" "${SIDECAR_ARGS[@]}"
        EVALUATOR[$mix]=$(grep -m1 '"policy activated"' "$OUT/sidecar.log" | sed -E 's/.*"evaluator":"([^"]+)".*/\1/')
        SCHEDULER=$(grep -m1 '"async runtime"' "$OUT/sidecar.log" | sed -E 's/.*"scheduler":"([^"]+)".*/\1/')
        if ! load_rows "$GRPC_ADDR" "$SIDECAR_PID" "$mix" "regent-sidecar, $dir, round $round"; then
            say "| regent-sidecar, $dir, round $round | FAILED (see the load error above; sidecar log: target/bench/sidecar.$mix.log) |"
            FAILED+=("$dir (round $round)")
        fi
        cp "$OUT/sidecar.log" "$OUT/sidecar.$mix.log"
        kill "$SIDECAR_PID"
        wait "$SIDECAR_PID" 2>/dev/null || true
    done
done
say ""
for entry in $POLICIES; do
    say "Sidecar evaluator for ${entry#*:}: ${EVALUATOR[${entry%%:*}]:-unknown}."
done
say "The sidecar's async runtime: ${SCHEDULER:-unknown}."
# Ratios to each floor per policy and concurrency, round by round (each sidecar run against the
# floor measured at the start of its round): throughput, and server CPU per Check (floor / sidecar),
# which holds up better than throughput when the load generator or other jobs limit the floor. The
# median round is the figure; the medians also go to target/bench/ratios.tsv for the targets.
: >"$OUT/ratios.tsv"
for entry in $POLICIES; do
    dir=${entry#*:}
    for c in $CONCURRENCY; do
        awk -F'|' -v c="$c" -v pol="regent-sidecar, $dir, round" -v dir="$dir" -v tsv="$OUT/ratios.tsv" '
            function median(a, n,    i, j, t) {
                for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
                return a[int((n + 1) / 2)]
            }
            $3 + 0 == c && $2 ~ /NOP floor \(multi/ { mrps = $4; mcpu = $8 }
            $3 + 0 == c && $2 ~ /NOP floor \(single/ { srps = $4; scpu = $8 }
            $3 + 0 == c && index($2, pol) > 0 && mrps > 0 && srps > 0 && $8 > 0 {
                n++; mthr[n] = $4 / mrps; mcp[n] = mcpu / $8; sthr[n] = $4 / srps; scp[n] = scpu / $8
                mrounds = mrounds sprintf(" %.2f/%.2f", mthr[n], mcp[n])
                srounds = srounds sprintf(" %.2f/%.2f", sthr[n], scp[n])
            }
            END {
                if (n > 0) {
                    mt = median(mthr, n); mc = median(mcp, n); st = median(sthr, n); sc = median(scp, n)
                    printf "- %s, c=%s, against the floor on the multi-thread runtime: sidecar/floor throughput %.2f, floor/sidecar CPU per Check %.2f (median of %d rounds; each round:%s)\n", dir, c, mt, mc, n, mrounds
                    printf "- %s, c=%s, against the floor on the single-threaded runtime: sidecar/floor throughput %.2f, floor/sidecar CPU per Check %.2f (median of %d rounds; each round:%s)\n", dir, c, st, sc, n, srounds
                    printf "%s\t%s\tmulti\t%.2f\t%.2f\n%s\t%s\tsingle\t%.2f\t%.2f\n", dir, c, mt, mc, dir, c, st, sc >> tsv
                }
            }
        ' "$RESULTS" | tee -a "$RESULTS"
    done
done

# Observability overhead (issue 18): the RBAC policy (the fastest, so the largest relative cost)
# with every decision uploaded to an OPA decision log receiver (`upload`), and with OTLP/HTTP
# tracing at 1% and 100% sampling (`trace0.01`, `trace1.0`), to bench/src/bin/log_receiver.rs on
# 127.0.0.1, against the same sidecar with neither (`plain`), in turn, ROUNDS times. Knob: OBSERVABILITY (1; 0
# skips it).
if [ "${OBSERVABILITY:-1}" != 0 ]; then
    # On the load generator's core: the receiver stands for a service elsewhere, and its gunzip
    # and JSON parsing must not take the sidecar's core.
    "${LOAD_PIN[@]}" "$BIN/log_receiver" --addr 127.0.0.1:0 >"$OUT/log_receiver.out" 2>&1 &
    PIDS+=("$!")
    LOGS_ADDR=$(wait_for_line "$OUT/log_receiver.out" '^listening ' | awk '{print $2}')
    printf 'decision_logs:\n  upload:\n    url: "http://%s/logs"\n    min_delay_seconds: 1\n    max_delay_seconds: 1\n' \
        "$LOGS_ADDR" >"$OUT/sidecar.upload.yaml"
    for ratio in 0.01 1.0; do
        printf 'tracing:\n  exporter: otlp_http\n  endpoint: "http://%s"\n  sample_ratio: %s\n' \
            "$LOGS_ADDR" "$ratio" >"$OUT/sidecar.trace$ratio.yaml"
    done
    say ""
    say "## Observability overhead (policies/rbac; ${SECS}s measured after ${WARMUP}s warm-up)"
    say ""
    say "| server | concurrency | rps | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | server VmHWM MB |"
    say "|---|---|---|---|---|---|---|---|"
    for round in $(seq "$ROUNDS"); do
        for variant in plain upload trace0.01 trace1.0; do
            args=()
            [ "$variant" = plain ] || args=(--config "$OUT/sidecar.$variant.yaml")
            start_sidecar "$POLICY" "${args[@]}"
            before=$(curl -fs "http://$LOGS_ADDR/events")
            load_rows "$GRPC_ADDR" "$SIDECAR_PID" rbac "observability $variant, round $round" || FAILED+=("observability $variant")
            checks=$(curl -fs "http://$HTTP_ADDR/metrics" | awk '/^regent_checks_total\{/ {n += $2} END {print n + 0}')
            kill "$SIDECAR_PID"
            wait "$SIDECAR_PID" 2>/dev/null || true
            if [ "$variant" = upload ]; then
                shipped=$(( $(curl -fs "http://$LOGS_ADDR/events") - before ))
                say "| (round $round: $shipped of $checks decisions reached the receiver, the rest at shutdown or in flight) |"
            fi
        done
    done
    say ""
    for c in $CONCURRENCY; do
        awk -F'|' -v c="$c" '
            function median(a, n,    i, j, t) {
                for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
                return a[int((n + 1) / 2)]
            }
            $3 + 0 == c && $2 ~ /observability plain/ { prps = $4; pcpu = $8 }
            $3 + 0 == c && match($2, /observability [a-z0-9.]+/) && $2 !~ /plain/ && prps > 0 && $8 > 0 {
                v = substr($2, RSTART + 14, RLENGTH - 14)
                n[v]++; k = n[v]; thr[v, k] = $4 / prps; cpu[v, k] = pcpu / $8
                rounds[v] = rounds[v] sprintf(" %.2f/%.2f", thr[v, k], cpu[v, k])
            }
            END {
                for (v in n) {
                    for (i = 1; i <= n[v]; i++) { t[i] = thr[v, i]; u[i] = cpu[v, i] }
                    printf "- c=%s, %s vs neither: throughput %.2f, CPU per Check (neither/%s) %.2f (median of %d rounds; each round:%s)\n", c, v, median(t, n[v]), v, median(u, n[v]), n[v], rounds[v]
                }
            }
        ' "$RESULTS" | tee -a "$RESULTS"
    done
fi

# The cost of a cold `kid` with a remote key set (bench/src/bin/cold_kid.rs).
if [[ " $POLICIES " == *" edge_jwt_remote:"* ]]; then
    say ""
    say "## Cold kid (edge_jwt_remote: a key rotated in at the JWKS server, min_refresh_interval_seconds 1)"
    say ""
    # The default (the cold Check waits for the refresh), then 0 (it is refused at once).
    for wait in 250 0; do
        if ! "$BIN/cold_kid" --sidecar "$BIN/regent-sidecar" --bundle "$ROOT/bench/policies/edge_jwt_remote" \
            --work "$OUT/cold_kid" --gap-ms 2500 --refresh-wait-ms "$wait" | tee -a "$RESULTS"; then
            say "cold_kid --refresh-wait-ms $wait: FAILED (see the error above)"
            FAILED+=("cold_kid")
        fi
        say ""
    done
fi

# Instructions per Check under callgrind (bench/callgrind.sh).
if [ "${CALLGRIND:-1}" != 0 ]; then
    say ""
    say "## Instructions per Check (callgrind, sidecar process)"
    say ""
    rm -f "$OUT/callgrind.tsv"
    if ! BIN=$BIN OUT=$OUT CALLGRIND_POLICIES="$POLICIES" bench/callgrind.sh | tee -a "$RESULTS"; then
        say "callgrind: FAILED (see the error above)"
        FAILED+=("callgrind")
    fi
fi

# The targets of issue 15, from the medians above (throughput at c=64 against both floors) and the
# callgrind counts.
say ""
say "## Targets"
say ""
ratio_of() { # DIR C FLOOR -> median throughput ratio
    awk -F'\t' -v d="$1" -v c="$2" -v f="$3" '$1 == d && $2 == c && $3 == f { print $4 }' "$OUT/ratios.tsv"
}
ir_of() { # MIX -> instructions per Check
    [ -f "$OUT/callgrind.tsv" ] && awk -F'\t' -v m="$1" '$1 == m { print $3 }' "$OUT/callgrind.tsv"
}
verdict() { # VALUE OP LIMIT -> "met" / "not met" / "not measured"
    [ -n "$1" ] || { echo "not measured"; return; }
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { ok = (op == ">=") ? v >= l : v <= l; print ok ? "met" : "not met" }'
}
floor_target() { # DIR LABEL LIMIT C
    local m s
    m=$(ratio_of "$1" "$4" multi)
    s=$(ratio_of "$1" "$4" single)
    say "- $2 ≥ ${3}x the floor at c=$4 (throughput, median round): ${m:-?} against the multi-thread floor: **$(verdict "$m" ">=" "$3")**; ${s:-?} against the single-threaded floor: **$(verdict "$s" ">=" "$3")**"
}
ir_target() { # MIX LABEL LIMIT
    local rbac x r=
    rbac=$(ir_of rbac || true)
    x=$(ir_of "$1" || true)
    [ -n "$rbac" ] && [ -n "$x" ] && r=$(awk -v a="$x" -v b="$rbac" 'BEGIN { printf "%.2f", a / b }')
    say "- $2 ≤ ${3}x RBAC's instructions per Check: ${r:-?}x (${x:-?} against ${rbac:-?}): **$(verdict "$r" "<=" "$3")**"
}
for c in $CONCURRENCY; do
    floor_target policies/rbac "RBAC" 0.9 "$c"
done
floor_target bench/policies/edge_jwt "edge JWT" 0.6 64
ir_target edge_jwt "edge JWT (cache warm)" 2
ir_target bindings "5,000 bindings" 3

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
        "$BIN/activation_bench" "$mb" | tee -a "$RESULTS"
    done
done
# A revision that changes only policy, with the largest data unchanged.
for _ in $(seq "$ROUNDS"); do
    "$BIN/activation_bench" "${ACTIVATION_SIZES##* }" --same-data | tee -a "$RESULTS"
done

# 5. What a bundle the keyring refuses costs the sidecar's reader (issue 22: peak RSS above the
# steady state and CPU, per hostile case; bench/src/bin/refusal_cost.rs).
say ""
say "## Refusal cost of hostile bundles (\`Bundle::from_verified_tar_gz\`, default unpack limits)"
say ""
if ! "$BIN/refusal_cost" | tee -a "$RESULTS"; then
    say "refusal_cost: FAILED (see the error above)"
    FAILED+=("refusal_cost")
fi

# 6. Bundle server: long-poll fan-out (its own table; figures go in BENCHMARKS.md "Bundle server").
if [ "${LONGPOLL_CLIENTS:-10000}" -gt 0 ]; then
    say ""
    say "## Bundle server long-poll fan-out (${LONGPOLL_CLIENTS:-10000} clients)"
    say ""
    "$BIN/longpoll_bench" "${LONGPOLL_CLIENTS:-10000}" | tee -a "$RESULTS"
fi

echo "results: $RESULTS" >&2
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "FAILED: ${FAILED[*]}" >&2
    exit 1
fi
