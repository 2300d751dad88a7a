#!/usr/bin/env bash
# Checks of hookgate's alert rules, offline apart from installing promtool:
#
#   bash deploy/alerts/check.sh
#
# 1. rules.yaml is what extract.py makes of deploy/kubernetes/prometheusrule.yaml
#    (the one source).
# 2. `promtool check rules rules.yaml`.
# 3. `promtool test rules tests.yaml`, and every alert has a test where it
#    fires and one where it stays silent.
# 4. Every alert has severity, summary, description and runbook.
# 5. Every hookgate_* metric the rules use is documented (README.md, and
#    SPEC.md when ../shared/SPEC.md is beside the repository).
# 6. metric_names.py on the hand-written scrapes in testdata/.
#
# promtool comes from Debian's `prometheus` package (installed if missing; its
# daemon is not wanted: one the install started is stopped again). Prints
# PASS/FAIL per step and ends with `N passed, M failed`; exits 1 on any
# failure. Idempotent.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/hookgate-alerts-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
nstep=0
step() {
    local name=$1
    shift
    nstep=$((nstep + 1))
    local log=$WORK/step-$nstep.log
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %s\n' "$name"
        grep '^note: ' "$log" | sed 's/^/      /' || true
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
        tail -n 40 "$log" | sed 's/^/      | /'
    fi
}
say() { printf '%s\n' "$*"; }
die() { printf '%s\n' "$*"; return 1; }

ensure_tools() {
    if ! command -v python3 >/dev/null || ! python3 -c 'import yaml' 2>/dev/null; then
        apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-yaml >/dev/null \
            || die "cannot install python3-yaml" || return
    fi
    if ! command -v promtool >/dev/null; then
        local before after pid
        before=$(pgrep -x prometheus || true)
        say "promtool missing: apt-get install prometheus"
        apt-get update -qq || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            prometheus >/dev/null || die "apt-get install prometheus failed" || return
        # Stop a daemon the package's scripts may have started (only a new one).
        after=$(pgrep -x prometheus || true)
        for pid in $after; do
            if ! grep -qx "$pid" <<<"$before"; then
                say "stopping the prometheus daemon the install started (pid $pid)"
                kill "$pid" 2>/dev/null || true
            fi
        done
    fi
    command -v promtool >/dev/null || die "promtool not found" || return
    say "note: $(promtool --version 2>&1 | head -n 1)"
}

check_in_sync() {
    python3 "$HERE/extract.py" --check
}

check_rules() {
    promtool check rules "$HERE/rules.yaml"
}

check_tests() {
    (cd "$HERE" && promtool test rules tests.yaml)
}

# Every alert has a test case where it fires and one where it does not.
check_coverage() {
    python3 - "$HERE/rules.yaml" "$HERE/tests.yaml" <<'PY'
import sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r]
tests = yaml.safe_load(open(sys.argv[2]))["tests"]
fires, silent = {}, {}
for t in tests:
    for c in t.get("alert_rule_test", []):
        (fires if c.get("exp_alerts") else silent).setdefault(c["alertname"], []).append(c["eval_time"])
bad = 0
for r in rules:
    a = r["alert"]
    ok = a in fires and a in silent
    bad += not ok
    print(f"  {'ok ' if ok else 'BAD'} {a}: fires at {fires.get(a, '-')}, silent at {silent.get(a, '-')}")
names = {r["alert"] for r in rules}
for a in sorted(set(fires) | set(silent)):
    if a not in names:
        print(f"  BAD test of an alert that does not exist: {a}")
        bad += 1
print(f"note: {len(rules)} alerts, each firing and silent in the unit tests" if not bad else "")
sys.exit(1 if bad else 0)
PY
}

check_annotations() {
    python3 - "$HERE/rules.yaml" <<'PY'
import sys, yaml
bad = 0
for g in yaml.safe_load(open(sys.argv[1]))["groups"]:
    for r in g["rules"]:
        if "alert" not in r:
            continue
        missing = [k for k in ("summary", "description", "runbook") if not r.get("annotations", {}).get(k)]
        if r.get("labels", {}).get("severity") not in ("warning", "critical"):
            missing.append("labels.severity (warning|critical)")
        if missing:
            bad += 1
            print(f"{r['alert']}: missing {', '.join(missing)}")
        else:
            print(f"{r['alert']}: severity {r['labels']['severity']}, summary, description, runbook")
sys.exit(1 if bad else 0)
PY
}

# Every hookgate_* name in the rules appears in README.md or SPEC.md (as
# written there, or as the family name without _total).
check_documented() {
    local spec=$ROOT/../shared/SPEC.md docs=("$ROOT/README.md")
    [[ -f $spec ]] && docs+=("$spec") || say "note: ../shared/SPEC.md not found: README.md only"
    python3 -B - "$HERE" "${docs[@]}" <<'PY'
import os, re, sys
sys.path.insert(0, sys.argv[1])
from metric_names import rule_names
used = rule_names(os.path.join(sys.argv[1], "rules.yaml"))
text = "".join(open(p, encoding="utf-8").read() for p in sys.argv[2:])
documented = set(re.findall(r"hookgate_[a-z0-9_]+", text))
bad = [n for n in sorted(used) if n not in documented]
for n in sorted(used):
    print(f"  {'MISSING' if n in bad else 'ok     '} {n}")
sys.exit(1 if bad else 0)
PY
}

# metric_names.py: expected verdicts on the hand-written scrapes.
check_metric_names() {
    local f name want mode rc out bad=0
    for f in direct:0:auto store:0:auto store-missing:1:auto direct:1:--store; do
        IFS=: read -r name want mode <<<"$f"
        rc=0
        if [[ $mode == auto ]]; then
            out=$(python3 "$HERE/metric_names.py" "$HERE/testdata/scrape-$name.txt" 2>&1) || rc=$?
        else
            out=$(python3 "$HERE/metric_names.py" "$mode" "$HERE/testdata/scrape-$name.txt" 2>&1) || rc=$?
        fi
        printf '%s\n' "$out" | sed 's/^/    /'
        if [[ $rc == "$want" ]]; then
            say "  scrape-$name.txt ($mode): exit $rc as expected"
        else
            say "  scrape-$name.txt ($mode): exit $rc, want $want"
            bad=1
        fi
    done
    # The failing case must list both names it lacks.
    out=$(python3 "$HERE/metric_names.py" "$HERE/testdata/scrape-store-missing.txt" 2>&1 || true)
    grep -q 'MISSING  hookgate_queue_oldest_pending_age_seconds' <<<"$out" \
        && grep -q 'MISSING  hookgate_tls_cert_expiry_timestamp_seconds' <<<"$out" \
        || { say "  scrape-store-missing.txt: not every missing name listed"; bad=1; }
    return $bad
}

cd "$ROOT"
say "hookgate alert checks ($HERE)"
step "tools: python3 + PyYAML, promtool" ensure_tools
step "rules.yaml generated from kubernetes/prometheusrule.yaml, up to date" check_in_sync
step "promtool check rules rules.yaml" check_rules
step "promtool test rules tests.yaml" check_tests
step "every alert fires and stays silent in the unit tests" check_coverage
step "every alert: severity, summary, description, runbook" check_annotations
step "metric names in the rules are documented (README.md, SPEC.md)" check_documented
step "metric_names.py on testdata/ scrapes (pass, pass, fail, --store fail)" check_metric_names

echo "$passed passed, $failed failed"
((failed == 0))
