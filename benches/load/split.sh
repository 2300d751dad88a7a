#!/usr/bin/env bash
# Where does hookgate's gap to nginx lie: on the side facing the provider
# (TLS, HTTP parsing, the answer) or on the hop to the app? One run,
# interleaving four targets, each a closed-loop `wrk -t1 -c$CONNS` of
# $DURATION s, the system under test pinned to CPU $SUT_CPU, wrk and the
# upstream to CPU $LOAD_CPU, no per-request logging on either side:
#   nginx-proxy  nginx proxying the signed 1 KiB POST to the upstream (as run.sh's (b))
#   nginx-local  nginx answering the same POST itself (`return 200`; it
#                reads and discards the body): TLS + HTTP, no upstream
#   hg-proxy     hookgate verifying and forwarding it (as run.sh's (c))
#   hg-ack       hookgate verifying an authentic event it does not know
#                (`popup.tested`) and answering 200 `acknowledged` itself
#                (routes[].unknown_events = "acknowledge"): TLS + HTTP +
#                HMAC + JSON, no upstream
# proxy − local is then each side's cost of the hop to the app.
#
#   bash benches/load/split.sh            # RUNS=6 DURATION=4 CONNS=64
#
# Reports per target the median req/s and CPU-µs per request (utime+stime
# of the target's processes ÷ requests; stime alone: the kernel's share)
# and, from the medians, the hop's cost on each side, split into kernel
# and user space. Fails if any request got a non-2xx, if the upstream
# did not receive each forwarded request, or if hookgate counted an outcome
# other than the expected one. Output: $OUT/report.md and $OUT/raw.tsv.
# About RUNS × 4 × (DURATION + 1) s after the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${RUNS:-6}
DURATION=${DURATION:-4}
CONNS=${CONNS:-64}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NICE=${NICE:--10}
if [ -w /proc/self/autogroup ]; then echo "$NICE" > /proc/self/autogroup 2>/dev/null || true; fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HG_BIN=${HG_BIN:-$TARGET_DIR/release/hookgate}
OUT=${OUT:-$TARGET_DIR/bench-split/$(date +%Y%m%d-%H%M%S)}

BENCH=split.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
need_tools nginx=nginx-light wrk=wrk openssl=openssl curl=curl taskset=util-linux python3=python3
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the system under test, one for load)"

log "building the release binary and the bench upstream"
timeout 900 cargo build --release --quiet --bin hookgate --example bench_upstream
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hookgate-split.XXXXXX)
bench_cleanup_on_exit
read -r UP_PORT NGINX_PORT HG_PORT HG_ADMIN < <(free_ports 4)

self_signed_cert
printf 'whsec-load-benchmark-0123456789abcdef\n' > "$WORK/secret"
python3 "$ROOT/benches/load/body.py" "$WORK/known.json" 1024
sed 's/"popup\.converted"/"popup.tested"/' "$WORK/known.json" > "$WORK/unknown.json"
grep -q '"popup.tested"' "$WORK/unknown.json" || die "body.py's body has no popup.converted event to rename"
for kind in known unknown; do
    sig=$("$HG_BIN" sign --secret-file "$WORK/secret" "$WORK/$kind.json")
    bench_post_lua "$WORK/$kind.lua" "$WORK/$kind.json" "$sig"
done

nice -n "$NICE" taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$UP_PORT/count"

bench_nginx_conf "$WORK/nginx.conf" off '
        location = /local {
            default_type application/json;
            return 200 "{\"status\":\"acknowledged\"}";
        }'
nice -n "$NICE" taskset -c "$SUT_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" > "$WORK/nginx.out" 2>&1 &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")

# One body repeated: forwarded each time, not answered "duplicate".
HG_LOG_LEVEL=warn bench_hookgate_toml "$WORK/hookgate.toml" "" 'unknown_events = "acknowledge"
dedup_events = []'
nice -n "$NICE" taskset -c "$SUT_CPU" "$HG_BIN" serve -c "$WORK/hookgate.toml" > "$WORK/hookgate.log" 2>&1 &
HG_PID=$!
PIDS+=("$HG_PID")
wait_http "http://127.0.0.1:$HG_ADMIN/readyz" "$WORK/hookgate.log"
for _ in $(seq 1 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.05; done
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)
[ -n "$NGINX_WORKER" ] || die "nginx did not start: $(cat "$WORK/nginx-error.log")"

# name | processes | URL | body | forwarded to the upstream | hookgate outcome
TARGETS=(
    "nginx-proxy|$NGINX_MASTER $NGINX_WORKER|https://127.0.0.1:$NGINX_PORT/webhooks/coolpopup|known|yes|"
    "nginx-local|$NGINX_MASTER $NGINX_WORKER|https://127.0.0.1:$NGINX_PORT/local|known|no|"
    "hg-proxy|$HG_PID|https://127.0.0.1:$HG_PORT/webhooks/coolpopup|known|yes|forwarded"
    "hg-ack|$HG_PID|https://127.0.0.1:$HG_PORT/webhooks/coolpopup|unknown|no|acknowledged"
)
hg_count() { # requests hookgate answered with outcome $1
    curl -sf --max-time 2 "http://127.0.0.1:$HG_ADMIN/metrics" \
        | awk -v o="outcome=\"$1\"" '/^hookgate_requests_total\{/ && index($0, o) {s += $NF} END {printf "%d\n", s}'
}

