#!/usr/bin/env bash
# The queued ingest path, side by side with direct delivery, in ONE run:
#   direct  - delivery = "direct": 200 once the app answered 2xx;
#   queued  - delivery = "queued" on SQLite (WAL, synchronous=FULL, group
#             commit), the app up: 200 once the event is fsynced, delivered
#             by hookgate meanwhile;
#   ingest  - the same with the app hung (it accepts connections and never
#             answers): each attempt holds one of the 4 delivery permits for
#             upstream.timeout (4 s), so hookgate does almost nothing but
#             ingest. (An app that refuses connections is no good here: each
#             refused attempt is a lease and a settle, two more commits.)
# Each is its own `hookgate serve` (release build) pinned to CPU $SUT_CPU;
# wrk and the app stand-in (examples/bench_upstream.rs) share CPU $LOAD_CPU.
# Runs interleave the three (direct queued ingest, then reversed), so each
# run's ratio compares measurements taken seconds apart on a noisy machine.
# The two queued sidecars start afresh on an empty database for each run,
# and the queued one is restarted again right after its run, so its backlog
# is never delivered while another target is measured; after the last
# queued run, its backlog is first delivered with no load for DRAIN
# seconds: delivery on its own (reported as a lower bound when the backlog
# runs out first).
#
#   bash benches/queued/run.sh            # RUNS=4 DURATION=8 CONNS=64: about 2.5 min warm
#
# Every request is the same signed ~1 KiB popup.shown body (popup.shown is
# not deduplicated by default, so every copy is a new event; a
# popup.converted would add a dedup-key insert to the same transaction) over
# CONNS keep-alive connections, closed loop: `wrk -t1 -c$CONNS --latency`.
# Per run: req/s, p50/p99 latency (wrk's), CPU-µs per request of the
# sidecar, and for the queued ones the mean `hookgate_store_batch_size`
# and `hookgate_store_commit_seconds` over the run (deltas of _sum/_count);
# for queued, the events the app got during the run (delivered/s) and the
# backlog left. Fails if a request got anything but 200, or if hookgate
# counted an outcome other than `forwarded` (direct) or `queued` (queued,
# ingest).
#
# Output: a markdown report on stdout and in $OUT/report.md, raw rows in
# $OUT/raw.tsv. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

RUNS=${RUNS:-4}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DRAIN=${DRAIN:-4}
NICE=${NICE:--10}
# With sched autogroup, nice only counts inside a session: give this
# script's session group the same priority (as benches/load/run.sh does).
if [ -w /proc/self/autogroup ]; then echo "$NICE" > /proc/self/autogroup 2>/dev/null || true; fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/bench-queued/$(date +%Y%m%d-%H%M%S)}
# (Not HOOKGATE_*: hookgate reads every HOOKGATE_* variable as a config key.)
HG_BIN=${HG_BIN:-$TARGET_DIR/release/hookgate}
# Where the stores live (the disk whose fsync is measured).
STORE_DIR=${STORE_DIR:-/tmp}
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)

BENCH=queued/run.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

# --- tools ------------------------------------------------------------------
need_tools wrk=wrk openssl=openssl curl=curl taskset=util-linux python3=python3
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the sidecar, one for load and the app)"

log "building the release binary and the bench upstream"
timeout 1200 cargo build --release --quiet --bin hookgate --example bench_upstream
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream

mkdir -p "$OUT"
WORK=$(mktemp -d "$STORE_DIR/hookgate-queued.XXXXXX")
bench_cleanup_on_exit

# Free loopback ports (bound together, released): app, hung app, 3 x (public, admin).
read -r UP_PORT HUNG_PORT P1 A1 P2 A2 P3 A3 < <(free_ports 8)

# --- material ---------------------------------------------------------------
self_signed_cert
printf 'whsec-queued-benchmark-0123456789abcdef\n' > "$WORK/secret"
python3 "$ROOT/benches/load/body.py" "$WORK/converted.json" 1024
sed 's/"popup\.converted"/"popup.shown"/' "$WORK/converted.json" > "$WORK/body.json"
SIG=$("$HG_BIN" sign --secret-file "$WORK/secret" "$WORK/body.json")

