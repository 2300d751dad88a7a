#!/usr/bin/env bash
# Side-by-side load benchmark: in ONE run, against the SAME upstream,
#   (a) the upstream directly (plain HTTP),
#   (b) nginx, 1 worker, as a TLS 1.3 reverse proxy with a keep-alive upstream pool,
#   (c) hookgate with full verification (TLS 1.3, HMAC, schema),
# with the system under test pinned to CPU $SUT_CPU and the load generator
# plus the upstream pinned to CPU $LOAD_CPU. Every request is a valid signed
# 1 KiB popup.converted POST over keep-alive connections.
#
#   bash benches/load/run.sh            # RUNS=20 DURATION=4 CONNS=64
#   LOGGING=off bash benches/load/run.sh   # bare: no per-request log line on either side
#
# Two phases, each RUNS rounds interleaving a, b, c:
#   max:   wrk -t1 -c$CONNS, closed loop: the highest throughput.
#   fixed: h2load --h1 at a fixed total rate of 50% of nginx's median max
#          (spread over $CONNS connections with --rps), per-request latency
#          from h2load's --log-file: p50/p99/p99.9. h2load paces each
#          connection but times a request from when it is sent, not from
#          when it was due: a stall delays later sends instead of counting
#          against them (coordinated omission). At 50% load that is small,
#          and it is the same for all three targets. (oha's open-loop mode
#          would avoid it, but needs a long cargo install; wrk2 is not
#          packaged in Debian.)
# Per run: req/s, CPU-µs per request (utime+stime delta of the SUT's
# processes from /proc/PID/stat ÷ requests), the SUT's CPU use; at the end
# peak RSS (VmHWM). Fails (non-zero exit) if any request got a non-200, if
# hookgate counted any outcome but `forwarded`, or if the upstream's count
# does not match the requests sent.
#
# Output: the markdown report on stdout and in $OUT/report.md, raw numbers in
# $OUT/raw.tsv. Bounded: about 11 minutes with a warm build.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

# Many short slots: on a machine whose speed swings from one 10 s slot to
# the next, two targets measured seconds apart pair better (benches/RESULTS.md,
# third round).
RUNS=${RUNS:-20}
# "max" alone skips the fixed-rate phase (for quick screening).
PHASES=${PHASES:-max fixed}
DURATION=${DURATION:-4}
CONNS=${CONNS:-64}
# LOGGING=off: the bare variant, no per-request log line on either side
# (nginx access_log off; hookgate level = "warn", which drops the info line
# each request writes). Default on: nginx's access log and hookgate's info.
LOGGING=${LOGGING:-on}
case $LOGGING in
    on) HG_LEVEL=info ;;
    off) HG_LEVEL=warn ;;
    *) echo "LOGGING must be on or off" >&2; exit 2 ;;
esac
# BODY=mix: the max phase cycles through all four events in a popup's
# proportions (benches/common.sh, bench_mix_lua; popup.converted at 1 KiB,
# the others about 200-260 bytes); the fixed phase (h2load: one body) posts
# the 1 KiB popup.converted either way. Default: popup.converted only.
BODY=${BODY:-converted}
case $BODY in converted|mix) ;; *) echo "BODY must be converted or mix" >&2; exit 2 ;; esac
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# The machine may be shared: the benchmark's processes (all of them, both
# sides) run at a higher priority than whatever else is running.
NICE=${NICE:--10}
# With sched autogroup (the default on desktop-configured kernels), the
# scheduler shares CPU between sessions first and nice only counts inside a
# session: give this script's own session group the same priority.
if [ -w /proc/self/autogroup ]; then echo "$NICE" > /proc/self/autogroup 2>/dev/null || true; fi
UP_PORT=${UP_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18443}
HG_PORT=${HG_PORT:-18444}
HG_ADMIN=${HG_ADMIN:-19901}
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench-load/$(date +%Y%m%d-%H%M%S)}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# (Not HOOKGATE_*: hookgate reads every HOOKGATE_* variable as a config key.)
HG_BIN=${HG_BIN:-$TARGET_DIR/release/hookgate}
# Optional (d): a second hookgate binary (e.g. a candidate optimization),
# measured in the same runs with the same config; reported against (c) and (b).
ALT_BIN=${ALT_BIN:-}
# A sed expression for (d)'s config only, e.g. ALT_SED='/^dedup_events/d' for a
# build older than the key (an unknown key is a config error).
ALT_SED=${ALT_SED:-}
TARGETS="a b c"; [ -z "$ALT_BIN" ] || TARGETS="a b c d"
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)

