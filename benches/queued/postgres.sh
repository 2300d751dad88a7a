#!/usr/bin/env bash
# Queued ingest on PostgreSQL vs SQLite vs direct delivery, in ONE run, on
# this machine, release build. The method is benches/queued/run.sh's
# (SQLite vs direct, branch crash-tests): each target its own
# `hookgate serve` pinned to CPU $SUT_CPU with server.worker_threads = 1;
# wrk (closed loop, one signed ~1 KiB popup.shown body, which is not
# deduplicated, so every copy is a new event) and the app stand-in
# (examples/bench_upstream.rs) on CPU $LOAD_CPU; runs interleave the
# targets, reversed every other run; queued sidecars restart on an empty
# store before each measurement. Added here:
#
#   - a throwaway PostgreSQL cluster started by this script (initdb in a
#     temporary directory, as the `postgres` user when root, as
#     src/testing/pg.rs does; fsync and synchronous_commit on, the
#     defaults), pinned to CPU $LOAD_CPU too (PG_CPU), so the sidecar's
#     core is its own; each queued start gets a fresh schema;
#   - targets: direct, sqlite (queued, app up), postgres (queued, app up),
#     pg-ingest (queued, app hung: almost nothing but ingest);
#   - phase "fixed": the ack latency at 50% of the target's max from the
#     same run, measured by examples/queued_load.rs in open loop (each
#     request timed from when it was due: no coordinated omission; wrk's
#     latencies are under saturation), bodies distinct popup.shown;
#   - phase "converted": the max again with distinct popup.converted bodies
#     (deduplicated: each event also claims its key in the same commit),
#     examples/queued_load.rs in closed loop;
#   - the mean `hookgate_store_batch_size` and `hookgate_store_commit_seconds`
#     of every phase, CPU-µs per event of the sidecar and of PostgreSQL
#     (all its processes), and pg_test_fsync's fdatasync rate of the disk.
#
#   bash benches/queued/postgres.sh     # RUNS=3 DURATION=8 CONNS=64: about 10 min warm
#
# Results and what they mean: benches/queued/RESULTS-postgres.md.
#
# Output: a markdown report on stdout and in $OUT/report.md, raw rows in
# $OUT/raw.tsv. Fails on any answer but 200 queued / forwarded. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

RUNS=${RUNS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# The database's CPU: the load's by default, so the sidecar's core is its
# own; PG_CPU=$SUT_CPU shows what sharing the load's core costs the tail.
PG_CPU=${PG_CPU:-$LOAD_CPU}
PHASES=${PHASES:-max fixed converted}
# After each "max" of a queued target with the app up: delivery on its own
# (the backlog the run left, no load) for DRAIN seconds.
DRAIN=${DRAIN:-5}
# routes[].delivery_concurrency of the queued targets (empty: hookgate's default, 4).
DELIVERY_CONCURRENCY=${DELIVERY_CONCURRENCY:-}
# Lines added to postgresql.conf, e.g. "autovacuum_naptime = 1s": a fresh
# schema has no planner statistics until autovacuum's first ANALYZE (up to
# a minute, the default naptime), and until then each lease sorts the whole
# backlog (RESULTS-postgres.md).
PG_CONF_EXTRA=${PG_CONF_EXTRA:-}
TARGETS=${TARGETS:-direct sqlite postgres pg-ingest}
NICE=${NICE:--10}
if [ -w /proc/self/autogroup ]; then echo "$NICE" > /proc/self/autogroup 2>/dev/null || true; fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/bench-queued-pg/$(date +%Y%m%d-%H%M%S)}
# (Not HOOKGATE_*: hookgate reads every HOOKGATE_* variable as a config key.)
HG_BIN=${HG_BIN:-$TARGET_DIR/release/hookgate}
STORE_DIR=${STORE_DIR:-/tmp}
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)

BENCH=queued/postgres.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

# --- tools ------------------------------------------------------------------
need_tools wrk=wrk openssl=openssl curl=curl taskset=util-linux setpriv=util-linux python3=python3 initdb=postgresql
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (one for the sidecar, one for load, the app and the database)"
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

log "building the release binary, the bench upstream and the load client"
timeout 1500 cargo build --release --quiet --bin hookgate --example bench_upstream --example queued_load
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream
LOAD_BIN=$TARGET_DIR/release/examples/queued_load

