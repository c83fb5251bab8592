#!/usr/bin/env bash
# The measurement harness of issue #5, in one command:
#
#   scripts/bench.sh            everything: peers, release build, micro-benchmarks, memory,
#                               every load scenario against hopcore, libcoap and aiocoap in the
#                               same run; writes results/latest.md, results/latest.svg and
#                               results/raw/ (the data they were made from)
#   scripts/bench.sh --smoke    each micro-benchmark once (criterion --test), tiny memory and
#                               load runs of every scenario; writes nothing under results/
#                               (for CI: checks that the harness still builds and runs)
#
# Every process runs on loopback (127.0.0.1). The origin and the load generator
# (target/release/hopcore-bench) are the same in every row of a scenario; only the proxy
# changes. The figure to compare is the proxy's CPU time per relayed request (utime+stime of
# the proxy process during the measured phase, /proc/PID/stat).
#
# Environment knobs:
#   HOPCORE_BENCH_PORT=57100   first port of the block of ~40 UDP ports used
#   HOPCORE_BENCH_REQUESTS=20000, HOPCORE_BENCH_DURATION=10 (s, cap per row),
#   HOPCORE_BENCH_IN_FLIGHT=8, HOPCORE_BENCH_AIOCOAP_REQUESTS=2000
#   HOPCORE_BENCH_ROUNDS=3     every scenario row this many times, interleaved (the report
#                              shows the median round and the spread)
#   HOPCORE_BENCH_SKIP_MICRO=1 skip the criterion run (keeps an existing micro.json)
#   HOPCORE_SKIP_PEERS=1       do not run scripts/setup-peers.sh (peers must be there)
#   HOPCORE_BENCH_NOTE="..."   free text for the report (e.g. what else ran on the machine)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

SMOKE=0
for a in "$@"; do
    case "$a" in
        --smoke) SMOKE=1 ;;
        -h | --help)
            sed -n '2,25p' "$0"
            exit 0
            ;;
        *)
            echo "usage: $0 [--smoke]" >&2
            exit 2
            ;;
    esac
done

