#!/usr/bin/env bash
# The soak (issue 16): hookgate at LOAD_PCT (50) % of its measured max for
# DURATION (1800) s on a mix of a direct and a queued route (SQLite) with
# rejections mixed in, sampling every SAMPLE (10) s:
#   - RSS (VmRSS of /proc/PID/status), open file descriptors
#     (/proc/PID/fd), store size (events.db + -wal + -shm bytes), and the
#     queue's pending gauge (hookgate_queue_events{state="pending"});
# then the slope of each per hour (least squares over the samples after
# WARMUP, default 10 % of DURATION), and examples/soak.rs's verdict: every
# popup.converted answered 200 (direct and queued) received by the app
# exactly once, every rejection rejected and never forwarded.
#
#   bash benches/soak/run.sh                   # 30 min + ~1 min calibration and drain
#   DURATION=300 WARMUP=180 bash benches/soak/run.sh   # a short check of the script itself
#
# Steps: build (release, --locked); one `hookgate serve` on CPU $SUT_CPU
# with two routes on one SQLite store in a temp dir (STORE_DIR, /tmp), TLS
# 1.3 with a throwaway openssl certificate; examples/soak.rs (the app
# hookgate forwards to, and the load) on CPU $LOAD_CPU. Calibration:
# CALIBRATE (15) s closed loop over CONNS (32) connections with the same
# mix, then its backlog delivered; max = the requests over the closed loop's
# time plus the backlog's (MAX_BASIS=sustained; "ingest": the answers/s of
# the closed loop alone, which the queue cannot keep up with: see
# benches/RESULTS.md). Then the soak, open loop at LOAD_PCT % of max over
# the same connections; then the drain (every event
# answered 200 at the app, the pending gauge 0, at most DRAIN_TIMEOUT s).
#
# Retention is shortened so the store CAN be flat within the soak:
# max_event_age = "1m" on both routes (so the dedup window, which may not
# be shorter, is 1 min too: the store's dedup keys live 1 min, not 72 h)
# and retention_delivered = "1m" on the queued route (not 24 h). The purge
# runs every minute, so rows reach their steady state after about 3 min;
# with the defaults the store grows for 24 h (delivered events) and 72 h
# (keys) by design, and a 30-min soak could not tell a leak from that.
#
# Output: a markdown report on stdout and in $OUT/report.md; the samples in
# $OUT/samples.tsv, the soak tool's JSON in $OUT/calibration.json and
# $OUT/soak.json, hookgate's warnings and purge lines in $OUT/hookgate.log,
# its final /metrics in $OUT/metrics.txt. Exits 1 if the soak tool failed
# (anything lost, duplicated, leaked, unexpected) or hookgate died.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

DURATION=${DURATION:-1800}
WARMUP=${WARMUP:-$((DURATION / 10))}
CALIBRATE=${CALIBRATE:-15}
LOAD_PCT=${LOAD_PCT:-50}
CONNS=${CONNS:-32}
SAMPLE=${SAMPLE:-10}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
BODY_BYTES=${BODY_BYTES:-1024}
# The queued route's attempts in flight (hookgate's default: 4).
DELIVERY_CONCURRENCY=${DELIVERY_CONCURRENCY:-4}
# RATE=R skips the calibration and soaks at R requests/s.
RATE=${RATE:-}
# The max the rate is a share of: "sustained" (the queue drained: see the
# calibration below) or "ingest" (the closed loop's answers/s).
MAX_BASIS=${MAX_BASIS:-sustained}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NICE=${NICE:--10}
# With sched autogroup, nice only counts inside a session: give this
# script's session group the same priority (as benches/load/run.sh does).
if [ "$NICE" != 0 ] && [ -w /proc/self/autogroup ]; then echo "$NICE" > /proc/self/autogroup 2>/dev/null || true; fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET_DIR/bench-soak/$(date +%Y%m%d-%H%M%S)}
# (Not HOOKGATE_*: hookgate reads every HOOKGATE_* variable as a config key.)
HG_BIN=${HG_BIN:-$TARGET_DIR/release/hookgate}
SOAK_BIN=$TARGET_DIR/release/examples/soak
STORE_DIR=${STORE_DIR:-/tmp}
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)