mkdir -p "$OUT"
WORK=$(mktemp -d "$STORE_DIR/hookgate-queued-pg.XXXXXX")
chmod 755 "$WORK"
# PostgreSQL refuses to run as root: its commands run as `postgres` then.
PG_AS=()
[ "$(id -u)" != 0 ] || PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
as_pg() { "${PG_AS[@]}" "$@"; }
bench_cleanup_extra() {
    if [ -f "$WORK/pg/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    fi
}
bench_cleanup_on_exit

read -r UP_PORT HUNG_PORT PG_PORT PUB ADM < <(free_ports 5)

# --- the database (CPU $PG_CPU) ---------------------------------------------
mkdir -p "$WORK/pg" "$WORK/pgsock"
[ "$(id -u)" != 0 ] || chown postgres:postgres "$WORK/pg" "$WORK/pgsock"
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth-local=trust --auth-host=trust \
    -E UTF8 --no-locale >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK/pgsock'
max_connections = 50
shared_buffers = 256MB
# The defaults, spelled out: a commit is flushed to disk before it returns.
fsync = on
synchronous_commit = on
$PG_CONF_EXTRA
EOF
nice -n "$NICE" taskset -c "$PG_CPU" "${PG_AS[@]}" \
    "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pgsock/server.log" -w -t 60 start >/dev/null \
    || die "postgres did not start: $(tail -5 "$WORK/pgsock/server.log" 2>/dev/null)"
PG_VERSION=$("$PG_BIN/postgres" --version)
printf 'postgresql://postgres@127.0.0.1:%s/postgres\n' "$PG_PORT" > "$WORK/store-url"
pg_pids() { # the postmaster and its children
    local pm; pm=$(head -1 "$WORK/pg/postmaster.pid")
    echo "$pm"; ps -o pid= --ppid "$pm"
}
# What the disk's flush costs (the floor under a commit).
FSYNC=$(as_pg "$PG_BIN/pg_test_fsync" -s 1 -f "$WORK/pg/fsync.test" 2>/dev/null \
    | awk '/one 8kB write/ {f = 1} f && $1 == "fdatasync" {print $2; exit}')

# --- material ---------------------------------------------------------------
self_signed_cert
printf 'whsec-queued-benchmark-0123456789abcdef\n' > "$WORK/secret"
python3 "$ROOT/benches/load/body.py" "$WORK/converted.json" 1024
sed 's/"popup\.converted"/"popup.shown"/' "$WORK/converted.json" > "$WORK/body.json"
SIG=$("$HG_BIN" sign --secret-file "$WORK/secret" "$WORK/body.json")
bench_post_lua "$WORK/post.lua" "$WORK/body.json" "$SIG"

# --- the app stand-in and a hung app (CPU $LOAD_CPU) -------------------------
nice -n "$NICE" taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
WAIT_HTTP_S=20
wait_http "http://127.0.0.1:$UP_PORT/count"
# Listens, never accepts (the kernel completes the handshakes).
nice -n "$NICE" taskset -c "$LOAD_CPU" python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(4096)
time.sleep(100000)' "$HUNG_PORT" &
PIDS+=("$!")

# --- the sidecar under test (CPU $SUT_CPU), one target at a time -------------
STARTS=0
# $1 target: writes its config (a fresh store) and starts it.
start() {
    local t=$1 app="http://127.0.0.1:$UP_PORT" route="" store=""
    STARTS=$((STARTS + 1))
    case $t in
        direct) ;;
        sqlite)
            mkdir -p "$WORK/sqlite-$STARTS"
            route="delivery = \"queued\"${DELIVERY_CONCURRENCY:+
delivery_concurrency = $DELIVERY_CONCURRENCY}"
            store="[store]
engine = \"sqlite\"
path = \"$WORK/sqlite-$STARTS/events.db\"" ;;
        postgres | pg-ingest)
            route="delivery = \"queued\"${DELIVERY_CONCURRENCY:+
delivery_concurrency = $DELIVERY_CONCURRENCY}"
            [ "$t" = postgres ] || app="http://127.0.0.1:$HUNG_PORT"
            store="[store]