bench_post_lua "$WORK/post.lua" "$WORK/body.json" "$SIG"

# --- the app stand-in (CPU $LOAD_CPU) ---------------------------------------
nice -n "$NICE" taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$UP_PORT/count"
# The hung app: listens, never accepts (the kernel completes the handshakes).
nice -n "$NICE" taskset -c "$LOAD_CPU" python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4096)
time.sleep(100000)' "$HUNG_PORT" &
PIDS+=("$!")

# --- three sidecars (CPU $SUT_CPU) ------------------------------------------
# $1 name, $2 port, $3 admin, $4 app URL, $5 extra route lines, $6 extra top-level
config() {
    HG_PORT=$2 HG_ADMIN=$3 HG_UPSTREAM_URL=$4 bench_hookgate_toml "$WORK/$1.toml" "" "$5" "$6"
}
config direct "$P1" "$A1" "http://127.0.0.1:$UP_PORT" "" ""
config queued "$P2" "$A2" "http://127.0.0.1:$UP_PORT" 'delivery = "queued"' \
    "[store]
engine = \"sqlite\"
path = \"$WORK/queued/events.db\""
config ingest "$P3" "$A3" "http://127.0.0.1:$HUNG_PORT" 'delivery = "queued"' \
    "[store]
engine = \"sqlite\"
path = \"$WORK/ingest/events.db\""

declare -A PID PORT ADMIN
PORT=([direct]=$P1 [queued]=$P2 [ingest]=$P3)
ADMIN=([direct]=$A1 [queued]=$A2 [ingest]=$A3)
# $1 target: (re)starts it; a queued one on an empty database.
start() {
    local t=$1
    if [ -n "${PID[$t]:-}" ]; then
        # SIGKILL: SIGTERM would wait shutdown_grace for the hung app.
        kill -9 "${PID[$t]}" 2>/dev/null || true
        wait "${PID[$t]}" 2>/dev/null || true
    fi
    if [ "$t" != direct ]; then rm -rf "${WORK:?}/$t"; mkdir -p "$WORK/$t"; fi
    nice -n "$NICE" taskset -c "$SUT_CPU" "$HG_BIN" serve -c "$WORK/$t.toml" >> "$WORK/$t.log" 2>&1 &
    PID[$t]=$!
    PIDS+=("$!")
    wait_http "http://127.0.0.1:${ADMIN[$t]}/readyz" "$WORK/$t.log"
}
for t in direct queued ingest; do start "$t"; done

# One signed request to each must be a 200 first.
for t in direct queued ingest; do
    code=$(curl -sk --max-time 5 -o "$WORK/sanity" -w '%{http_code}' \
        -H 'content-type: application/json' -H "x-coolpopup-signature: $SIG" \
        --data-binary @"$WORK/body.json" "https://127.0.0.1:${PORT[$t]}/webhooks/coolpopup")
    [ "$code" = 200 ] || die "sanity request to $t answered $code: $(cat "$WORK/sanity")"
done

# Both sanity events (direct, queued) reach the app before anything is counted.
for _ in $(seq 1 200); do [ "$(upstream_count)" -ge 2 ] && break; sleep 0.05; done
[ "$(upstream_count)" -ge 2 ] || die "the sanity events did not reach the app"

# --- measurement helpers ----------------------------------------------------
metrics() { curl -sf --max-time 5 "http://127.0.0.1:${ADMIN[$1]}/metrics"; }
# The value of one series (exact name and labels) in a metrics file; 0 if absent.
series() { awk -v s="$2" '$1 == s {v = $2} END {print (v == "" ? 0 : v)}' "$1"; }
CLK_TCK=$(getconf CLK_TCK)
OUTCOME='hookgate_requests_total{route="coolpopup",outcome="%s"}'

RAW=$OUT/raw.tsv
printf 'target\trun\trequests\tseconds\trps\tp50_ms\tp99_ms\tcpu_us_per_req\tbatch_mean\tcommit_ms_mean\tcommits\tbacklog\tdelivered_rps\n' > "$RAW"