RAW=$OUT/raw.tsv
printf 'run\ttarget\trequests\tseconds\tticks\thz\tsys_ticks\n' > "$RAW"
# $1 run ("warm" is not recorded), then one TARGETS entry.
measure() {
    local run=$1 name pids url body fwd outcome up0 up1 hg0 hg1 u0 s0 u1 s1 out requests
    IFS='|' read -r name pids url body fwd outcome <<< "$2"
    up0=$(upstream_count); [ -z "$outcome" ] || hg0=$(hg_count "$outcome")
    # shellcheck disable=SC2086
    read -r u0 s0 <<< "$(cpu_ticks_split $pids)"
    out=$(timeout $((DURATION + 30)) nice -n "$NICE" taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$WORK/$body.lua" "$url")
    # shellcheck disable=SC2086
    read -r u1 s1 <<< "$(cpu_ticks_split $pids)"
    wrk_result "$name run $run" "$out"
    requests=$WRK_REQUESTS
    sleep 0.3 # requests cut off at the end of the run settle
    up1=$(upstream_count)
    if [ "$fwd" = yes ]; then
        # Up to CONNS requests were in flight when wrk stopped.
        if [ $((up1 - up0)) -lt "$requests" ] || [ $((up1 - up0)) -gt $((requests + CONNS)) ]; then
            die "$name run $run: the upstream received $((up1 - up0)), the client completed $requests"
        fi
    else
        [ "$up1" = "$up0" ] || die "$name run $run: the upstream received $((up1 - up0)) requests"
    fi
    if [ -n "$outcome" ]; then
        hg1=$(hg_count "$outcome")
        [ $((hg1 - hg0)) -ge "$requests" ] || die "$name run $run: hookgate counted $((hg1 - hg0)) $outcome, the client completed $requests"
    fi
    [ "$run" != warm ] || return 0
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$name" "$requests" "$DURATION" \
        "$((u1 - u0 + s1 - s0))" "$(getconf CLK_TCK)" "$((s1 - s0))" >> "$RAW"
    log "run $run $name: $((requests / DURATION)) req/s"
}

LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)
for t in "${TARGETS[@]}"; do measure warm "$t"; done
for run in $(seq 1 "$RUNS"); do
    for t in "${TARGETS[@]}"; do measure "$run" "$t"; done
done

python3 - "$RAW" "$LOAD_BEFORE" "$HG_BIN" > "$OUT/report.md" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
names = ["nginx-proxy", "nginx-local", "hg-proxy", "hg-ack"]
rps, cpu, ker = {}, {}, {}
for n in names:
    rs = [r for r in rows if r["target"] == n]
    rps[n] = statistics.median(int(r["requests"]) / float(r["seconds"]) for r in rs)
    cpu[n] = statistics.median(int(r["ticks"]) / int(r["hz"]) * 1e6 / int(r["requests"]) for r in rs)
    ker[n] = statistics.median(int(r["sys_ticks"]) / int(r["hz"]) * 1e6 / int(r["requests"]) for r in rs)
runs = len({r["run"] for r in rows})
print(f"# Where the gap lies: {runs} runs, load average before {sys.argv[2]}, {sys.argv[3]}\n")
print("| target | req/s (median) | CPU-µs / request (median) | of which in the kernel |")
print("|---|---|---|---|")
for n in names:
    print(f"| {n} | {rps[n]:,.0f} | {cpu[n]:.1f} | {ker[n]:.1f} |")
print()
print("| the hop to the app (proxy − local), CPU-µs / request | nginx | hookgate |")
print("|---|---|---|")
print(f"| all | {cpu['nginx-proxy'] - cpu['nginx-local']:.1f} | {cpu['hg-proxy'] - cpu['hg-ack']:.1f} |")
print(f"| in the kernel | {ker['nginx-proxy'] - ker['nginx-local']:.1f} | {ker['hg-proxy'] - ker['hg-ack']:.1f} |")
print(f"| in user space | {cpu['nginx-proxy'] - cpu['nginx-local'] - ker['nginx-proxy'] + ker['nginx-local']:.1f} | "
      f"{cpu['hg-proxy'] - cpu['hg-ack'] - ker['hg-proxy'] + ker['hg-ack']:.1f} |")
print()
print(f"hg-ack / nginx-local: throughput {rps['hg-ack'] / rps['nginx-local']:.2f}, CPU {cpu['hg-ack'] / cpu['nginx-local']:.2f}; "
      f"hg-proxy / nginx-proxy: throughput {rps['hg-proxy'] / rps['nginx-proxy']:.2f}, CPU {cpu['hg-proxy'] / cpu['nginx-proxy']:.2f}")
PY
cat "$OUT/report.md"