BENCH=soak/run.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

need_tools openssl=openssl curl=curl python3=python3
# Pinning: the sidecar on one CPU, the load and the app on the other.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SUT=(nice -n "$NICE" taskset -c "$SUT_CPU")
    LOAD=(nice -n "$NICE" taskset -c "$LOAD_CPU")
    PINNED="sidecar on CPU $SUT_CPU, load and app on CPU $LOAD_CPU"
else
    SUT=(nice -n "$NICE")
    LOAD=(nice -n "$NICE")
    PINNED="not pinned (no taskset or fewer than 2 CPUs)"
    log "warning: $PINNED"
fi

log "building the release binary and the examples"
timeout 1800 cargo build --release --locked --quiet --bin hookgate --examples

mkdir -p "$OUT"
WORK=$(mktemp -d "$STORE_DIR/hookgate-soak.XXXXXX")
mkdir -p "$WORK/store"
bench_cleanup_on_exit

# Free loopback ports (bound together, released): public, admin, app.
read -r PORT ADMIN APP < <(free_ports 3)

self_signed_cert
# A throwaway secret, made here and deleted with $WORK; never printed.
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/secret"
DB=$WORK/store/events.db

cat > "$WORK/hookgate.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
[server.tls]
cert_file = "$WORK/cert.pem"
key_file = "$WORK/key.pem"
min_version = "1.3"
[admin]
listen = "127.0.0.1:$ADMIN"
[upstream]
url = "http://127.0.0.1:$APP"
[log]
format = "json"
level = "info"
[store]
engine = "sqlite"
path = "$DB"

[[routes]]
name = "direct"
path = "/webhooks/direct"
secret_files = ["$WORK/secret"]
max_event_age = "1m"

[[routes]]
name = "queued"
path = "/webhooks/queued"
secret_files = ["$WORK/secret"]
delivery = "queued"
max_event_age = "1m"
retention_delivered = "1m"
delivery_concurrency = $DELIVERY_CONCURRENCY
EOF
"$HG_BIN" check -c "$WORK/hookgate.toml" > "$WORK/check.txt" 2>&1 || die "hookgate check: $(cat "$WORK/check.txt")"

# hookgate logs a line per request: keep its warnings, errors and purges.
"${SUT[@]}" "$HG_BIN" serve -c "$WORK/hookgate.toml" \
    > >(LC_ALL=C grep --line-buffered -F -e '"level":"WARN"' -e '"level":"ERROR"' -e 'retention purge' > "$OUT/hookgate.log") 2>&1 &
HG_PID=$!
PIDS+=("$HG_PID")
for _ in $(seq 1 200); do
    curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$ADMIN/readyz" && break
    kill -0 "$HG_PID" 2>/dev/null || die "hookgate exited: $(tail -5 "$OUT/hookgate.log")"
    sleep 0.05
done
curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$ADMIN/readyz" || die "hookgate not ready within 10 s"

SOAK_ARGS=(--addr "127.0.0.1:$PORT" --secret-file "$WORK/secret" --ca insecure
    --app "127.0.0.1:$APP" --admin "127.0.0.1:$ADMIN" --conns "$CONNS"
    --body-bytes "$BODY_BYTES" --drain-timeout "$DRAIN_TIMEOUT")
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