# $1 target, $2 run ("warm" is not recorded)
run_one() {
    local t=$1 run=$2 url before after out app0 t0 t1
    url="https://127.0.0.1:${PORT[$t]}/webhooks/coolpopup"
    before=$WORK/m-before; after=$WORK/m-after
    [ "$t" = direct ] || start "$t"
    metrics "$t" > "$before"
    app0=$(upstream_count)
    t0=$(cpu_ticks "${PID[$t]}")
    out=$(timeout $((DURATION + 30)) nice -n "$NICE" taskset -c "$LOAD_CPU" \
        wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$url")
    t1=$(cpu_ticks "${PID[$t]}")
    local app1; app1=$(upstream_count)
    echo "$out" > "$OUT/wrk-$t-$run.txt"
    wrk_result "$t run $run" "$out"
    local requests=$WRK_REQUESTS dur_us=$WRK_DURATION_US p50=$WRK_P50_US p99=$WRK_P99_US
    # Up to CONNS requests are cut off when wrk stops: answered, never read.
    sleep 0.5
    metrics "$t" > "$after"
    local want counted others
    case $t in direct) want=forwarded ;; *) want=queued ;; esac
    counted=$(awk -v a="$(series "$before" "$(printf "$OUTCOME" "$want")")" \
        -v b="$(series "$after" "$(printf "$OUTCOME" "$want")")" 'BEGIN {print b - a}')
    if [ "$counted" -lt "$requests" ] || [ "$counted" -gt $((requests + CONNS)) ]; then
        die "$t run $run: hookgate counted $counted $want, wrk completed $requests"
    fi
    others=$(grep '^hookgate_requests_total{' "$after" | grep -v "outcome=\"$want\"" | awk '$2 != 0' || true)
    [ -z "$others" ] || die "$t run $run: outcomes other than $want: $others"
    local batch="-" commit="-" commits="-" backlog="-" delivered_rps="-"
    if [ "$t" != direct ]; then
        read -r batch commit commits < <(awk -v s0="$(series "$before" hookgate_store_batch_size_sum)" \
            -v s1="$(series "$after" hookgate_store_batch_size_sum)" \
            -v c0="$(series "$before" hookgate_store_batch_size_count)" \
            -v c1="$(series "$after" hookgate_store_batch_size_count)" \
            -v m0="$(series "$before" hookgate_store_commit_seconds_sum)" \
            -v m1="$(series "$after" hookgate_store_commit_seconds_sum)" \
            'BEGIN {n = c1 - c0; printf "%.1f %.2f %d\n", (s1 - s0) / (n ? n : 1), 1000 * (m1 - m0) / (n ? n : 1), n}')
    fi
    if [ "$t" = queued ]; then
        # What the app got while wrk ran, and what was left when it stopped.
        delivered_rps=$(awk -v n=$((app1 - app0)) -v us="$dur_us" 'BEGIN {printf "%.0f", n / (us / 1e6)}')
        backlog=$((counted - (app1 - app0)))
        # For the drain after the last run: what was left, and the app's count then.
        LAST_BACKLOG=$backlog; LAST_APP=$app1
    fi
    [ "$run" != warm ] || return 0
    awk -v t="$t" -v run="$run" -v n="$requests" -v us="$dur_us" -v p50="$p50" -v p99="$p99" \
        -v ticks=$((t1 - t0)) -v hz="$CLK_TCK" -v b="$batch" -v c="$commit" -v k="$commits" \
        -v bl="$backlog" -v dr="$delivered_rps" \
        'BEGIN {s = us / 1e6; printf "%s\t%s\t%d\t%.2f\t%.0f\t%.2f\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\n",
            t, run, n, s, n / s, p50 / 1000, p99 / 1000, ticks / hz * 1e6 / n, b, c, k, bl, dr}' >> "$RAW"
}