BENCH=run.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

# --- tools ------------------------------------------------------------------
need_tools nginx=nginx-light wrk=wrk h2load=nghttp2-client openssl=openssl curl=curl taskset=util-linux python3=python3
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the system under test, one for load)"

log "building the release binary and the bench upstream"
timeout 900 cargo build --release --quiet --bin hookgate --example bench_upstream
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hookgate-load.XXXXXX)
bench_cleanup_on_exit

# --- material: ECDSA P-256 certificate, secret, a signed 1 KiB body ----------
self_signed_cert
printf 'whsec-load-benchmark-0123456789abcdef\n' > "$WORK/secret"
python3 "$ROOT/benches/load/body.py" "$WORK/body.json" 1024
SIG=$("$HG_BIN" sign --secret-file "$WORK/secret" "$WORK/body.json")

case $BODY in
    converted) bench_post_lua "$WORK/post.lua" "$WORK/body.json" "$SIG" ;;
    mix) bench_mix_lua "$WORK/post.lua" "$HG_BIN" "$WORK/secret" 1024 ;;
esac

# --- the upstream (CPU $LOAD_CPU) -------------------------------------------
nice -n "$NICE" taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")

wait_http "http://127.0.0.1:$UP_PORT/count"

# --- nginx (CPU $SUT_CPU) ---------------------------------------------------
bench_nginx_conf "$WORK/nginx.conf" "$( [ "$LOGGING" = on ] && echo "$WORK/nginx-access.log" || echo off )"
nice -n "$NICE" taskset -c "$SUT_CPU" nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx-error.log" > "$WORK/nginx.out" 2>&1 &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")

# --- hookgate (CPU $SUT_CPU) ------------------------------------------------
# The load repeats one body: without dedup_events = [] every copy after the
# first would be answered "duplicate" (dedup of popup.converted).
HG_LOG_LEVEL=$HG_LEVEL bench_hookgate_toml "$WORK/hookgate.toml" "" 'dedup_events = []'
nice -n "$NICE" taskset -c "$SUT_CPU" "$HG_BIN" serve -c "$WORK/hookgate.toml" > "$WORK/hookgate.log" 2>&1 &
HG_PID=$!
PIDS+=("$HG_PID")
wait_http "http://127.0.0.1:$HG_ADMIN/readyz" "$WORK/hookgate.log"
ALT_PID=
ALT_PORT=$((HG_PORT + 2)); ALT_ADMIN=$((HG_ADMIN + 2))
if [ -n "$ALT_BIN" ]; then
    sed -e "s/:$HG_PORT\"/:$ALT_PORT\"/" -e "s/:$HG_ADMIN\"/:$ALT_ADMIN\"/" ${ALT_SED:+-e "$ALT_SED"} "$WORK/hookgate.toml" > "$WORK/alt.toml"
    nice -n "$NICE" taskset -c "$SUT_CPU" "$ALT_BIN" serve -c "$WORK/alt.toml" > "$WORK/alt.log" 2>&1 &
    ALT_PID=$!
    PIDS+=("$ALT_PID")
    wait_http "http://127.0.0.1:$ALT_ADMIN/readyz" "$WORK/alt.log"
fi
ALT_URL="https://127.0.0.1:$ALT_PORT/webhooks/coolpopup"

NGINX_URL="https://127.0.0.1:$NGINX_PORT/webhooks/coolpopup"
HG_URL="https://127.0.0.1:$HG_PORT/webhooks/coolpopup"
UP_URL="http://127.0.0.1:$UP_PORT/webhooks/coolpopup"
for _ in $(seq 1 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.05; done
NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1)
[ -n "$NGINX_WORKER" ] || die "nginx did not start: $(cat "$WORK/nginx-error.log")"

