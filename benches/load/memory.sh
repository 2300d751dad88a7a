#!/usr/bin/env bash
# Memory and start-up, hookgate next to nginx (1 worker) with the same
# certificate, upstream and body as benches/load/run.sh:
#   - idle RSS right after start-up (ready, no traffic yet);
#   - RSS with $HOLD (default 1000) keep-alive TLS 1.3 connections open,
#     each having carried one signed 1 KiB POST (benches/load/clients.py hold);
#   - hookgate's time from exec to GET /readyz = 200, median of $STARTS (20).
#
#   bash benches/load/memory.sh
#
# hookgate runs with header_read_timeout = "30s" here (default 5 s) so that
# the first connections are still open when the last ones have been made.
# Output: markdown on stdout and in $OUT/memory.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

HOLD=${HOLD:-1000}
STARTS=${STARTS:-20}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
UP_PORT=${UP_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18443}
HG_PORT=${HG_PORT:-18444}
HG_ADMIN=${HG_ADMIN:-19901}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/bench-load/memory-$(date +%Y%m%d-%H%M%S)}
HG_BIN=${HG_BIN:-$TARGET_DIR/release/hookgate}
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream

BENCH=memory.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

need_tools nginx=nginx-light openssl=openssl curl=curl taskset=util-linux python3=python3
# Both ends of HOLD connections in this one process tree, plus slack.
want_fds=$((2 * HOLD + 256))
[ "$(ulimit -n)" -ge "$want_fds" ] || ulimit -n "$want_fds" || die "ulimit -n $want_fds refused"

log "building the release binary and the bench upstream"
timeout 900 cargo build --release --quiet --bin hookgate --example bench_upstream

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hookgate-mem.XXXXXX)
bench_cleanup_on_exit

self_signed_cert
printf 'whsec-load-benchmark-0123456789abcdef\n' > "$WORK/secret"
python3 "$ROOT/benches/load/body.py" "$WORK/body.json" 1024
SIG=$("$HG_BIN" sign --secret-file "$WORK/secret" "$WORK/body.json")

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/count"

# The load repeats one body: without dedup_events = [] every copy after the
# first would be answered "duplicate" (dedup of popup.converted).
bench_hookgate_toml "$WORK/hookgate.toml" 'header_read_timeout = "30s"' 'dedup_events = []'

bench_nginx_conf "$WORK/nginx.conf" off

# --- start-up time (nothing else of ours running on CPU $SUT_CPU) ------------
log "start-up: $STARTS starts of hookgate, exec -> /readyz 200"
STARTUP=$(timeout 300 python3 "$ROOT/benches/load/clients.py" startup "$STARTS" "$HG_ADMIN" -- \
    taskset -c "$SUT_CPU" "$HG_BIN" serve -c "$WORK/hookgate.toml")
log "$STARTUP"

# --- hookgate: idle, then HOLD connections -----------------------------------
taskset -c "$SUT_CPU" "$HG_BIN" serve -c "$WORK/hookgate.toml" > "$WORK/hookgate.log" 2>&1 &
HG_PID=$!
PIDS+=("$HG_PID")
wait_http "http://127.0.0.1:$HG_ADMIN/readyz"
sleep 1
HG_IDLE=$(kib "$HG_PID" VmRSS)
log "hookgate idle: VmRSS $HG_IDLE KiB, $(ls /proc/$HG_PID/task | wc -l) threads"
HG_HOLD=$(timeout 120 taskset -c "$LOAD_CPU" python3 "$ROOT/benches/load/clients.py" hold "$HG_PORT" "$HOLD" "$WORK/body.json" "$SIG" "$HG_PID") \
    || die "a held connection's request failed; hookgate's log lines other than 200: $(grep -v '"status":200' "$WORK/hookgate.log" | tail -5); the app's log: $(tail -3 "$WORK/upstream.log")"
log "hookgate, $HOLD connections: $HG_HOLD"
kill "$HG_PID"; wait "$HG_PID" 2>/dev/null || true

# --- nginx: idle, then HOLD connections --------------------------------------
taskset -c "$SUT_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" > "$WORK/nginx.out" 2>&1 &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
for _ in $(seq 1 200); do
    [ "$(curl -sk --max-time 1 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$NGINX_PORT/" || true)" = 404 ] && break
    sleep 0.05
done
for _ in $(seq 1 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.05; done
sleep 1
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)
[ -n "$NGINX_WORKER" ] || die "nginx did not start: $(cat "$WORK/nginx-error.log")"
NG_IDLE_W=$(kib "$NGINX_WORKER" VmRSS); NG_IDLE_M=$(kib "$NGINX_MASTER" VmRSS)
log "nginx idle: worker $NG_IDLE_W KiB + master $NG_IDLE_M KiB"
NG_HOLD=$(timeout 120 taskset -c "$LOAD_CPU" python3 "$ROOT/benches/load/clients.py" hold "$NGINX_PORT" "$HOLD" "$WORK/body.json" "$SIG" "$NGINX_WORKER" "$NGINX_MASTER")
log "nginx, $HOLD connections: $NG_HOLD"

field() { sed -nE "s/.*$1=([0-9.]+).*/\1/p" <<< "$2" | head -"${3:-1}" | tail -1; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
{
    echo "## Memory and start-up, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- hookgate $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- src Cargo.toml || echo '+dirty'); nginx $(nginx -v 2>&1 | cut -d/ -f2), 1 worker; both pinned to CPU $SUT_CPU; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- $HOLD connections: TLS 1.3, each carried one signed 1 KiB POST (200) and is held open; RSS read 0.5 s after the last answer"
    echo
    echo "| | idle RSS (MiB) | RSS with $HOLD connections (MiB) | per connection (KiB) |"
    echo "|---|---|---|---|"
    hg_hold_kib=$(field rss_kib "$HG_HOLD")
    ng_w=$(field rss_kib "$NG_HOLD" 1); ng_m=$(field rss_kib "$NG_HOLD" 2)
    echo "| hookgate | $(mib "$HG_IDLE") | $(mib "$hg_hold_kib") | $(( (hg_hold_kib - HG_IDLE) / HOLD )) |"
    echo "| nginx (worker + master) | $(mib $((NG_IDLE_W + NG_IDLE_M))) | $(mib $((ng_w + ng_m))) | $(( (ng_w - NG_IDLE_W) / HOLD )) |"
    echo
    echo "hookgate start-up, exec → \`/readyz\` 200 (certificate and secret files read, both listeners bound): $STARTUP"
} > "$OUT/memory.md"
cat "$OUT/memory.md"
