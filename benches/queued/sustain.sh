#!/usr/bin/env bash
# Does delivery keep up? A queued route on SQLite with the app up, fed in
# OPEN loop at fixed rates: the provider sends what it sends, and what the
# sidecar takes in it must also bring to the app, on the same core. For
# each rate, one fresh `hookgate serve` (release build, pinned to CPU
# $SUT_CPU, a new database) takes DURATION seconds of distinct signed
# popup.shown bodies (examples/queued_load.rs, 64 connections, latency from
# when each request was due) while the app stand-in
# (examples/bench_upstream.rs) counts what it gets; both on CPU $LOAD_CPU.
# "behind" is what was answered 200 and not yet at the app when the load
# stopped: a rate the sidecar sustains leaves only what is in flight
# (a few hundred events); one it does not leaves a backlog that grows with
# DURATION.
#
# With ALT_BIN set, the two binaries alternate at every rate (HG_BIN first),
# so each pair is measured seconds apart on a noisy machine.
#
#   bash benches/queued/sustain.sh                                # RATES="5000 7000 8500 10000" RUNS=2 DURATION=20
#   HG_BIN=new ALT_BIN=old RATES="7000 8500" bash benches/queued/sustain.sh
#
# Output: a markdown report on stdout and in $OUT/report.md, raw rows in
# $OUT/raw.tsv. Fails if a request got anything but 200 queued. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

RATES=${RATES:-5000 7000 8500 10000}
RUNS=${RUNS:-2}
DURATION=${DURATION:-20}
CONNS=${CONNS:-64}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NICE=${NICE:--10}
if [ -w /proc/self/autogroup ]; then echo "$NICE" > /proc/self/autogroup 2>/dev/null || true; fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/bench-sustain/$(date +%Y%m%d-%H%M%S)}
# (Not HOOKGATE_*: hookgate reads every HOOKGATE_* variable as a config key.)
HG_BIN=${HG_BIN:-$TARGET_DIR/release/hookgate}
ALT_BIN=${ALT_BIN:-}
STORE_DIR=${STORE_DIR:-/tmp}

BENCH=queued/sustain.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

need_tools openssl=openssl curl=curl taskset=util-linux python3=python3
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the sidecar, one for load and the app)"

log "building the release binary, the bench upstream and the load client"
timeout 1500 cargo build --release --quiet --bin hookgate --example bench_upstream --example queued_load
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream
LOAD_BIN=$TARGET_DIR/release/examples/queued_load
BINS=("$HG_BIN")
[ -z "$ALT_BIN" ] || BINS+=("$ALT_BIN")
for b in "${BINS[@]}"; do [ -x "$b" ] || die "no binary at $b"; done

mkdir -p "$OUT"
WORK=$(mktemp -d "$STORE_DIR/hookgate-sustain.XXXXXX")
bench_cleanup_on_exit
read -r UP_PORT HG_PORT HG_ADMIN < <(free_ports 3)
self_signed_cert
printf 'whsec-sustain-benchmark-0123456789abcdef\n' > "$WORK/secret"

nice -n "$NICE" taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$UP_PORT/count"

HG_LOG_LEVEL=warn bench_hookgate_toml "$WORK/hookgate.toml" "" 'delivery = "queued"' "[store]
engine = \"sqlite\"
path = \"$WORK/db/events.db\""

RAW=$OUT/raw.tsv
printf 'build\trate\trun\tqueued\tdelivered\tbehind\tp50_ms\tp99_ms\tp999_ms\tcpu_us_per_event\n' > "$RAW"
CLK_TCK=$(getconf CLK_TCK)

# $1 binary, $2 rate, $3 run: one measurement, one row in $RAW.
measure() {
    local bin=$1 rate=$2 run=$3 pid a0 a1 t0 t1 out
    rm -rf "$WORK/db"; mkdir -p "$WORK/db"
    nice -n "$NICE" taskset -c "$SUT_CPU" "$bin" serve -c "$WORK/hookgate.toml" > "$WORK/hg.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$HG_ADMIN/readyz" "$WORK/hg.log"
    a0=$(upstream_count); t0=$(cpu_ticks "$pid")
    out=$(timeout $((DURATION + 60)) nice -n "$NICE" taskset -c "$LOAD_CPU" "$LOAD_BIN" \
        "127.0.0.1:$HG_PORT" /webhooks/coolpopup "$WORK/secret" insecure "$CONNS" 0 "$DURATION" \
        "$rate" "s$run-$rate-$RANDOM" popup.shown) \
        || die "$(basename "$bin") at $rate/s: queued_load: $out"
    a1=$(upstream_count); t1=$(cpu_ticks "$pid")
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    python3 - "$out" "$bin" "$rate" "$run" "$((a1 - a0))" "$((t1 - t0))" "$CLK_TCK" >> "$RAW" <<'EOF'
import json, sys
d = json.loads(sys.argv[1])
bin_, rate, run, delivered, ticks, tck = sys.argv[2:8]
queued = d["queued"]
us = int(ticks) / int(tck) * 1e6 / max(queued, 1)
print(f"{bin_}\t{rate}\t{run}\t{queued}\t{delivered}\t{queued - int(delivered)}\t"
      f"{d['p50_ms']:.2f}\t{d['p99_ms']:.2f}\t{d['p999_ms']:.2f}\t{us:.0f}")
EOF
    tail -1 "$RAW" | awk -F'\t' -v b="$(basename "$bin")" \
        '{printf "  %s at %s/s: queued %s, delivered %s, behind %s, ack p99 %s ms\n", b, $2, $4, $5, $6, $8}' >&2
}

for run in $(seq 1 "$RUNS"); do
    for rate in $RATES; do
        for bin in "${BINS[@]}"; do
            log "run $run/$RUNS: $(basename "$bin") at $rate/s for ${DURATION}s"
            measure "$bin" "$rate" "$run"
        done
    done
done

python3 - "$RAW" "$OUT/report.md" <<EOF
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
out = []
w = out.append
w("## benches/queued/sustain.sh ($(date -u +%Y-%m-%dT%H:%MZ))")
w("")
w("Open loop, ${DURATION} s a run, ${CONNS} connections, SQLite, the app up; "
  "HG_BIN=${HG_BIN}${ALT_BIN:+, ALT_BIN=$ALT_BIN}. Per run: events answered 200 queued, "
  "delivered to the app meanwhile, and behind (answered, not yet delivered) when the load stopped.")
w("")
w("| build | rate/s | run | queued | delivered | behind | ack p50 / p99 / p99.9 ms | CPU-µs/event |")
w("|---|---|---|---|---|---|---|---|")
for r in rows:
    w(f"| {r['build'].rsplit('/', 1)[-1]} | {r['rate']} | {r['run']} | {r['queued']} | {r['delivered']} "
      f"| {r['behind']} | {r['p50_ms']} / {r['p99_ms']} / {r['p999_ms']} | {r['cpu_us_per_event']} |")
w("")
text = "\n".join(out) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
log "raw rows: $RAW"