# One signed request through each proxy must be a 200 before anything else.
for url in "$NGINX_URL" "$HG_URL" ${ALT_BIN:+"$ALT_URL"}; do
    code=$(curl -sk --max-time 5 -o "$WORK/sanity" -w '%{http_code}' --tlsv1.3 \
        -H 'content-type: application/json' -H "x-coolpopup-signature: $SIG" \
        --data-binary @"$WORK/body.json" "$url")
    [ "$code" = 200 ] || die "sanity request to $url answered $code: $(cat "$WORK/sanity")"
done
# What TLS each side negotiates (recorded in the report).
tls_params() {
    timeout 5 openssl s_client -connect "127.0.0.1:$1" -servername localhost -tls1_3 \
        </dev/null 2>/dev/null | grep -E '^(New|Peer signature type|Server Temp Key|Negotiated TLS1.3 group)' \
        | tr '\n' ';' || true
}
NGINX_TLS=$(tls_params "$NGINX_PORT")
HG_TLS=$(tls_params "$HG_PORT")

# --- measurement helpers ----------------------------------------------------
sut_pids() { case $1 in a) echo "$UP_PID" ;; b) echo "$NGINX_MASTER $NGINX_WORKER" ;; c) echo "$HG_PID" ;; d) echo "$ALT_PID" ;; esac; }
url_of() { case $1 in a) echo "$UP_URL" ;; b) echo "$NGINX_URL" ;; c) echo "$HG_URL" ;; d) echo "$ALT_URL" ;; esac; }
hwm_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmHWM/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
CLK_TCK=$(getconf CLK_TCK)
cpu_busy() { # "busy total" jiffies of CPU $1 from /proc/stat
    awk -v c="cpu$1" '$1==c {t=0; for (i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat
}
hg_outcomes() { # $1 target (c or d)
    local admin=$HG_ADMIN; [ "$1" = d ] && admin=$ALT_ADMIN
    curl -sf --max-time 2 "http://127.0.0.1:$admin/metrics" > "$WORK/metrics.txt"; python3 "$ROOT/benches/load/analyze.py" metrics "$WORK/metrics.txt"; }
# 499 is nginx's record of a request whose client went away before the
# answer (the load generator stopping mid-request), not a response sent.
# (LOGGING=off: the access log stays empty; wrk's and h2load's statuses and
# the upstream count still check nginx.)
nginx_non200() { awk '$9 != 200 && $9 != 499' "$WORK/nginx-access.log" | wc -l; }
nginx_499() { awk '$9 == 499' "$WORK/nginx-access.log" | wc -l; }

# Checks one run: every request a 200, the upstream got each exactly once.
# $1 target, $2 requests the client completed, $3 upstream count before,
# $4 hookgate outcomes before (file).
verify_run() {
    local t=$1 done_reqs=$2 up_before=$3 up_after delta
    sleep 0.5 # let requests cut off at the end of the run settle
    up_after=$(upstream_count)
    delta=$((up_after - up_before))
    # A run ends with up to CONNS requests in flight: the client never sees
    # their answers, but they may have reached the upstream.
    if [ "$delta" -lt "$done_reqs" ] || [ "$delta" -gt $((done_reqs + CONNS)) ]; then
        die "$t: the upstream received $delta requests, the client completed $done_reqs"
    fi
    case $t in
        b)
            local bad
            bad=$(nginx_non200)
            [ "$bad" = 0 ] || die "nginx answered $bad non-200 responses: $(awk '$9 != 200' "$WORK/nginx-access.log" | head -3)"
            [ "$(nginx_499)" -le "$CONNS" ] || die "nginx saw $(nginx_499) requests abandoned by the client"
            ;;
        c|d)
            hg_outcomes "$t" > "$WORK/outcomes.after"
            local fwd_before fwd_after others
            fwd_before=$(awk -F= '$1=="forwarded"{print $2}' "$4"); fwd_before=${fwd_before:-0}
            fwd_after=$(awk -F= '$1=="forwarded"{print $2}' "$WORK/outcomes.after")
            others=$(grep -v '^forwarded=' "$WORK/outcomes.after" | grep -v '^ping=' || true)
            [ -z "$others" ] || die "hookgate counted outcomes other than forwarded: $others"
            local fwd=$((fwd_after - fwd_before))
            if [ "$fwd" -lt "$done_reqs" ] || [ "$fwd" -gt "$delta" ]; then
                die "hookgate forwarded $fwd, client completed $done_reqs, upstream got $delta"
            fi
            ;;
    esac
}

