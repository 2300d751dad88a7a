#!/usr/bin/env bash
# Builds hookgate with profile-guided optimization (PGO), for release images:
#
#   bash scripts/pgo-build.sh          # -> target/pgo/hookgate
#   bash scripts/pgo-build.sh --train-only target/release/hookgate
#                                      # only the training run, on that binary
#                                      # (CI: the training still works)
#
# 1. an instrumented release build (rustc -Cprofile-generate) in target/pgo-gen;
# 2. a training load over real sockets on loopback: the instrumented sidecar
#    in front of examples/bench_upstream, with wrk sending signed posts of
#    all four events (kept-alive connections) to a direct route and to a
#    queued route on an SQLite store (ingest and delivery), popup.converted
#    on a new TLS connection per request, posts with a bad signature (401)
#    and scrapes of /metrics; then SIGTERM, so the profile is written at exit;
# 3. llvm-profdata merges the profile; 4. the release build with
#    -Cprofile-use in target/pgo.
#
# `--target` keeps RUSTFLAGS off build scripts and proc macros (they would
# write profiles of the compiler's own runs). The training run checks its
# traffic, or the profile would describe a broken run: every signed post
# answered 2xx, the bad ones refused, the queued route drained with
# nothing dead; otherwise the script fails.
#
# Needs: wrk, openssl, curl, python3 (installed from Debian if missing, as
# the benchmarks do) and llvm-profdata of rustc's LLVM major version:
# $LLVM_PROFDATA, else the rustup component llvm-tools
# (`rustup component add llvm-tools`), else Debian's llvm-N package.
# benches/RESULTS.md ("Eleventh round") has what PGO changes, measured.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=pgo-build.sh
# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"

TARGET=${PGO_TARGET:-$(rustc -vV | awk '/^host:/ {print $2}')}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GEN_DIR=$TARGET_DIR/pgo-gen
USE_DIR=$TARGET_DIR/pgo
PROFILES=$TARGET_DIR/pgo-profiles
# Seconds of the main load (keep-alive posts to the direct route).
TRAIN_S=${TRAIN_S:-20}

TRAIN_ONLY=
if [ "${1:-}" = --train-only ]; then
    TRAIN_ONLY=${2:?--train-only needs the hookgate binary to train}
    [ -x "$TRAIN_ONLY" ] || die "--train-only: $TRAIN_ONLY is not an executable"
