#!/usr/bin/env bash
# hookgate's RSS with $KEYS (default 1,000,000) in-memory dedup keys: a
# direct route (no [store]), `[dedup] max_keys = $KEYS`, the app
# (examples/bench_upstream) answering 200, and examples/queued_load sending
# signed popup.converted POSTs whose every body is distinct (its own
# campaign_id), so each delivered one leaves a key in MemoryKeys. It sends in
# chunks of $CHUNK s (closed loop, $CONNS TLS connections) until hookgate
# counts at least $KEYS `forwarded`, then reads the sidecar's VmRSS and VmHWM
# from /proc. Keys past max_keys would evict the oldest: the script reports
# hookgate_dedup_evictions_total, so "keys held" = forwarded - evictions.
#
#   bash benches/load/dedup_memory.sh            # KEYS=1000000
#   HG_BIN=/path/to/other/hookgate bash benches/load/dedup_memory.sh
#
# Not a timing benchmark: RSS does not depend on how busy the machine is.
# Output: markdown on stdout and in $OUT/dedup-memory.md, the RSS after each
# chunk in $OUT/rss.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

KEYS=${KEYS:-1000000}
CONNS=${CONNS:-32}
CHUNK=${CHUNK:-20}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
UP_PORT=${UP_PORT:-28080}
HG_PORT=${HG_PORT:-28444}
HG_ADMIN=${HG_ADMIN:-29901}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/bench-load/dedup-memory-$(date +%Y%m%d-%H%M%S)}
HG_BIN=${HG_BIN:-}

BENCH=dedup_memory.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

log "building the release binary, the bench upstream and the load client"
timeout 900 cargo build --release --quiet --bin hookgate --example bench_upstream --example queued_load
# Copied at once: a target directory shared with other checkouts may be
# rebuilt from other sources while this runs.
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hookgate-dedupmem.XXXXXX)
cp "$TARGET_DIR/release/examples/bench_upstream" "$TARGET_DIR/release/examples/queued_load" "$WORK/"
[ -n "$HG_BIN" ] || { cp "$TARGET_DIR/release/hookgate" "$OUT/hookgate"; HG_BIN=$OUT/hookgate; }
UPSTREAM_BIN=$WORK/bench_upstream
LOAD_BIN=$WORK/queued_load
bench_cleanup_on_exit

self_signed_cert
printf 'whsec-load-benchmark-0123456789abcdef\n' > "$WORK/secret"

taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=("$!")

# popup.converted is deduplicated by default; the keys must outlive the run.
HG_LOG_LEVEL=warn bench_hookgate_toml "$WORK/hookgate.toml" "" 'max_event_age = "1h"
dedup_window = "1h"' "[dedup]
max_keys = $KEYS"
taskset -c "$SUT_CPU" "$HG_BIN" serve -c "$WORK/hookgate.toml" > "$WORK/hookgate.log" 2>&1 &
HG_PID=$!
PIDS+=("$HG_PID")
for _ in $(seq 1 200); do
    curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$HG_ADMIN/readyz" && break
    sleep 0.05
done
curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$HG_ADMIN/readyz" || die "hookgate not ready: $(tail -5 "$WORK/hookgate.log")"

kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$HG_PID/status"; }
series() { curl -sf --max-time 5 "http://127.0.0.1:$HG_ADMIN/metrics" | awk -v s="$1" '$1 == s {v = $2} END {print (v == "" ? 0 : v)}'; }
FWD='hookgate_requests_total{route="coolpopup",outcome="forwarded"}'
sleep 1
IDLE_RSS=$(kib VmRSS)
printf 'chunk\tforwarded\tevictions\tvmrss_kib\tvmhwm_kib\tper_second\n' > "$OUT/rss.tsv"
printf '0\t0\t0\t%s\t%s\t-\n' "$IDLE_RSS" "$(kib VmHWM)" >> "$OUT/rss.tsv"
n=0
while :; do
    fwd=$(series "$FWD"); fwd=${fwd%.*}
    [ "$fwd" -lt "$KEYS" ] || break
    n=$((n + 1))
    [ "$n" -le 100 ] || die "still only $fwd forwarded after 100 chunks"
    out=$(timeout $((CHUNK + 60)) taskset -c "$LOAD_CPU" "$LOAD_BIN" "127.0.0.1:$HG_PORT" /webhooks/coolpopup \
        "$WORK/secret" insecure "$CONNS" 0 "$CHUNK" 0 "m$n" popup.converted 1024) \
        || die "load chunk $n failed: $out"
    rate=$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["per_second"]))' "$out")
    fwd=$(series "$FWD"); fwd=${fwd%.*}
    ev=$(series hookgate_dedup_evictions_total); ev=${ev%.*}
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$fwd" "$ev" "$(kib VmRSS)" "$(kib VmHWM)" "$rate" >> "$OUT/rss.tsv"
    log "chunk $n: $fwd forwarded, $ev evicted, VmRSS $(kib VmRSS) KiB, $rate req/s"
done
sleep 1
FWD_N=$(series "$FWD"); FWD_N=${FWD_N%.*}
EV=$(series hookgate_dedup_evictions_total); EV=${EV%.*}
HELD=$((FWD_N - EV))
# Every distinct body was a new key: none may have been answered duplicate.
DUPS=$(series 'hookgate_requests_total{route="coolpopup",outcome="duplicate"}'); DUPS=${DUPS%.*}
[ "$DUPS" = 0 ] || die "$DUPS distinct bodies were answered duplicate"
RSS=$(kib VmRSS); HWM=$(kib VmHWM)
{
    echo "## RSS with $HELD in-memory dedup keys"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), \`bash benches/load/dedup_memory.sh\` (KEYS=$KEYS CONNS=$CONNS CHUNK=$CHUNK), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo +dirty), binary sha256 $(sha256sum "$HG_BIN" | cut -c1-12)"
    echo
    echo "| | MiB |"
    echo "|---|---|"
    awk -v i="$IDLE_RSS" -v r="$RSS" -v h="$HWM" -v k="$HELD" 'BEGIN {
        printf "| idle VmRSS (before any key) | %.1f |\n", i / 1024
        printf "| VmRSS with %d keys | **%.1f** |\n", k, r / 1024
        printf "| VmHWM (peak) | %.1f |\n", h / 1024
        printf "| (VmRSS - idle) per key | %.0f bytes |\n", (r - i) * 1024 / k }'
    echo
    echo "forwarded $FWD_N, evicted $EV (max_keys $KEYS), answered duplicate $DUPS; per chunk: $OUT/rss.tsv"
} | tee "$OUT/dedup-memory.md"