T0=$SECONDS
log() { printf '[bench %4ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }

PORT="${HOPCORE_BENCH_PORT:-57100}"
if [ "$SMOKE" = 1 ]; then
    REQUESTS=300 DURATION=5 AIO_REQUESTS=60 WARMUP=20 ROUNDS=1
else
    REQUESTS="${HOPCORE_BENCH_REQUESTS:-20000}"
    DURATION="${HOPCORE_BENCH_DURATION:-10}"
    AIO_REQUESTS="${HOPCORE_BENCH_AIOCOAP_REQUESTS:-2000}"
    WARMUP=300
    ROUNDS="${HOPCORE_BENCH_ROUNDS:-3}"
fi
IN_FLIGHT="${HOPCORE_BENCH_IN_FLIGHT:-8}"

RUN="$(mktemp -d "${TMPDIR:-/tmp}/hopcore-bench.XXXXXX")"
if [ "$SMOKE" = 1 ]; then
    RAW="$RUN/raw"
    OUT="$RUN/latest"
else
    RAW="$REPO/results/raw"
    OUT="$REPO/results/latest"
fi
mkdir -p "$RAW" "$RUN/bin" "$RUN/logs"
rm -f "$RAW/load.jsonl" "$RAW/memory.json" "$RAW/env.json"

# ------------------------------------------------------------------ processes we start
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT

# start NAME CMD... : starts a process in the background, its output in $RUN/logs/NAME.log;
# sets LAST_PID.
start() {
    local name="$1"
    shift
    "$@" >"$RUN/logs/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

HOPCORE="$RUN/bin/hopcore"
GEN="$RUN/bin/hopcore-bench"

# ready ARGS... : polls `hopcore get ARGS` until it answers 2.xx (at most ~15 s).
ready() {
    local i
    for i in $(seq 60); do
        if timeout 5 "$HOPCORE" get --timeout 1 "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.25
    done
    echo "not ready: hopcore get $*" >&2
    return 1
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# Other builds/benchmarks on the machine while we measure (the note of other load).
others() {
    ps -eo pid=,comm=,pcpu= --sort=-pcpu | awk -v me="$$" '$1 != me && $3 > 5 {printf "%s(%s%%) ", $2, $3}' | head -c 300
}

# ------------------------------------------------------------------ 1. peers and build
if [ "${HOPCORE_SKIP_PEERS:-0}" != "1" ]; then
    log "scripts/setup-peers.sh"
    ./scripts/setup-peers.sh >/dev/null
fi
command -v coap-server-notls >/dev/null || { echo "coap-server-notls missing (scripts/setup-peers.sh)" >&2; exit 1; }
AIOPROXY="$REPO/.venv/bin/aiocoap-proxy"
[ -x "$AIOPROXY" ] || { echo "$AIOPROXY missing (scripts/setup-peers.sh)" >&2; exit 1; }

log "cargo build --release -p hopcore-cli -p hopcore-bench"
cargo build --release -q -p hopcore-cli -p hopcore-bench
# Private copies: the shared target/ may be rebuilt while we measure.
cp target/release/hopcore "$HOPCORE"
cp target/release/hopcore-bench "$GEN"

LOAD_BEFORE="$(loadavg)"
OTHERS_BEFORE="$(others)"

# ------------------------------------------------------------------ 2. micro-benchmarks
if [ "$SMOKE" = 1 ]; then
    log "micro-benchmarks, each once (criterion --test)"
    cargo bench -q -p hopcore-bench --bench micro -- --test >"$RUN/logs/micro.log" 2>&1 \
        || { cat "$RUN/logs/micro.log" >&2; exit 1; }
elif [ "${HOPCORE_BENCH_SKIP_MICRO:-0}" != "1" ]; then
    log "micro-benchmarks (criterion, a few minutes)"
    HOPCORE_BENCH_MICRO_OUT="$RAW/micro.json" cargo bench -q -p hopcore-bench --bench micro \
        2>&1 | tee "$RAW/micro.txt" | grep -E '^(==|layers|context derivation| +(request|response))' || true
fi

# ------------------------------------------------------------------ 2b. instruction counts
# Wall-clock medians on a shared 2-core machine move by tens of percent; instruction counts do
# not. One OSCORE exchange (4 operations) against the raw AEAD on the same bytes, per payload.
rm -f "$RAW/instructions.jsonl"
if command -v valgrind >/dev/null; then
    log "instruction counts (callgrind)"
    ir() { # ir MODE PAYLOAD ITERATIONS -> instructions
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$GEN" oscore-loop --mode "$1" --payload "$2" \
            --iterations "$3" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
    }
    N=1000 PAYLOADS="0 64 512 1024"
    [ "$SMOKE" = 1 ] && N=10 PAYLOADS=0
    for p in $PAYLOADS; do
        for m in exchange aead aead-prekeyed; do
            a="$(ir "$m" "$p" 0)"
            b="$(ir "$m" "$p" "$N")"
            printf '{"payload":%s,"mode":"%s","per_exchange":%s}\n' "$p" "$m" "$(( (b - a) / N ))" >>"$RAW/instructions.jsonl"
        done
    done
else
    log "valgrind not installed: no instruction counts"
fi

# ------------------------------------------------------------------ 3. memory
log "memory figures"
if [ "$SMOKE" = 1 ]; then
    "$GEN" memory --contexts 1000 --exchanges 100 --json "$RAW/memory.json"
else
    "$GEN" memory --contexts 100000 --exchanges 10000 --json "$RAW/memory.json"
fi

# ------------------------------------------------------------------ 4. load scenarios
# Keys (test keys, loopback only). C-S end to end, C-P client-proxy, P-S proxy-origin,
# C-Pn for the three proxies of the onion route.
SALT="hex:9e7ca92223786340"
SEC_CS="hex:0102030405060708090a0b0c0d0e0f10"
SEC_CP="hex:1112131415161718191a1b1c1d1e1f20"
SEC_PS="hex:2122232425262728292a2b2c2d2e2f30"
entry() { # entry ROLE-LINE SENDER RECIPIENT SECRET
    printf '[[context]]\n%s\nsender_id = "hex:%s"\nrecipient_id = "hex:%s"\nmaster_secret = "%s"\nmaster_salt = "%s"\n\n' \
        "$1" "$2" "$3" "$4" "$SALT"
}

P_ORIGIN=$((PORT + 1))       # hopcore server, plain
P_ORIGIN_OSC=$((PORT + 2))   # hopcore server --credentials
P_LIBCOAP_ORIGIN=$((PORT + 3))
P_HOP=$((PORT + 10))         # hopcore proxy, no contexts (a plain forward proxy)
P_HOP_OSC=$((PORT + 11))     # hopcore proxy --credentials (an OSCORE endpoint: CF-7)
P_LIBCOAP=$((PORT + 20))
P_AIO=$((PORT + 21))
P_ON1=$((PORT + 30)) P_ON2=$((PORT + 31)) P_ON3=$((PORT + 32))
P_HOP_MANY=$((PORT + 12))    # hopcore proxy --credentials with 5000 more client contexts (CF-7)
P_FLOOR=$((PORT + 40))       # hopcore-bench relay to the plain origin
P_FLOOR_OSC=$((PORT + 41))   # hopcore-bench relay to the OSCORE origin
L=127.0.0.1

C="$RUN/creds"
mkdir -p "$C"
{
    entry "peer = \":client\"" 02 01 "$SEC_CS"
    entry "peer = \":proxy\"" 04 d4 "$SEC_PS"
    entry "peer = \":proxy-many\"" 05 d5 "$SEC_PS"
} >"$C/origin.toml"
{
    entry "peer = \":client1\"" 0a 20 "$SEC_CP"
    entry "uri = \"coap://$L:$P_ORIGIN_OSC/*\"" d4 04 "$SEC_PS"
} >"$C/proxy.toml"
{
    # A proxy with many clients: 5000 more client contexts (distinct Recipient IDs), the P-S
    # context of its own (its own sequence numbers towards the origin).
    for i in $(seq 5000); do
        entry "peer = \":c$i\"" 0b "$(printf '%06x' $((0x100000 + i)))" "$SEC_CP"
    done
    entry "peer = \":client1\"" 0a 20 "$SEC_CP"
    entry "uri = \"coap://$L:$P_ORIGIN_OSC/*\"" d5 05 "$SEC_PS"
} >"$C/proxy-many.toml"
entry "uri = \"coap://$L:$P_ORIGIN_OSC/*\"" 01 02 "$SEC_CS" >"$C/client-e2e.toml"
# The same end-to-end context, addressed through the floor relay's port.
entry "uri = [\"coap://$L:$P_ORIGIN_OSC/*\", \"coap://$L:$P_FLOOR_OSC/*\"]" 01 02 "$SEC_CS" >"$C/client-floor.toml"
{
    entry "uri = \"coap://$L:$P_ORIGIN_OSC/*\"" 01 02 "$SEC_CS"
    entry "uri = [\"coap://$L:$P_HOP_OSC/*\", \"coap://$L:$P_HOP_MANY/*\"]" 20 0a "$SEC_CP"
} >"$C/client-cf7.toml"
{
    entry "uri = \"coap://$L:$P_ORIGIN_OSC/*\"" 01 02 "$SEC_CS"
    entry "uri = \"coap://$L:$P_ON1/*\"" 31 41 "$SEC_CP"
    entry "uri = \"coap://$L:$P_ON2/*\"" 32 42 "$SEC_CP"
    entry "uri = \"coap://$L:$P_ON3/*\"" 33 43 "$SEC_CP"
} >"$C/client-onion.toml"
for i in 1 2 3; do
    entry "peer = \":client\"" "4$i" "3$i" "$SEC_CP" >"$C/onion$i.toml"
done
# NSTART towards the origin: the RFC default 1 would serialise the relayed requests.
printf 'upstream_nstart = 64\n' >"$RUN/proxy.toml"

export RUST_LOG=warn NO_COLOR=1
log "starting origins and proxies on $L:$PORT+"
start origin "$HOPCORE" server --bind "$L:$P_ORIGIN"
PID_ORIGIN=$LAST_PID
start origin-oscore "$HOPCORE" server --bind "$L:$P_ORIGIN_OSC" --credentials "$C/origin.toml" --state-dir "$RUN/state-origin"
PID_ORIGIN_OSC=$LAST_PID
start libcoap-origin coap-server-notls -A "$L" -p "$P_LIBCOAP_ORIGIN"
PID_LIBCOAP_ORIGIN=$LAST_PID
start hopcore-proxy "$HOPCORE" proxy --bind "$L:$P_HOP" --config "$RUN/proxy.toml"
PID_HOP=$LAST_PID
start hopcore-proxy-oscore "$HOPCORE" proxy --bind "$L:$P_HOP_OSC" --config "$RUN/proxy.toml" \
    --credentials "$C/proxy.toml" --state-dir "$RUN/state-proxy"
PID_HOP_OSC=$LAST_PID
start hopcore-proxy-many "$HOPCORE" proxy --bind "$L:$P_HOP_MANY" --config "$RUN/proxy.toml" \
    --credentials "$C/proxy-many.toml" --state-dir "$RUN/state-proxy-many"
PID_HOP_MANY=$LAST_PID
start libcoap-proxy coap-server-notls -A "$L" -p "$P_LIBCOAP" -P ',proxy.invalid'
PID_LIBCOAP=$LAST_PID
start aiocoap-proxy "$AIOPROXY" --forward --bind "$L:$P_AIO"
PID_AIO=$LAST_PID
start floor "$GEN" relay --bind "$L:$P_FLOOR" --upstream "$L:$P_ORIGIN"
PID_FLOOR=$LAST_PID
start floor-oscore "$GEN" relay --bind "$L:$P_FLOOR_OSC" --upstream "$L:$P_ORIGIN_OSC"
PID_FLOOR_OSC=$LAST_PID
PID_ON=()
for i in 1 2 3; do
    port_var="P_ON$i"
    start "onion$i" "$HOPCORE" proxy --bind "$L:${!port_var}" --config "$RUN/proxy.toml" \
        --credentials "$C/onion$i.toml" --state-dir "$RUN/state-onion$i"
    PID_ON+=("$LAST_PID")
done

ready "coap://$L:$P_ORIGIN/hello"
ready "coap://$L:$P_ORIGIN_OSC/hello"
ready "coap://$L:$P_LIBCOAP_ORIGIN/"
ready "coap://$L:$P_FLOOR/hello"
ready "coap://$L:$P_ORIGIN/hello" --proxy "coap://$L:$P_HOP"
ready "coap://$L:$P_ORIGIN/hello" --proxy "coap://$L:$P_HOP_OSC"
ready "coap://$L:$P_ORIGIN/hello" --proxy "coap://$L:$P_HOP_MANY"
ready "coap://$L:$P_ORIGIN/hello" --proxy "coap://$L:$P_LIBCOAP"
ready "coap://$L:$P_ORIGIN/hello" --proxy "coap://$L:$P_AIO" --proxy-scheme
for i in 1 2 3; do
    port_var="P_ON$i"
    ready "coap://$L:$P_ORIGIN/hello" --proxy "coap://$L:${!port_var}"
done

# row SCENARIO IMPLEMENTATION [generator args...]
row() {
    local scenario="$1" implementation="$2"
    shift 2
    log "$scenario / $implementation"
    if ! "$GEN" --scenario "$scenario" --implementation "$implementation" --in-flight "$IN_FLIGHT" \
        --warmup "$WARMUP" --duration "$DURATION" --json "$RAW/load.jsonl" "$@" >"$RUN/logs/row.log" 2>&1; then
        cat "$RUN/logs/row.log" >&2
        echo "[bench] row failed: $scenario / $implementation" >&2
        ROW_FAILED=1
    else
        sed 's/^/    /' "$RUN/logs/row.log" >&2
    fi
}
ROW_FAILED=0

O="coap://$L:$P_ORIGIN/hello"
OO="coap://$L:$P_ORIGIN_OSC/hello"
W_O="origin=$PID_ORIGIN"
W_OO="origin=$PID_ORIGIN_OSC"

for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    # Direct: the origins alone (is the origin a bottleneck?).
    row "direct CF-0" "hopcore" --target "$O" --requests "$REQUESTS" --watch-pid "$W_O"
    row "direct CF-0" "libcoap 4.3.1" --target "coap://$L:$P_LIBCOAP_ORIGIN/" --requests "$REQUESTS" \
        --watch-pid "origin=$PID_LIBCOAP_ORIGIN"
    row "direct OSCORE" "hopcore" --target "$OO" --credentials "$C/client-e2e.toml" --state-dir "$RUN/state-client" \
        --requests "$REQUESTS" --watch-pid "$W_OO"

    # One proxy, plain CoAP (CF-0): same hopcore origin, only the proxy changes.
    row "proxy CF-0" "hopcore" --target "$O" --proxy "coap://$L:$P_HOP" --requests "$REQUESTS" \
        --watch-pid "proxy=$PID_HOP" --watch-pid "$W_O"
    row "proxy CF-0" "hopcore (OSCORE-capable)" --target "$O" --proxy "coap://$L:$P_HOP_OSC" --requests "$REQUESTS" \
        --watch-pid "proxy=$PID_HOP_OSC" --watch-pid "$W_O"
    row "proxy CF-0" "libcoap 4.3.1" --target "$O" --proxy "coap://$L:$P_LIBCOAP" --requests "$REQUESTS" \
        --watch-pid "proxy=$PID_LIBCOAP" --watch-pid "$W_O"
    row "proxy CF-0" "aiocoap 0.4.17" --target "$O" --proxy "coap://$L:$P_AIO" --proxy-scheme \
        --requests "$AIO_REQUESTS" --watch-pid "proxy=$PID_AIO" --watch-pid "$W_O"
    # The floor: the relay forwards the datagrams as they are (the generator addresses it as the
    # origin), so the origin sees the same requests.
    row "proxy CF-0" "floor (bare UDP relay)" --target "coap://$L:$P_FLOOR/hello" --requests "$REQUESTS" \
        --watch-pid "proxy=$PID_FLOOR" --watch-pid "$W_O"

    # CF-4: end-to-end OSCORE through a proxy that only forwards.
    CS=(--target "$OO" --credentials "$C/client-e2e.toml" --state-dir "$RUN/state-client")
    row "proxy CF-4" "hopcore" "${CS[@]}" --proxy "coap://$L:$P_HOP" --requests "$REQUESTS" \
        --watch-pid "proxy=$PID_HOP" --watch-pid "$W_OO"
    row "proxy CF-4" "libcoap 4.3.1" "${CS[@]}" --proxy "coap://$L:$P_LIBCOAP" --proxy-scheme --requests "$REQUESTS" \
        --watch-pid "proxy=$PID_LIBCOAP" --watch-pid "$W_OO"
    row "proxy CF-4" "aiocoap 0.4.17" "${CS[@]}" --proxy "coap://$L:$P_AIO" --proxy-scheme \
        --requests "$AIO_REQUESTS" --watch-pid "proxy=$PID_AIO" --watch-pid "$W_OO"
    row "proxy CF-4" "floor (bare UDP relay)" --target "coap://$L:$P_FLOOR_OSC/hello" \
        --credentials "$C/client-floor.toml" --state-dir "$RUN/state-client" --requests "$REQUESTS" \
        --watch-pid "proxy=$PID_FLOOR_OSC" --watch-pid "$W_OO"

    # CF-7: OSCORE on each leg (C-P, P-S) plus end to end; no peer does this.
    row "proxy CF-7" "hopcore" --target "$OO" --credentials "$C/client-cf7.toml" --state-dir "$RUN/state-client" \
        --proxy "coap://$L:$P_HOP_OSC" --requests "$REQUESTS" --watch-pid "proxy=$PID_HOP_OSC" --watch-pid "$W_OO"

    # The same with 5000 more client contexts at the proxy: does the cost depend on how many
    # clients a proxy has? (A tenth of the requests: it does, today.)
    row "proxy CF-7, 5000 more client contexts" "hopcore" --target "$OO" --credentials "$C/client-cf7.toml" \
        --state-dir "$RUN/state-client" --proxy "coap://$L:$P_HOP_MANY" --requests "$(( (REQUESTS + 9) / 10 ))" \
        --watch-pid "proxy=$PID_HOP_MANY" --watch-pid "$W_OO"

    # Onion route through three proxies (CP §2.3): a layer for each proxy plus end to end.
    row "onion 3 proxies" "hopcore" --target "$OO" --credentials "$C/client-onion.toml" \
        --state-dir "$RUN/state-client" \
        --proxy "coap://$L:$P_ON1" --proxy "coap://$L:$P_ON2" --proxy "coap://$L:$P_ON3" --requests "$REQUESTS" \
        --watch-pid "proxy1=${PID_ON[0]}" --watch-pid "proxy2=${PID_ON[1]}" --watch-pid "proxy3=${PID_ON[2]}" \
        --watch-pid "$W_OO"
done

LOAD_AFTER="$(loadavg)"
OTHERS_AFTER="$(others)"

# ------------------------------------------------------------------ 5. report
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
cat >"$RAW/env.json" <<EOF
{
  "date": $(json_str "$(date -u '+%Y-%m-%d %H:%M UTC')"),
  "nproc": $(nproc),
  "cpu": $(json_str "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"),
  "kernel": $(json_str "$(uname -sr)"),
  "commit": $(json_str "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- . ':!results' 2>/dev/null || echo '+dirty')"),
  "load_before": $(json_str "$LOAD_BEFORE"),
  "load_after": $(json_str "$LOAD_AFTER"),
  "note": $(json_str "Other processes using CPU at the start: ${OTHERS_BEFORE:-none}; at the end: ${OTHERS_AFTER:-none}. In flight: $IN_FLIGHT; rounds: $ROUNDS; requests per row: $REQUESTS (aiocoap: $AIO_REQUESTS), at most $DURATION s per row, $WARMUP warm-up requests. ${HOPCORE_BENCH_NOTE:-}")
}
EOF
"$GEN" report --raw "$RAW" --out "$OUT"
if [ "$SMOKE" = 1 ]; then
    rows="$(wc -l <"$RAW/load.jsonl")"
    log "smoke run done: $rows load rows, report rendered"
else
    log "done: results/latest.md, results/latest.svg"
fi
exit "$ROW_FAILED"