if [ -z "$RATE" ]; then
    log "calibration: ${CALIBRATE}s closed loop, $CONNS connections"
    "${LOAD[@]}" "$SOAK_BIN" "${SOAK_ARGS[@]}" --rate 0 --duration "$CALIBRATE" --warmup 3 --tag cal --progress 0 \
        > "$OUT/calibration.json" 2> "$OUT/calibration.log" \
        || die "calibration run failed: $(cat "$OUT/calibration.log") $(cat "$OUT/calibration.json")"
    # Closed loop, the queued route's delivery falls behind its ingest (both
    # go through the store's one writer): INGEST_MAX is the answers/s, and
    # SUSTAINED_MAX the requests over the closed-loop time plus the time the
    # app took to get the backlog, i.e. with delivery keeping up.
    INGEST_MAX=$(json "$OUT/calibration.json" 'round(d["per_second"])')
    SUSTAINED_MAX=$(json "$OUT/calibration.json" 'round(d["sent_total"] / (d["load_seconds"] + (d["drain"]["all_received_seconds"] or d["drain"]["seconds"])))')
    case $MAX_BASIS in
        sustained) MAX=$SUSTAINED_MAX ;;
        ingest) MAX=$INGEST_MAX ;;
        *) die "MAX_BASIS is sustained or ingest" ;;
    esac
    RATE=$(( MAX * LOAD_PCT / 100 ))
    [ "$RATE" -gt 0 ] || die "calibration measured $MAX requests/s"
    CALIBRATION="calibration ($CALIBRATE s closed loop, same mix): ingest max $INGEST_MAX requests/s, sustained max (backlog delivered) $SUSTAINED_MAX requests/s; soak at **$RATE requests/s** ($LOAD_PCT % of the $MAX_BASIS max)"
else
    echo '{}' > "$OUT/calibration.json"
    CALIBRATION="no calibration: soak at **$RATE requests/s** (RATE given)"
fi
log "soak at $RATE requests/s for ${DURATION}s"

