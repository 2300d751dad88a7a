#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this):
#   1. formatting and lints
#   2. unit and integration tests (real TLS sockets on 127.0.0.1:0)
#   3. the release binary against the black-box conformance suite (../shared)
#   4. the release binary under faults (security/faults.py --short, ~25 s) and
#      its TLS listener scanned (security/tls-scan.sh --short, ~40-55 s)
#   5. the admin console in headless Chromium (tests/browser/console.py)
#   6. the image build's PGO training run, on the release binary
#      (scripts/pgo-build.sh --train-only: its traffic still passes, ~20 s)
#   7. the deploy/ manifests and the image's runtime contract (deploy/check.sh)
# Needs: cargo (with rustfmt and clippy), python3, openssl, PostgreSQL server
# binaries (package postgresql: the store tests start their own), testssl.sh,
# chromium and chromium-driver with Python's selenium, wrk and curl (.ci/run
# installs them);
# deploy/check.sh installs its own Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

# One full run builds every target once: incremental caches and full debug
# info only take disk (about 7.7 GB in all with them, 3 GB without; a CI run
# once failed on a full disk). Line tables keep backtraces' file:line.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
step "disk"
df -h . /tmp | sed 's/^/  /'
avail_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${avail_kb:-0}" -lt 4000000 ]; then
    echo "warning: under 4 GB free here; the build needs about 3 GB" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
cargo test --locked --all-targets

step "cargo build --release"
cargo build --locked --release

step "conformance suite"
if [ -f ../shared/conformance/run.py ]; then
    python3 ../shared/conformance/run.py --bin target/release/hookgate
    # The second part's cases: every group (edges, unknown events, replay window, dedup, queued, console).
    step "conformance suite, second part (landed groups)"
    python3 ../shared/conformance/run.py --bin target/release/hookgate \
        --extra ../shared/conformance/second_part.py \
        -k second.
else
    echo "../shared/conformance/run.py not found: the conformance suite needs the shared folder beside the repo" >&2
    exit 1
fi

# The short modes run every phase and every verdict line of SECURITY.md's
# security tests, lighter; the full runs are documented there.
step "faults under load, short (security/faults.py --short)"
python3 security/faults.py --short --bin target/release/hookgate

step "TLS scan, short (security/tls-scan.sh --short)"
HG_BIN=target/release/hookgate bash security/tls-scan.sh --short

step "admin console in a browser (headless Chromium, Selenium)"
python3 tests/browser/console.py target/release/hookgate

step "PGO training run on the release binary (scripts/pgo-build.sh --train-only)"
TRAIN_S=4 bash scripts/pgo-build.sh --train-only target/release/hookgate

if [ -f deploy/check.sh ]; then
    step "deploy manifests and runtime contract"
    bash deploy/check.sh
fi