# After a queued run its sidecar is restarted on an empty database (`start
# queued`): left running, it would deliver its backlog (100,000 events and
# more) while the next targets are measured, taking CPU from them on the
# same core and from the app. (Before this, every direct run but the first
# was measured beside that delivery, which inflated queued/direct.)
log "warm-up (2 s each)"
SAVED=$DURATION; DURATION=2
for t in direct queued ingest; do run_one "$t" warm; done
start queued
DURATION=$SAVED
DRAIN_RPS=
DRAIN_NOTE=
LAST_BACKLOG=0; LAST_APP=0
for run in $(seq 1 "$RUNS"); do
    order="direct queued ingest"
    [ $((run % 2)) = 0 ] && order="ingest queued direct"
    for t in $order; do
        log "run $run/$RUNS: $t (${DURATION}s, $CONNS connections)"
        run_one "$t" "$run"
        [ "$t" = queued ] || continue
        if [ "$run" = "$RUNS" ]; then
            # Delivery alone: this run's backlog, with no load, for DRAIN s.
            log "delivery with no load: ${DRAIN}s"
            d0=$(upstream_count); sleep "$DRAIN"; d1=$(upstream_count)
            DRAIN_RPS=$(( (d1 - d0) / DRAIN ))
            # Delivered since the run ended, against what it left: if the
            # backlog ran out within DRAIN s, the rate is only a lower bound.
            if [ $((d1 - LAST_APP)) -ge "$LAST_BACKLOG" ]; then
                DRAIN_NOTE=" (**a lower bound**: the backlog of $LAST_BACKLOG ran out within $DRAIN s; set DRAIN lower)"
            fi
        fi
        start queued
    done
done
LOAD_AFTER=$(cut -d" " -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------
python3 - "$RAW" "$OUT/report.md" <<EOF
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows:
    by.setdefault(r["target"], []).append(r)
med = lambda t, k: statistics.median(float(r[k]) for r in by[t])
runs = sorted({r["run"] for r in rows}, key=int)
rps = {(r["target"], r["run"]): float(r["rps"]) for r in rows}
out = []
w = out.append
w("## Queued ingest vs direct delivery")
w("")
w("$(date -u +%Y-%m-%dT%H:%MZ), \`bash benches/queued/run.sh\` (RUNS=$RUNS DURATION=$DURATION CONNS=$CONNS),")
w("$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), sidecar on CPU $SUT_CPU,")
w("wrk + app on CPU $LOAD_CPU; load average before $LOAD_BEFORE, after $LOAD_AFTER;")
w("stores on $(df -T "$WORK" | awk 'NR==2 {print $2 " (" $1 ")"}').")
w("")
w("| target | req/s (median) | p50 ms | p99 ms | CPU-µs/req | batch mean | commit ms | delivered/s during the run | backlog at stop |")
w("|---|---|---|---|---|---|---|---|---|")
for t in ("direct", "queued", "ingest"):
    rs = by[t]
    def m(k):
        v = [float(r[k]) for r in rs if r[k] != "-"]
        return statistics.median(v) if v else None
    f = lambda v, p="%.0f": "-" if v is None else p % v
    w(f"| {t} | {f(m('rps'))} | {f(m('p50_ms'), '%.2f')} | {f(m('p99_ms'), '%.2f')} | {f(m('cpu_us_per_req'))} | {f(m('batch_mean'), '%.1f')} | {f(m('commit_ms_mean'), '%.2f')} | {f(m('delivered_rps'))} | {f(m('backlog'))} |")
w("")
w("Per-run ratios of req/s (each pair measured seconds apart):")
w("")
w("| run | direct | queued | ingest | queued/direct | ingest/direct |")
w("|---|---|---|---|---|---|")
qd, idr = [], []
for run in runs:
    d, q, i = rps[("direct", run)], rps[("queued", run)], rps[("ingest", run)]
    qd.append(q / d); idr.append(i / d)
    w(f"| {run} | {d:.0f} | {q:.0f} | {i:.0f} | {q/d:.2f} | {i/d:.2f} |")
w(f"| median | | | | **{statistics.median(qd):.2f}** | **{statistics.median(idr):.2f}** |")
w("")
w("Delivery on its own (the last queued run's backlog, no load, $DRAIN s, right after that run): $DRAIN_RPS events/s to the app$DRAIN_NOTE.")
text = "\n".join(out) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
log "raw rows: $RAW; wrk outputs: $OUT/wrk-*.txt"