engine = \"postgres\"
url_file = \"$WORK/store-url\"
tls = \"disable\"
schema = \"bench_$STARTS\"" ;;
        *) die "unknown target $t" ;;
    esac
    HG_PORT=$PUB HG_ADMIN=$ADM HG_UPSTREAM_URL=$app \
        bench_hookgate_toml "$WORK/hg.toml" "worker_threads = 1" "$route" "$store"
    nice -n "$NICE" taskset -c "$SUT_CPU" "$HG_BIN" serve -c "$WORK/hg.toml" >> "$WORK/$t.log" 2>&1 &
    HG_PID=$!
    PIDS+=("$HG_PID")
    wait_http "http://127.0.0.1:$ADM/readyz" "$WORK/$t.log"
}
stop() { # SIGKILL: SIGTERM would wait shutdown_grace for the hung app.
    kill -9 "$HG_PID" 2>/dev/null || true
    wait "$HG_PID" 2>/dev/null || true
    rm -rf "$WORK"/sqlite-*
    # The database keeps only the schema of the next start.
    as_pg "$PG_BIN/psql" -X -q -h "$WORK/pgsock" -p "$PG_PORT" -U postgres -d postgres \
        -c "DROP SCHEMA IF EXISTS bench_$STARTS CASCADE" >/dev/null 2>&1 || true
}

metrics() { curl -sf --max-time 5 "http://127.0.0.1:$ADM/metrics"; }
series() { awk -v s="$2" '$1 == s {v = $2} END {print (v == "" ? 0 : v)}' "$1"; }
ticks_of() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$s"; }
CLK_TCK=$(getconf CLK_TCK)
OUTCOME='hookgate_requests_total{route="coolpopup",outcome="%s"}'
URL_PATH=/webhooks/coolpopup

RAW=$OUT/raw.tsv
printf 'target\tphase\trun\trate\trequests\tseconds\trps\tp50_ms\tp90_ms\tp99_ms\tp999_ms\tcpu_us\tpg_cpu_us\tbatch_mean\tcommit_ms\tdelivered_rps\tdrain_rps\n' > "$RAW"
declare -A MAXRPS