elif [ $# -gt 0 ]; then
    die "usage: bash scripts/pgo-build.sh [--train-only HOOKGATE_BIN]"
fi

need_tools wrk=wrk openssl=openssl curl=curl python3=python3

if [ -z "$TRAIN_ONLY" ]; then
    # --- llvm-profdata of rustc's LLVM ------------------------------------------
    LLVM_MAJOR=$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')
    find_profdata() {
        local c sysroot
        if [ -n "${LLVM_PROFDATA:-}" ]; then echo "$LLVM_PROFDATA"; return; fi
        sysroot=$(rustc --print sysroot)
        for c in "$sysroot/lib/rustlib/$TARGET/bin/llvm-profdata" \
            "/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata" "$(command -v "llvm-profdata-$LLVM_MAJOR" || true)"; do
            if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return; fi
        done
    }
    PROFDATA=$(find_profdata)
    if [ -z "$PROFDATA" ]; then
        log "no llvm-profdata for LLVM $LLVM_MAJOR: trying rustup's llvm-tools, then Debian's llvm-$LLVM_MAJOR"
        rustup component add llvm-tools >/dev/null 2>&1 || need_tools "llvm-profdata-$LLVM_MAJOR=llvm-$LLVM_MAJOR" || true
        PROFDATA=$(find_profdata)
    fi
    [ -n "$PROFDATA" ] || die "no llvm-profdata for rustc's LLVM $LLVM_MAJOR (set LLVM_PROFDATA)"
    "$PROFDATA" --version | grep -q "version $LLVM_MAJOR\." ||
        die "$PROFDATA is not LLVM $LLVM_MAJOR (rustc's): $("$PROFDATA" --version | tr '\n' ' ')"

    # --- 1. the instrumented build ----------------------------------------------
    rm -rf "$PROFILES"
    mkdir -p "$PROFILES/raw"
    log "instrumented build (LLVM $LLVM_MAJOR, $TARGET)"
    CARGO_TARGET_DIR=$GEN_DIR RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PROFILES/raw" \
        timeout 1800 cargo build --release --locked --quiet --target "$TARGET" --bin hookgate
    GEN_BIN=$GEN_DIR/$TARGET/release/hookgate
else
    GEN_BIN=$TRAIN_ONLY
fi
log "the training upstream (examples/bench_upstream, not instrumented)"
timeout 1800 cargo build --release --locked --quiet --example bench_upstream
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream

# --- 2. the training load ---------------------------------------------------
WORK=$(mktemp -d /tmp/hookgate-pgo.XXXXXX)
bench_cleanup_on_exit
read -r UP_PORT HG_PORT HG_ADMIN < <(free_ports 3)
self_signed_cert
printf 'whsec-pgo-training-0123456789abcdef\n' > "$WORK/secret"
# Training bodies, all four events in about the proportions a popup sends
# them (each is shown more often than clicked, clicked more often than
# converted): popup.converted at 1.5 KiB, not the load benchmark's 1 KiB
# (the other three are those of run.sh's BODY=mix).
# (The sign command is hookgate's too: its runs are part of the profile.)
bench_mix_lua "$WORK/mix.lua" "$GEN_BIN" "$WORK/secret" 1536
SIG=$("$GEN_BIN" sign --secret-file "$WORK/secret" "$WORK/mix-converted.json")
bench_post_lua "$WORK/post.lua" "$WORK/mix-converted.json" "$SIG"
bench_post_lua "$WORK/bad.lua" "$WORK/mix-converted.json" "sha256=$(printf '0%.0s' $(seq 64))"
sed 's/^wrk.method = "POST"/wrk.method = "POST"\nwrk.headers["Connection"] = "close"/' \
    "$WORK/post.lua" > "$WORK/close.lua"

"$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" > "$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$UP_PORT/count"

# Two routes on one sidecar: direct, and queued on SQLite. Dedup off on
# both: the load repeats its bodies.
HG_LOG_LEVEL=info bench_hookgate_toml "$WORK/hookgate.toml" "" 'dedup_events = []' \
    "[store]
engine = \"sqlite\"
path = \"$WORK/events.db\""
cat >> "$WORK/hookgate.toml" <<EOT
[[routes]]
name = "queued"
path = "/webhooks/queued"
secret_files = ["$WORK/secret"]
dedup_events = []
delivery = "queued"
EOT

wrk_load() { # $1 seconds, $2 connections, $3 lua, $4 url
    timeout $(($1 + 30)) wrk -t1 -c"$2" -d"$1s" -s "$WORK/$3" "$4" > "$WORK/wrk.out" 2>&1 ||
        die "wrk $3 $4: $(tail -3 "$WORK/wrk.out")"
}
queue() { queue_events "$HG_ADMIN" "$1"; }
# training BIN: the training run of the sidecar binary BIN, ended by
# SIGTERM (an instrumented binary writes its profile at exit).
training() {
    "$1" serve -c "$WORK/hookgate.toml" > "$WORK/hookgate.log" 2>&1 &
    HG_PID=$!
    PIDS+=("$HG_PID")
    wait_http "http://127.0.0.1:$HG_ADMIN/readyz" "$WORK/hookgate.log"
    local base=https://127.0.0.1:$HG_PORT/webhooks
    log "training $(basename "$1"): ${TRAIN_S}s direct, then handshakes, queued, 401s, /metrics"
    wrk_load "$TRAIN_S" 64 mix.lua "$base/coolpopup"
    wrk_result direct "$(cat "$WORK/wrk.out")"
    wrk_load 3 16 close.lua "$base/coolpopup"
    wrk_load $((TRAIN_S / 2)) 64 mix.lua "$base/queued"
    wrk_result queued "$(cat "$WORK/wrk.out")"
    wrk_load 2 16 bad.lua "$base/coolpopup"
    grep -q '^RESULT .* status=[1-9]' "$WORK/wrk.out" || die "the bad signature was not refused: $(cat "$WORK/wrk.out")"
    for _ in $(seq 1 20); do curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$HG_ADMIN/metrics"; done
    # The queued events reach the app (delivery is in the profile too).
    # The gauges are refreshed every second: wait for delivered events to
    # show and none pending.
    for _ in $(seq 1 600); do
        [ "$(queue pending)" = 0 ] && [ "$(queue delivered)" -gt 0 ] && break
        sleep 0.1
    done
    if [ "$(queue pending)" != 0 ] || [ "$(queue delivered)" = 0 ]; then
        die "the queued route did not deliver: $(queue pending) pending, $(queue delivered) delivered"
    fi
    [ "$(queue dead)" = 0 ] || die "the queued route has $(queue dead) dead events"
    kill -TERM "$HG_PID"
    wait "$HG_PID" || die "hookgate did not exit cleanly: $(tail -5 "$WORK/hookgate.log")"
}
training "$GEN_BIN"
if [ -n "$TRAIN_ONLY" ]; then
    log "the training run passed on $TRAIN_ONLY"
    exit 0
fi
ls "$PROFILES"/raw/*.profraw >/dev/null 2>&1 || die "no profile written under $PROFILES/raw"

# --- 3. merge, 4. the optimized build ---------------------------------------
"$PROFDATA" merge -o "$PROFILES/hookgate.profdata" "$PROFILES"/raw/*.profraw
log "optimized build with $PROFILES/hookgate.profdata"
CARGO_TARGET_DIR=$USE_DIR RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PROFILES/hookgate.profdata" \
    timeout 1800 cargo build --release --locked --quiet --target "$TARGET" --bin hookgate
# (No BOLT on top: the build it needs, relocations kept with --emit-relocs,
# ran 8 % slower than this one even after llvm-bolt's layout; RESULTS.md.)
cp "$USE_DIR/$TARGET/release/hookgate" "$USE_DIR/hookgate"
log "built $USE_DIR/hookgate"