RAW=$OUT/raw.tsv
: > "$RAW"

# Busy share of a CPU between two cpu_busy snapshots ("busy total" each).
busy_share() { awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" 'BEGIN {printf "%.3f", (c-a)/((d-b) ? (d-b) : 1)}'; }

# max: closed-loop wrk. $1 target $2 run $3 duration; run "warm" is not recorded.
run_max() {
    local t=$1 run=$2 d=$3 pids url up_before t0 t1 out s0 s1 l0 l1
    pids=$(sut_pids "$t"); url=$(url_of "$t")
    up_before=$(upstream_count)
    case $t in c|d) hg_outcomes "$t" > "$WORK/outcomes.before" ;; esac
    : > "$WORK/nginx-access.log"
    t0=$(cpu_ticks $pids); s0=$(cpu_busy "$SUT_CPU"); l0=$(cpu_busy "$LOAD_CPU")
    out=$(timeout $((d + 30)) nice -n "$NICE" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${d}s" -s "$WORK/post.lua" "$url")
    t1=$(cpu_ticks $pids); s1=$(cpu_busy "$SUT_CPU"); l1=$(cpu_busy "$LOAD_CPU")
    echo "$out" > "$OUT/wrk-$t-$run.txt"
    wrk_result "$t run $run" "$out"
    local requests=$WRK_REQUESTS dur_us=$WRK_DURATION_US
    verify_run "$t" "$requests" "$up_before" "$WORK/outcomes.before"
    [ "$run" != warm ] || return 0
    local sut_busy load_busy
    sut_busy=$(busy_share $s0 $s1); load_busy=$(busy_share $l0 $l1)
    python3 "$ROOT/benches/load/analyze.py" row max "$t" "$run" "requests=$requests" "duration_us=$dur_us" \
        "ticks=$((t1 - t0))" "hz=$CLK_TCK" "hwm_kib=$(hwm_kib $pids)" \
        "sut_cpu_busy=$sut_busy" "load_cpu_busy=$load_busy" >> "$RAW"
    log "max   $t run $run: $(tail -1 "$RAW" | cut -d' ' -f4-)"
}

# fixed: h2load at RATE req/s in total over CONNS connections. $1 target $2 run
run_fixed() {
    local t=$1 run=$2 pids url up_before t0 t1 out per_conn s0 s1 l0 l1
    pids=$(sut_pids "$t"); url=$(url_of "$t")
    per_conn=$(python3 -c "print(f'{$RATE / $CONNS:.3f}')")
    up_before=$(upstream_count)
    case $t in c|d) hg_outcomes "$t" > "$WORK/outcomes.before" ;; esac
    : > "$WORK/nginx-access.log"
    rm -f "$WORK/lat.tsv"
    t0=$(cpu_ticks $pids); s0=$(cpu_busy "$SUT_CPU"); l0=$(cpu_busy "$LOAD_CPU")
    out=$(timeout $((DURATION + 30)) nice -n "$NICE" taskset -c "$LOAD_CPU" h2load --h1 -t1 -c"$CONNS" \
        --rps="$per_conn" -D "$DURATION" -d "$WORK/body.json" \
        -H 'content-type: application/json' -H "x-coolpopup-signature: $SIG" \
        --log-file="$WORK/lat.tsv" "$url" 2>&1)
    t1=$(cpu_ticks $pids); s1=$(cpu_busy "$SUT_CPU"); l1=$(cpu_busy "$LOAD_CPU")
    echo "$out" > "$OUT/h2load-$t-$run.txt"
    local n non200 p50 p99 p999
    # Percentiles skip the first second (connections opening); counts do not.
    read -r n non200 p50 p99 p999 < <(python3 "$ROOT/benches/load/analyze.py" latency "$WORK/lat.tsv" 1)
    [ "$non200" = 0 ] || die "$t fixed run $run: $non200 non-200 responses"
    grep -qE 'requests: .* 0 failed, 0 errored, 0 timeout' <<< "$out" \
        || die "$t fixed run $run: h2load reports failures: $(grep 'requests:' <<< "$out")"
    [ "$n" -gt 0 ] || die "$t fixed run $run: no request completed"
    verify_run "$t" "$n" "$up_before" "$WORK/outcomes.before"
    local sut_busy load_busy
    sut_busy=$(busy_share $s0 $s1); load_busy=$(busy_share $l0 $l1)
    python3 "$ROOT/benches/load/analyze.py" row fixed "$t" "$run" "requests=$n" "duration_us=$((DURATION * 1000000))" \
        "ticks=$((t1 - t0))" "hz=$CLK_TCK" "p50=$p50" "p99=$p99" "p999=$p999" "rate=$RATE" \
        "sut_cpu_busy=$sut_busy" "load_cpu_busy=$load_busy" >> "$RAW"
    log "fixed $t run $run: $(tail -1 "$RAW" | cut -d' ' -f4-)"
}

