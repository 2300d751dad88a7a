#!/usr/bin/env python3
"""Write deploy/alerts/rules.yaml, the plain Prometheus rule file, from the
one source deploy/kubernetes/prometheusrule.yaml (its spec.groups).

  extract.py            rewrite rules.yaml
  extract.py --check    exit 1 if rules.yaml differs from what it would write

Needs PyYAML.
"""

from __future__ import annotations

import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "kubernetes", "prometheusrule.yaml")
TARGET = os.path.join(HERE, "rules.yaml")

HEADER = """\
# GENERATED from deploy/kubernetes/prometheusrule.yaml by
# deploy/alerts/extract.py: edit that file, then run the script.
# A plain Prometheus rule file (rule_files:) for a Prometheus without the
# Operator, and the file promtool checks and tests (deploy/alerts/check.sh).
"""


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def render() -> str:
    with open(SOURCE, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if doc.get("kind") != "PrometheusRule" or doc.get("apiVersion") != "monitoring.coreos.com/v1":
        raise SystemExit(f"{SOURCE}: not a monitoring.coreos.com/v1 PrometheusRule")
    groups = doc["spec"]["groups"]
    body = yaml.dump({"groups": groups}, Dumper=Dumper, sort_keys=False,
                     default_flow_style=False, width=1000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        try:
            current = open(TARGET, encoding="utf-8").read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{TARGET} is out of date: run python3 deploy/alerts/extract.py")
            return 1
        print("rules.yaml matches prometheusrule.yaml")
        return 0
    if argv:
        print(__doc__)
        return 2
    with open(TARGET, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
