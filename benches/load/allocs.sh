#!/usr/bin/env bash
# Heap allocations per forwarded request, counted by heaptrack: hookgate
# (a non-LTO build with line tables, so call sites resolve) forwards the
# signed 1 KiB popup.converted POST of benches/load/run.sh under
# `wrk -t1 -c$CONNS -d${DURATION}s`; then a second run without load counts
# start-up alone. allocations per request = (loaded − start-up) ÷ the
# requests the upstream received. Also lists the call sites that allocate
# at least 0.5 times a request (the first frames outside the allocator and
# std's collections).
#
#   bash benches/load/allocs.sh            # DURATION=5 CONNS=64
#
# Not a timing benchmark: the count does not depend on how busy the
# machine is (three runs of one build gave the same figure to 0.01). It
# includes setting up the $CONNS connections (TLS handshakes, the upstream
# pool), spread over the run's requests: 20.26 with DURATION=2 and 20.09
# with 5 on the same build, so compare builds at the same DURATION.
# Built with --no-default-features: the system allocator, whose malloc
# heaptrack intercepts (the release build's jemalloc is not seen by it);
# the count of allocations is the code's, not the allocator's.
# Output: markdown on stdout and in $OUT/allocs.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
SUT_CPU=${SUT_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# A build of its own (the shared release/ binary stays as it is).
PROF_DIR=${PROF_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/allocs}
OUT=${OUT:-${CARGO_TARGET_DIR:-$ROOT/target}/bench-allocs/$(date +%Y%m%d-%H%M%S)}

BENCH=allocs.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
need_tools heaptrack=heaptrack wrk=wrk openssl=openssl curl=curl taskset=util-linux python3=python3

log "building hookgate (release, no LTO, line tables) and the bench upstream into $PROF_DIR"
CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_STRIP=false \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_TARGET_DIR=$PROF_DIR timeout 900 cargo build --release --quiet --no-default-features --bin hookgate --example bench_upstream
HG_BIN=$PROF_DIR/release/hookgate
UPSTREAM_BIN=$PROF_DIR/release/examples/bench_upstream

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/hookgate-allocs.XXXXXX)
bench_cleanup_on_exit
read -r UP_PORT HG_PORT HG_ADMIN < <(free_ports 3)

self_signed_cert
printf 'whsec-load-benchmark-0123456789abcdef\n' > "$WORK/secret"
python3 "$ROOT/benches/load/body.py" "$WORK/body.json" 1024
SIG=$("$HG_BIN" sign --secret-file "$WORK/secret" "$WORK/body.json")
bench_post_lua "$WORK/post.lua" "$WORK/body.json" "$SIG"
# One body repeated: forwarded each time, not answered "duplicate".
bench_hookgate_toml "$WORK/hookgate.toml" "" 'dedup_events = []'

taskset -c "$LOAD_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$UP_PORT/count"

# $1 name, $2 seconds of load (0: none). Prints the allocation calls and
# the requests the upstream received during the run.
traced() {
    local name=$1 seconds=$2 up0 up1 pid out
    up0=$(upstream_count)
    taskset -c "$SUT_CPU" heaptrack -o "$WORK/$name" "$HG_BIN" serve -c "$WORK/hookgate.toml" \
        > "$WORK/$name.log" 2>&1 &
    local tracer=$!
    WAIT_HTTP_S=30 wait_http "http://127.0.0.1:$HG_ADMIN/readyz" "$WORK/$name.log"
    if [ "$seconds" != 0 ]; then
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${seconds}s" -s "$WORK/post.lua" \
            "https://127.0.0.1:$HG_PORT/webhooks/coolpopup")
        wrk_result "$name" "$out"
    fi
    sleep 0.3
    up1=$(upstream_count)
    pid=$(pgrep -f -n "^$HG_BIN serve -c $WORK/hookgate.toml") || die "hookgate under heaptrack not found"
    kill -TERM "$pid"
    wait "$tracer" || die "heaptrack/hookgate exited with an error: $(tail -3 "$WORK/$name.log")"
    local data="" f
    for f in "$WORK/$name".*zst "$WORK/$name".*gz "$WORK/$name.zst" "$WORK/$name.gz"; do
        [ -f "$f" ] && { data=$f; break; }
    done
    [ -n "$data" ] || die "no heaptrack data for $name"
    heaptrack_print "$data" -a 0 -p 0 -T 0 -l 0 > "$WORK/$name.txt" 2>&1
    heaptrack_print "$data" --flamegraph-cost-type allocations -F "$WORK/$name.stacks" \
        -a 0 -p 0 -T 0 -l 0 > /dev/null 2>&1
    local calls
    calls=$(awk '/^calls to allocation functions:/ {print $5}' "$WORK/$name.txt")
    [ -n "$calls" ] || die "heaptrack_print gave no count: $(head -5 "$WORK/$name.txt")"
    echo "$calls $((up1 - up0))"
}

log "start-up alone"
read -r IDLE_CALLS _ < <(traced idle 0)
log "under load, ${DURATION}s"
read -r LOAD_CALLS REQUESTS < <(traced load "$DURATION")
[ "$REQUESTS" -gt 0 ] || die "the upstream received no request"

python3 - "$WORK/load.stacks" "$IDLE_CALLS" "$LOAD_CALLS" "$REQUESTS" \
    "$(git -C "$ROOT" rev-parse --short HEAD)" > "$OUT/allocs.md" <<'PY'
import collections, re, sys
stacks, idle, load, requests, rev = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
# Frames (file names) that are the allocator or std's containers, skipped
# to reach the code that asked for the memory.
skip = {"alloc.rs", "boxed.rs", "bytes_mut.rs", "bytes.rs", "mod.rs", "string.rs", "raw_vec.rs",
        "spec_from_elem.rs", "spec_extend.rs", "spec_from_iter.rs", "spec_from_iter_nested.rs",
        "slice.rs", "map.rs", "set.rs", "cow.rs", "arc.rs", "rc.rs", "borrow.rs", "clone.rs",
        "fmt.rs", "into_iter.rs", "iterator.rs", "option.rs", "result.rs", "function.rs",
        "unsafe_cell.rs", "in_place_collect.rs", "str.rs", ""}
sites = collections.Counter()
for line in open(stacks):
    frames, _, n = line.rstrip("\n").rpartition(" ")
    key = []
    for frame in reversed(frames.split(";")):  # leaf first
        m = re.match(r"(.*) \((.*)\)$", frame)
        name, file = (m.group(1), m.group(2)) if m else (frame, "")
        if not key and (file in skip or name in ("malloc", "calloc", "realloc")):
            continue
        key.append(f"{name} ({file})")
        if len(key) == 3:
            break
    sites[" ← ".join(key)] += int(n)
per = (load - idle) / requests
print(f"## Allocations per forwarded request ({rev})\n")
print(f"- {requests} requests reached the upstream; {load} allocation calls under load, {idle} for start-up alone")
print(f"- **{per:.2f} allocations per request**\n")
print("| per request | call site (the first three frames past the allocator and std's containers) |")
print("|---|---|")
for site, n in sites.most_common():
    if n / requests < 0.5:
        break
    print(f"| {n / requests:.2f} | `{site}` |")
PY
cat "$OUT/allocs.md"