# Odd runs measure the targets in order (a b c d), even runs in reverse, so a
# drift in the machine's speed during a run does not favour one target.
order() { if (( $1 % 2 )); then echo "$TARGETS"; else tr ' ' '\n' <<< "$TARGETS" | tac | xargs; fi; }

log "warm-up (not recorded)"
for t in $TARGETS; do run_max "$t" warm 2; done

log "phase 1: max throughput, $RUNS x ${DURATION}s per target, interleaved"
for run in $(seq 1 "$RUNS"); do for t in $(order "$run"); do run_max "$t" "$run" "$DURATION"; done; done
RATE=$(python3 "$ROOT/benches/load/analyze.py" half-median-rps "$RAW" b)
if [[ " $PHASES " == *" fixed "* ]]; then
    log "phase 2: fixed rate $RATE req/s (50% of nginx's median max), $RUNS x ${DURATION}s per target"
    for run in $(seq 1 "$RUNS"); do for t in $(order "$run"); do run_fixed "$t" "$run"; done; done
fi

# --- report -----------------------------------------------------------------
{
    echo "## Load benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- machine: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2}'), $(nproc) CPUs, kernel $(uname -r), $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "- load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- SUT on CPU $SUT_CPU; wrk/h2load and the upstream on CPU $LOAD_CPU; all at nice $NICE; $CONNS keep-alive connections; $RUNS runs x ${DURATION}s per target and phase"
    echo "- hookgate: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- src Cargo.toml || echo '+dirty'), $(ls /proc/"$HG_PID"/task | wc -l) threads; nginx $(nginx -v 2>&1 | cut -d/ -f2), 1 worker"
    echo "- bodies (BODY=$BODY): $( [ "$BODY" = mix ] && echo "max phase: all four events, shown x4 clicked x2 converted closed per 8 (converted 1 KiB); fixed phase: the 1 KiB popup.converted" || echo "the signed 1 KiB popup.converted")"
    echo "- per-request logging (LOGGING=$LOGGING): $( [ "$LOGGING" = on ] && echo "nginx access_log, hookgate level info (JSON)" || echo "none: nginx access_log off, hookgate level warn")"
    echo "- TLS nginx: $NGINX_TLS"
    echo "- TLS hookgate: $HG_TLS"
    [ -z "$ALT_BIN" ] || echo "- (d): $ALT_BIN, $(ls /proc/"$ALT_PID"/task | wc -l) threads"
    echo
    python3 "$ROOT/benches/load/analyze.py" report "$RAW"
} > "$OUT/report.md"
cat "$OUT/report.md"
log "raw numbers: $RAW"
