#!/usr/bin/env python3
"""Check that every metric an alert rule uses is in a /metrics scrape.

  metric_names.py METRICS_FILE [--rules RULE_FILE] [--store | --no-store]

METRICS_FILE is a saved scrape of hookgate's admin /metrics (OpenMetrics or
Prometheus text). RULE_FILE defaults to rules.yaml beside this script. Every
hookgate_* name in the rules' `expr` (string literals and label values
excluded) must be a series the scrape has, or one its families declare:

  - a sample line with that name; or
  - a `# TYPE FAMILY TYPE` line whose series include it: a counter FAMILY
    has FAMILY_total (OpenMetrics names the family without `_total`, the
    older text format with it), a histogram FAMILY_bucket, FAMILY_sum,
    FAMILY_count, a summary FAMILY_sum and FAMILY_count, any family
    FAMILY_created, and a gauge/info/unknown FAMILY (info: FAMILY_info).
    Some exporters print the TYPE line of a labelled family that has no
    series yet; that counts as present. hookgate's (prometheus-client) does
    not: a family shows only once it has a series. So hookgate creates the
    reload series at 0 from the start, the request and queue series appear
    with the first request, and a scrape to check is taken after some
    traffic (deploy/check.sh stores one event first).

Names of the store (hookgate_store_*, hookgate_queue_*) exist only when the
config has a [store]. --store requires them; --no-store only lists them as
not checked; by default the scrape decides: a scrape with any such family is
taken as one from a sidecar with a store.

Prints every missing name (not only the first) and exits 1 if there is any,
0 otherwise; 2 on bad usage or an unreadable file.
"""

from __future__ import annotations

import os
import re
import sys

import yaml

STORE_ONLY = ("hookgate_store_", "hookgate_queue_")
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count", "_created", ""),
    "info": ("_info",),
    "stateset": ("",),
    "gauge": ("",),
    "unknown": ("",),
    "untyped": ("",),
}


def rule_names(path: str) -> dict[str, list[str]]:
    """hookgate_* metric name -> the rules (alert or record names) using it."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if isinstance(doc, dict) and doc.get("kind") == "PrometheusRule":
        doc = doc.get("spec", {})
    used: dict[str, list[str]] = {}
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            expr = str(rule.get("expr", ""))
            # Drop string literals (label values, regexes), then take names.
            expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
            who = rule.get("alert") or rule.get("record") or "?"
            for name in NAME.findall(expr):
                if name.startswith("hookgate_"):
                    used.setdefault(name, [])
                    if who not in used[name]:
                        used[name].append(who)
    return used


def scrape_names(path: str) -> tuple[set[str], set[str]]:
    """(every series name the scrape has or declares, the family names)."""
    names: set[str] = set()
    families: set[str] = set()
    samples: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    family, kind = parts[2], parts[3].lower()
                    families.add(family)
                    names.add(family)
                    for suffix in SUFFIXES.get(kind, ("",)):
                        names.add(family + suffix)
                continue
            m = NAME.match(line)
            if m:
                names.add(m.group(0))
                samples.add(m.group(0))
    # A scrape without TYPE lines: its sample names stand for the families.
    return names, families or samples


def main(argv: list[str]) -> int:
    args = list(argv)
    rules = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules.yaml")
    store: bool | None = None
    if "--rules" in args:
        i = args.index("--rules")
        if i + 1 >= len(args):
            print(__doc__)
            return 2
        rules = args[i + 1]
        del args[i:i + 2]
    if "--store" in args:
        store = True
        args.remove("--store")
    if "--no-store" in args:
        if store:
            print("--store and --no-store together")
            return 2
        store = False
        args.remove("--no-store")
    if len(args) != 1:
        print(__doc__)
        return 2
    try:
        used = rule_names(rules)
        have, families = scrape_names(args[0])
    except (OSError, yaml.YAMLError) as e:
        print(f"cannot read: {e}")
        return 2
    if store is None:
        store = any(f.startswith(STORE_ONLY) for f in families)
    print(f"{len(used)} hookgate metric name(s) in {rules}; scrape {args[0]}: "
          f"{len(families)} famil{'y' if len(families) == 1 else 'ies'}, "
          f"store metrics {'required' if store else 'not required (no [store])'}")
    missing, skipped = [], []
    for name in sorted(used):
        if name in have:
            print(f"  ok       {name}")
        elif not store and name.startswith(STORE_ONLY):
            skipped.append(name)
            print(f"  skipped  {name} (exists only with a [store])")
        else:
            missing.append(name)
            print(f"  MISSING  {name} (used by {', '.join(used[name])})")
    if not used:
        print("no hookgate_* metric in the rules")
        return 1
    if missing:
        print(f"{len(missing)} metric name(s) used in the rules are not in the scrape: "
              + ", ".join(missing))
        return 1
    print(f"all {len(used) - len(skipped)} checked name(s) present"
          + (f", {len(skipped)} store-only name(s) not checked" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