# $1 target, $2 phase, $3 run ("warm" is not recorded). Starts the target on
# a fresh store, measures, stops it.
run_one() {
    local t=$1 phase=$2 run=$3 before=$WORK/m-before after=$WORK/m-after
    start "$t"
    local pgp; pgp=$(pg_pids | tr '\n' ' ')
    # One request first: the sidecar and the store are warm and working.
    local code; code=$(curl -sk --max-time 5 -o "$WORK/sanity" -w '%{http_code}' \
        -H 'content-type: application/json' -H "x-coolpopup-signature: $SIG" \
        --data-binary @"$WORK/body.json" "https://127.0.0.1:$PUB$URL_PATH")
    [ "$code" = 200 ] || die "sanity request to $t answered $code: $(cat "$WORK/sanity")"
    metrics > "$before"
    local app0 t0 pg0 rate=- requests dur_us p50 p90=- p99 p999=- out
    app0=$(upstream_count); t0=$(ticks_of "$HG_PID"); pg0=$(ticks_of $pgp)
    case $phase in
        max)
            out=$(timeout $((DURATION + 30)) nice -n "$NICE" taskset -c "$LOAD_CPU" \
                wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "https://127.0.0.1:$PUB$URL_PATH")
            echo "$out" > "$OUT/wrk-$t-$run.txt"
            wrk_result "$t run $run" "$out"
            requests=$WRK_REQUESTS; dur_us=$WRK_DURATION_US
            p50=$(awk -v us="$WRK_P50_US" 'BEGIN {print us / 1000}')
            p99=$(awk -v us="$WRK_P99_US" 'BEGIN {print us / 1000}')
            ;;
        fixed | converted)
            local event=popup.shown warm=1
            if [ "$phase" = fixed ]; then
                rate=$(awk -v r="${MAXRPS[$t]}" 'BEGIN {printf "%.0f", r / 2}')
            else
                rate=0; event=popup.converted
            fi
            out=$(timeout $((DURATION + 40)) nice -n "$NICE" taskset -c "$LOAD_CPU" \
                "$LOAD_BIN" "127.0.0.1:$PUB" "$URL_PATH" "$WORK/secret" insecure \
                "$CONNS" "$warm" "$DURATION" "$rate" "r${run}${phase:0:1}${STARTS}" "$event") \
                || die "$t $phase run $run: queued_load: $out"
            echo "$out" > "$OUT/load-$t-$phase-$run.json"
            read -r requests dur_us p50 p90 p99 p999 < <(python3 -c '
import json, sys
d = json.loads(sys.argv[1])
n = d["queued"] + d["ok"]
print(n, int(d["seconds"] * 1e6), d["p50_ms"], d["p90_ms"], d["p99_ms"], d["p999_ms"])' "$out")
            ;;
    esac
    local t1 pg1 app1; t1=$(ticks_of "$HG_PID"); pg1=$(ticks_of $pgp); app1=$(upstream_count)
    sleep 0.5
    metrics > "$after"
    local want counted others
    case $t in direct) want=forwarded ;; *) want=queued ;; esac
    counted=$(awk -v a="$(series "$before" "$(printf "$OUTCOME" "$want")")" \
        -v b="$(series "$after" "$(printf "$OUTCOME" "$want")")" 'BEGIN {print b - a}')
    [ "$counted" -ge "$requests" ] || die "$t $phase run $run: hookgate counted $counted $want, the client $requests"
    others=$(grep '^hookgate_requests_total{' "$after" | grep -v "outcome=\"$want\"" | awk '$2 != 0' || true)
    [ -z "$others" ] || die "$t $phase run $run: outcomes other than $want: $others"
    local batch=- commit=- delivered=-
    if [ "$t" != direct ]; then
        read -r batch commit < <(awk -v s0="$(series "$before" hookgate_store_batch_size_sum)" \
            -v s1="$(series "$after" hookgate_store_batch_size_sum)" \
            -v c0="$(series "$before" hookgate_store_batch_size_count)" \
            -v c1="$(series "$after" hookgate_store_batch_size_count)" \
            -v m0="$(series "$before" hookgate_store_commit_seconds_sum)" \
            -v m1="$(series "$after" hookgate_store_commit_seconds_sum)" \
            'BEGIN {n = c1 - c0; printf "%.1f %.2f\n", (s1 - s0) / (n ? n : 1), 1000 * (m1 - m0) / (n ? n : 1)}')
    fi
    [ "$t" = pg-ingest ] || delivered=$(awk -v n=$((app1 - app0)) -v us="$dur_us" 'BEGIN {printf "%.0f", n / (us / 1e6)}')
    local drain=-
    if [ "$phase" = max ] && { [ "$t" = sqlite ] || [ "$t" = postgres ]; } && [ "$DRAIN" -gt 0 ]; then
        local d0 d1; d0=$(upstream_count); sleep "$DRAIN"; d1=$(upstream_count)
        drain=$(( (d1 - d0) / DRAIN ))
    fi
    stop
    local rps; rps=$(awk -v n="$requests" -v us="$dur_us" 'BEGIN {printf "%.0f", n / (us / 1e6)}')
    # The fixed phase of a run asks for half of the same run's max.
    [ "$phase" != max ] || MAXRPS[$t]=$rps
    [ "$run" != warm ] || return 0
    awk -v t="$t" -v ph="$phase" -v run="$run" -v rate="$rate" -v n="$requests" -v us="$dur_us" \
        -v p50="$p50" -v p90="$p90" -v p99="$p99" -v p999="$p999" \
        -v ticks=$((t1 - t0)) -v pgt=$((pg1 - pg0)) -v hz="$CLK_TCK" -v b="$batch" -v c="$commit" -v dr="$delivered" \
        -v drain="$drain" \
        'BEGIN {s = us / 1e6; printf "%s\t%s\t%s\t%s\t%d\t%.2f\t%.0f\t%.2f\t%s\t%.2f\t%s\t%.0f\t%.0f\t%s\t%s\t%s\t%s\n",
            t, ph, run, rate, n, s, n / s, p50, p90, p99, p999, ticks / hz * 1e6 / n, pgt / hz * 1e6 / n, b, c, dr, drain}' >> "$RAW"
}