# --- the soak, sampled --------------------------------------------------------
SAMPLES=$OUT/samples.tsv
printf 't_s\trss_kib\tfds\tstore_bytes\tdb_bytes\twal_bytes\tpending\tcpu_ticks\tthreads\tload_cpu_ticks\n' > "$SAMPLES"
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
pending() { queue_events "$ADMIN" pending || echo -1; }
sample() { # t
    local rss fds db wal shm thr
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$HG_PID/status")
    thr=$(awk '/^Threads:/ {print $2}' "/proc/$HG_PID/status")
    fds=$(find "/proc/$HG_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    db=$(size "$DB"); wal=$(size "$DB-wal"); shm=$(size "$DB-shm")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$rss" "$fds" $((db + wal + shm)) "$db" "$wal" \
        "$(pending)" "$(awk '{print $14 + $15}' "/proc/$HG_PID/stat")" "$thr" \
        "$(awk '{print $14 + $15}' "/proc/$SOAK_PID/stat" 2>/dev/null || echo 0)" >> "$SAMPLES"
}

T0=$(date +%s.%N)
"${LOAD[@]}" "$SOAK_BIN" "${SOAK_ARGS[@]}" --rate "$RATE" --duration "$DURATION" --tag soak --progress 60 \
    > "$OUT/soak.json" 2> "$OUT/soak.log" &
SOAK_PID=$!
PIDS+=("$SOAK_PID")
elapsed() { awk -v t0="$T0" -v t1="$(date +%s.%N)" 'BEGIN {printf "%.1f", t1 - t0}'; }
sample 0.0
next=$SAMPLE
while kill -0 "$SOAK_PID" 2>/dev/null; do
    kill -0 "$HG_PID" 2>/dev/null || die "hookgate died during the soak: $(tail -5 "$OUT/hookgate.log")"
    now=$(elapsed)
    if awk -v n="$now" -v d="$DURATION" 'BEGIN {exit !(n > d)}'; then break; fi
    if awk -v n="$now" -v x="$next" 'BEGIN {exit !(n >= x)}'; then
        sample "$now"
        next=$((next + SAMPLE))
    fi
    sleep 0.5
done
sample "$(elapsed)"
# The drain: the tool waits for every event to reach the app.
SOAK_RC=0
wait "$SOAK_PID" || SOAK_RC=$?
END_S=$(elapsed)
printf 'after_drain\t' > "$OUT/after-drain.tsv"; sample "$END_S"; tail -1 "$SAMPLES" >> "$OUT/after-drain.tsv"
sed -i '$d' "$SAMPLES"
kill -0 "$HG_PID" 2>/dev/null || die "hookgate died during the drain"
curl -sf --max-time 5 "http://127.0.0.1:$ADMIN/metrics" > "$OUT/metrics.txt" || true
LOAD_AFTER=$(cut -d" " -f1-3 /proc/loadavg)
PURGES=$(grep -c 'retention purge' "$OUT/hookgate.log" || true)
WARNINGS=$(grep -c -v 'retention purge' "$OUT/hookgate.log" || true)

# --- report -------------------------------------------------------------------
python3 - "$SAMPLES" "$OUT/soak.json" "$OUT/calibration.json" "$OUT/report.md" "$OUT/after-drain.tsv" "$OUT/metrics.txt" "$OUT/hookgate.log" <<EOF
import csv, json, sys
samples = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")]
try:
    soak = json.load(open(sys.argv[2]))
except Exception as e:
    soak = {"error": f"no JSON from the soak tool: {e}"}
after = open(sys.argv[5]).read().split("\t")
warmup = $WARMUP
fit = [s for s in samples if s["t_s"] >= warmup]

def slope(key):
    # least squares, units per hour
    n = len(fit)
    if n < 2:
        return float("nan")
    xs = [s["t_s"] / 3600 for s in fit]
    ys = [s[key] for s in fit]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")

out = []
w = out.append
w("## Soak")
w("")
w("$(date -u +%Y-%m-%dT%H:%MZ), \`bash benches/soak/run.sh\` (DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS LOAD_PCT=$LOAD_PCT BODY_BYTES=$BODY_BYTES),")
w("commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples Cargo.toml Cargo.lock || echo ' + uncommitted changes'), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $PINNED;")
w("load average before $LOAD_BEFORE, after $LOAD_AFTER; store on $(df -T "$STORE_DIR" | awk 'NR==2 {print $2}').")
w("")
w("- $CALIBRATION for $DURATION s; queued route's delivery_concurrency = $DELIVERY_CONCURRENCY")
w("- retention: max_event_age = dedup window = 1 min on both routes, retention_delivered = 1 min on the queued one (purge every minute): steady state after about 3 min, so the store can be flat; with the defaults (72 h keys, 24 h delivered events) it grows by design for a day")
w(f"- slopes: least squares over the {len(fit)} samples after the {warmup} s warm-up, every $SAMPLE s")
w("")
w("| | start | after warm-up | end | min | max | slope / hour | slope / hour, % of mean |")
w("|---|---|---|---|---|---|---|---|")
rows = [("RSS (MiB)", "rss_kib", 1 / 1024), ("open fds", "fds", 1), ("store (MiB, db+wal+shm)", "store_bytes", 1 / 2**20),
        ("  of which db (MiB)", "db_bytes", 1 / 2**20), ("  of which wal (MiB)", "wal_bytes", 1 / 2**20), ("queue pending", "pending", 1),
        ("threads", "threads", 1)]
for label, key, scale in rows:
    vs = [s[key] for s in samples]
    fv = [s[key] for s in fit] or vs
    mean = sum(fv) / len(fv)
    sl = slope(key)
    rel = f"{100 * sl / mean:+.1f} %" if mean else "-"
    w(f"| {label} | {vs[0] * scale:.2f} | {fv[0] * scale:.2f} | {vs[-1] * scale:.2f} | {min(vs) * scale:.2f} | {max(vs) * scale:.2f} | {sl * scale:+.3f} | {rel} |")
w("")
cpu = samples[-1]["cpu_ticks"] - samples[0]["cpu_ticks"]
span = samples[-1]["t_s"] - samples[0]["t_s"]
lcpu = samples[-1]["load_cpu_ticks"] - samples[0]["load_cpu_ticks"]
w(f"CPU over the soak: hookgate {cpu / $(getconf CLK_TCK) / span * 100 if span else 0:.0f} % of one core, the soak tool (load + app) {lcpu / $(getconf CLK_TCK) / span * 100 if span else 0:.0f} %. After the drain ({soak.get('drain', {}).get('seconds', float('nan')):.1f} s): RSS {float(after[2]) / 1024:.1f} MiB, {after[3]} fds, store {float(after[4]) / 2**20:.2f} MiB, pending {after[7]}.")
w("Retention purges logged: $PURGES; hookgate warnings/errors logged: $WARNINGS.")
w("")
if "sent" in soak:
    c, o = soak["converted"], soak["other_events"]
    w("| | count |")
    w("|---|---|")
    w(f"| requests sent | {soak['sent_total']} ({soak['per_second']:.0f}/s answered) |")
    for k, v in soak["sent"].items():
        w(f"| sent {k} | {v} |")
    w(f"| popup.converted answered 200, direct / queued | {c['answered_200_direct']} / {c['answered_200_queued']} |")
    w(f"| popup.converted received by the app, direct / queued | {c['received_direct']} / {c['received_queued']} |")
    w(f"| **popup.converted lost / duplicated** | **{c['lost']} / {c['duplicated']}** |")
    w(f"| other events answered 200 / received / lost / duplicated | {o['answered_200']} / {o['received']} / {o['lost']} / {o['duplicated']} |")
    w(f"| rejections forwarded (leaked) | {soak['leaked']} |")
    w(f"| unexpected answers / transport errors | {soak['unexpected']} / {soak['errors']} |")
    w(f"| app: foreign / unverified requests | {soak['app']['foreign']} / {soak['app']['unverified']} |")
    w("")
    w("Latency (ms, from when each request was due):")
    w("")
    w("| group | n | p50 | p90 | p99 | p99.9 | max |")
    w("|---|---|---|---|---|---|---|")
    for g, l in soak["latency_ms"].items():
        w(f"| {g} | {l['n']} | {l['p50']:.2f} | {l['p90']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | {l['max']:.2f} |")
    w("")
# When the tail happened: runs of seconds whose slowest answer took 100 ms
# or more, beside the retention purges (from hookgate's log), both in
# seconds since the load began.
if "slow_seconds" in soak:
    import datetime
    t0 = soak["started_unix"]
    runs = []
    for sec, ms in soak["slow_seconds"]:
        if runs and sec == runs[-1][1] + 1:
            runs[-1][1], runs[-1][2] = sec, max(runs[-1][2], ms)
        else:
            runs.append([sec, sec, ms])
    purges = []
    for line in open(sys.argv[7]):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("message") != "retention purge":
            continue
        end = datetime.datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00")).timestamp() - t0
        purges.append((end - doc.get("elapsed_ms", 0) / 1000, end, doc.get("deleted")))
    w(f"Seconds of the load whose slowest answer took 100 ms or more: {len(soak['slow_seconds'])}, in {len(runs)} runs; the retention purges beside them (s since the load began):")
    w("")
    w("| what | from s | to s | slowest ms / rows deleted |")
    w("|---|---|---|---|")
    rows = [(a, b, "slow", ms) for a, b, ms in runs] + [(a, b, "purge", n) for a, b, n in purges]
    for a, b, what, n in sorted(rows)[:60]:
        w(f"| {what} | {a:.1f} | {b + (1 if what == 'slow' else 0):.1f} | {n} |")
    w("")
w("Answers by kind: " + json.dumps(soak.get("answers", {})))
w("")
w("hookgate's counters at the end:")
w("")
w("\`\`\`")
for line in open(sys.argv[6]):
    if line.startswith(("hookgate_requests_total{", "hookgate_delivery_attempts_total{", "hookgate_duplicates_total{", "hookgate_queue_events{", "hookgate_store_commit_seconds_sum", "hookgate_store_commit_seconds_count", "hookgate_store_batch_size_sum", "hookgate_store_batch_size_count")):
        w(line.rstrip())
w("\`\`\`")
w("")
w("The soak tool's JSON:")
w("")
w("\`\`\`json")
w(json.dumps(soak))
w("\`\`\`")
text = "\n".join(out) + "\n"
open(sys.argv[4], "w").write(text)
print(text)
EOF
log "samples: $SAMPLES; report: $OUT/report.md"
[ "$SOAK_RC" = 0 ] || die "the soak tool reported a failure (exit $SOAK_RC): $(tail -3 "$OUT/soak.log")"
log "clean: nothing lost, duplicated, leaked or unexpected"
