#!/usr/bin/env bash
# Runs every fuzz target to a fixed number of executions (default 10^7 each),
# merges what the run found that adds coverage into the committed corpus
# (fuzz/corpus/<target>/, replayed by tests/fuzz_corpus.rs under plain
# `cargo test`), and prints one line per target with the counts libFuzzer
# reported.
#
#   bash fuzz/run.sh                       # all four targets, 10^7 each
#   RUNS=1000000 bash fuzz/run.sh payload  # one target, fewer executions
#
#   RUNS       executions per target (libFuzzer -runs)          [10000000]
#   SANITIZER  cargo fuzz -s: none | address                    [none]
#              (the crate forbids `unsafe`; none runs 4-6x faster, which
#              is what makes 10^7 executions of `pipeline` fit in minutes;
#              address is there for dependencies' unsafe code)
#   MERGE      1: merge new coverage into fuzz/corpus/<target>/  [1]
#   WORK       where the run's own corpus and logs go           [mktemp -d]
#
# Debug assertions are on (-a): overflow and debug_assert! fire as crashes.
# Exit status: 0 when every target ran to RUNS with no finding; 1 on a
# finding (the reproducer is in fuzz/artifacts/<target>/: fix the bug, then
# copy the file into fuzz/corpus/<target>/ so CI keeps replaying it) or when
# a target stopped short of RUNS; 2 when cargo-fuzz is missing.
set -euo pipefail
cd "$(dirname "$0")"

RUNS=${RUNS:-10000000}
SANITIZER=${SANITIZER:-none}
MERGE=${MERGE:-1}
WORK=${WORK:-$(mktemp -d /tmp/hookgate-fuzz.XXXXXX)}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(signature_header payload pipeline upstream_answer)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
# libFuzzer needs -Z flags: a nightly toolchain, or stable with RUSTC_BOOTSTRAP.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

"${fuzz[@]}" build -s "$SANITIZER" -a >&2

stat() { grep -m1 "^stat::$1:" "$2" | awk '{print $2}'; }
# The last status line ("#N DONE cov: C ft: F corp: K/..") carries coverage.
field() { grep -E '^#[0-9]+' "$2" | tail -1 | grep -oE "$1: [0-9]+" | awk '{print $2}'; }

rows=()
status=0
for t in "${targets[@]}"; do
    mkdir -p "$WORK/$t"
    log="$WORK/$t.log"
    echo "[fuzz/run.sh] $t: $RUNS executions (sanitizer $SANITIZER), log $log" >&2
    start=$(date +%s)
    rc=0
    # New inputs go to the first directory ($WORK), the seeds are read only.
    "${fuzz[@]}" run -s "$SANITIZER" -a "$t" "$WORK/$t" "corpus/$t" -- \
        -runs="$RUNS" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >"$log" 2>&1 || rc=$?
    secs=$(( $(date +%s) - start ))
    execs=$(stat number_of_executed_units "$log")
    rate=$(stat average_exec_per_sec "$log")
    cov=$(field cov "$log")
    ft=$(field ft "$log")
    finding=none
    if [ "$rc" -ne 0 ]; then
        finding="exit $rc: $(grep -m1 -E 'ERROR: libFuzzer|panicked|deadly signal|Test unit written' "$log" || echo 'see log')"
        status=1
    elif [ "${execs:-0}" -lt "$RUNS" ]; then
        finding="stopped at ${execs:-0} < $RUNS executions"
        status=1
    fi
    added=0
    if [ "$MERGE" = 1 ] && [ "$rc" -eq 0 ]; then
        # -merge=1 adds to corpus/$t only the inputs of $WORK/$t that
        # bring coverage corpus/$t does not already have: the committed
        # corpus grows by a minimal set, the named seeds stay.
        before=$(find "corpus/$t" -type f | wc -l)
        "${fuzz[@]}" run -s "$SANITIZER" -a "$t" "corpus/$t" "$WORK/$t" -- -merge=1 \
            >"$WORK/$t.merge.log" 2>&1
        added=$(( $(find "corpus/$t" -type f | wc -l) - before ))
    fi
    rows+=("| \`$t\` | ${execs:-?} | ${rate:-?} | ${secs} | ${cov:-?} | ${ft:-?} | $added | $finding |")
done

echo
echo "| target | executions | exec/s | seconds | coverage (edges) | features | added to corpus | finding |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "sanitizer: $SANITIZER, debug assertions on, runs per target: $RUNS, logs: $WORK"
exit $status