log "warm-up (2 s each); pg_test_fsync: $FSYNC fdatasync/s"
SAVED=$DURATION; DURATION=2
for t in $TARGETS; do run_one "$t" max warm; done
DURATION=$SAVED
for run in $(seq 1 "$RUNS"); do
    order=$TARGETS
    [ $((run % 2)) = 0 ] && order=$(tr ' ' '\n' <<< "$TARGETS" | tac | tr '\n' ' ')
    for phase in $PHASES; do
        for t in $order; do
            log "run $run/$RUNS: $t $phase (${DURATION}s, $CONNS connections${MAXRPS[$t]:+, last max ${MAXRPS[$t]}/s})"
            run_one "$t" "$phase" "$run"
        done
    done
done
LOAD_AFTER=$(cut -d" " -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------
# PG_CONF_EXTRA through the environment: it may hold several lines or quotes.
PG_CONF_EXTRA=$PG_CONF_EXTRA python3 - "$RAW" "$OUT/report.md" <<EOF
import csv, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def med(t, ph, k):
    v = [float(r[k]) for r in rows if r["target"] == t and r["phase"] == ph and r[k] not in ("-", "")]
    return statistics.median(v) if v else None
def f(v, p="%.0f"):
    return "-" if v is None else p % v
targets = "$TARGETS".split()
phases = "$PHASES".split()
out = []
w = out.append
w("## Queued ingest: PostgreSQL vs SQLite vs direct")
w("")
w("$(date -u +%Y-%m-%dT%H:%MZ), \`bash benches/queued/postgres.sh\` (RUNS=$RUNS DURATION=$DURATION CONNS=$CONNS),")
w("$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), sidecar (worker_threads = 1) on CPU $SUT_CPU,")
w("load and app on CPU $LOAD_CPU, PostgreSQL on CPU $PG_CPU; load average before $LOAD_BEFORE, after $LOAD_AFTER;")
w("$PG_VERSION on $(df -T "$WORK" | awk 'NR==2 {print $2 " (" $1 ")"}'), pg_test_fsync: $FSYNC fdatasync/s (8 kB).")
w("Cells: median over runs. delivery_concurrency: ${DELIVERY_CONCURRENCY:-4 (default)}; postgresql.conf additions: " + ("; ".join(os.environ["PG_CONF_EXTRA"].splitlines()) or "none") + ".")
names = {"max": "max throughput (wrk, closed loop, popup.shown)",
         "fixed": "ack latency at 50% of the same run's max (open loop, popup.shown)",
         "converted": "max throughput, distinct popup.converted (dedup key per event; closed loop)"}
for ph in phases:
    w("")
    w(f"### {names.get(ph, ph)}")
    w("")
    w("| target | rate asked | events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | sidecar CPU-µs/event | PostgreSQL CPU-µs/event | batch mean | commit ms | delivered/s meanwhile | delivered/s after, no load |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        w(f"| {t} | {f(med(t, ph, 'rate'))} | {f(med(t, ph, 'rps'))} | {f(med(t, ph, 'p50_ms'), '%.2f')} | {f(med(t, ph, 'p90_ms'), '%.2f')} | {f(med(t, ph, 'p99_ms'), '%.2f')} | {f(med(t, ph, 'p999_ms'), '%.2f')} | {f(med(t, ph, 'cpu_us'))} | {f(med(t, ph, 'pg_cpu_us'))} | {f(med(t, ph, 'batch_mean'), '%.1f')} | {f(med(t, ph, 'commit_ms'), '%.2f')} | {f(med(t, ph, 'delivered_rps'))} | {f(med(t, ph, 'drain_rps'))} |")
if "max" in phases:
    w("")
    w("Per-run events/s at max (wrk), and ratios within a run:")
    w("")
    w("| run | " + " | ".join(targets) + " | postgres/sqlite | postgres/direct |")
    w("|---" * (len(targets) + 3) + "|")
    rps = {(r["target"], r["run"]): float(r["rps"]) for r in rows if r["phase"] == "max"}
    for run in sorted({r["run"] for r in rows}, key=int):
        cells = [f(rps.get((t, run))) for t in targets]
        pg, sq, di = rps.get(("postgres", run)), rps.get(("sqlite", run)), rps.get(("direct", run))
        ratio = lambda a, b: "-" if not a or not b else "%.2f" % (a / b)
        w(f"| {run} | " + " | ".join(cells) + f" | {ratio(pg, sq)} | {ratio(pg, di)} |")
text = "\n".join(out) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
EOF
log "raw rows: $RAW; client outputs in $OUT"
