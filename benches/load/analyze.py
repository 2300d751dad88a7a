#!/usr/bin/env python3
"""Number crunching for benches/load/run.sh (stdlib only).

  analyze.py latency H2LOAD_LOG [SKIP_S]   -> "count non200 p50 p99 p999" (µs)
  analyze.py metrics METRICS_TEXT          -> "outcome=count" per hookgate_requests_total outcome
  analyze.py row PHASE TARGET RUN k=v...   -> one raw.tsv row, with rps, cpu_us, util derived
  analyze.py half-median-rps RAW TARGET    -> half the median max req/s of TARGET (the fixed rate)
  analyze.py report RAW                    -> the markdown results table
"""

import math
import statistics
import sys
from collections import defaultdict


def percentile(sorted_values, p):
    """Nearest-rank percentile (p in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = -(-p * len(sorted_values) // 100)  # ceil
    k = max(0, min(len(sorted_values) - 1, int(rank) - 1))
    return sorted_values[k]


def latency(path, skip_seconds="0"):
    """Counts every request; percentiles over those that started at least
    skip_seconds after the first one (connections are still opening before)."""
    rows = []
    non200 = 0
    with open(path) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) < 3:
                continue
            if cols[1] != "200":
                non200 += 1
            rows.append((int(cols[0]), int(cols[2])))
    if not rows:
        print(0, non200, "nan", "nan", "nan")
        return
    first = min(start for start, _ in rows)
    cut = first + float(skip_seconds) * 1e6
    lat = sorted(us for start, us in rows if start >= cut)
    print(len(rows), non200, percentile(lat, 50), percentile(lat, 99), percentile(lat, 99.9))


def metrics(path):
    counts = defaultdict(float)
    with open(path) as f:
        for line in f:
            if not line.startswith("hookgate_requests_total{"):
                continue
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] += float(value)
    for k, v in sorted(counts.items()):
        print(f"{k}={int(v)}")


def row(phase, target, run, *kvs):
    v = dict(kv.split("=", 1) for kv in kvs)
    req = int(v["requests"])
    dur = int(v["duration_us"]) / 1e6
    cpu = int(v["ticks"]) / int(v["hz"])
    out = [phase, target, run,
           f"rps={req / dur:.1f}", f"cpu_us={cpu * 1e6 / req:.2f}", f"util={cpu / dur:.3f}"]
    out += [f"{k}={val}" for k, val in v.items() if k not in ("ticks", "hz", "duration_us")]
    print(" ".join(out))


def load(raw):
    """{(phase, target): {key: [values in run order]}}"""
    rows = defaultdict(lambda: defaultdict(list))
    with open(raw) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or line.startswith("#"):
                continue
            phase, target, _run = parts[:3]
            for kv in parts[3:]:
                k, v = kv.split("=", 1)
                rows[(phase, target)][k].append(float(v))
    return rows


def sign_test(ratios, better):
    """'k of n (p = …)': runs with the ratio on the winning side of 1."""
    n = len(ratios)
    if not n:
        return "-"
    k = sum(1 for r in ratios if (r >= 1 if better == "≥ 1" else r <= 1))
    low = min(k, n - k)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(low + 1)) / 2 ** n)
    return f"{k} of {n} (p = {p:.2g})"


def half_median_rps(raw, target):
    print(int(statistics.median(load(raw)[("max", target)]["rps"]) / 2))


def med_spread(values, fmt="{:.0f}"):
    """'median (min–max)' of a list."""
    if not values:
        return "–"
    m = statistics.median(values)
    return f"{fmt.format(m)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(raw):
    rows = load(raw)
    names = {
        "a": "(a) upstream direct, plain HTTP",
        "b": "(b) nginx, 1 worker, TLS 1.3",
        "c": "(c) hookgate, TLS 1.3, full verification",
        "d": "(d) hookgate, second binary (ALT_BIN)",
    }
    targets = [t for t in ("a", "b", "c", "d") if rows[("max", t)]["rps"]]
    pct = "{:.0f}%"
    out = []
    out.append("Max throughput (wrk, closed loop). Cells: median (min–max) over runs.")
    out.append("")
    out.append("| | req/s | CPU-µs / req | SUT process CPU | SUT core busy | load core busy | peak RSS (MiB) |")
    out.append("|---|---|---|---|---|---|---|")
    for t in targets:
        mx = rows[("max", t)]
        out.append("| {} | {} | {} | {} | {} | {} | {:.1f} |".format(
            names[t],
            med_spread(mx["rps"]),
            med_spread(mx["cpu_us"], "{:.1f}"),
            med_spread([100 * u for u in mx["util"]], pct),
            med_spread([100 * u for u in mx["sut_cpu_busy"]], pct),
            med_spread([100 * u for u in mx["load_cpu_busy"]], pct),
            max(mx["hwm_kib"] or [0]) / 1024,
        ))
    rate = rows[("fixed", "b")]["rate"]
    out.append("")
    out.append("Fixed rate (h2load --h1 --rps, {} req/s in total = 50% of nginx's median max); "
               "latency in µs, first second of each run left out.".format(
                   f"{rate[0]:.0f}" if rate else "?"))
    out.append("")
    out.append("| | achieved req/s | p50 | p99 | p99.9 | CPU-µs / req | SUT process CPU |")
    out.append("|---|---|---|---|---|---|---|")
    for t in targets:
        fx = rows[("fixed", t)]
        if not fx["rps"]:
            continue
        out.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            names[t],
            med_spread(fx["rps"]),
            med_spread(fx["p50"]),
            med_spread(fx["p99"]),
            med_spread(fx["p999"]),
            med_spread(fx["cpu_us"], "{:.1f}"),
            med_spread([100 * u for u in fx["util"]], pct),
        ))
    out.append("")
    out.append("Ratios: per run (a run measures a, b, c back to back, so they share "
               "its noise), then median (min–max) over runs.")
    out.append("")

    def paired(phase, key, num="c", den="b"):
        b = rows[(phase, den)][key]
        c = rows[(phase, num)][key]
        return [cv / bv for bv, cv in zip(b, c) if bv]

    pairs = [("c", "b")] + ([("d", "b"), ("d", "c")] if "d" in targets else [])
    favour = []
    out.append("| | " + " | ".join(f"({n})/({d})" for n, d in pairs) + " | hookgate wins when |")
    out.append("|---" * (len(pairs) + 2) + "|")
    for label, phase, key, better in (
        ("max throughput", "max", "rps", "≥ 1"),
        ("CPU-µs / req at max", "max", "cpu_us", "≤ 1"),
        ("p50 at fixed rate", "fixed", "p50", "≤ 1"),
        ("p99 at fixed rate", "fixed", "p99", "≤ 1"),
        ("p99.9 at fixed rate", "fixed", "p999", "≤ 1"),
        ("CPU-µs / req at fixed rate", "fixed", "cpu_us", "≤ 1"),
    ):
        ratios = [paired(phase, key, n, d) for n, d in pairs]
        cells = [med_spread(r, "{:.2f}") for r in ratios]
        out.append(f"| {label} | " + " | ".join(cells) + f" | {better} |")
        favour.append((label, [sign_test(r, better) for r in ratios]))
    hwm = {t: max(rows[("max", t)]["hwm_kib"] or [0]) for t in targets}
    if hwm.get("b"):
        cells = [f"{hwm[n] / hwm[d]:.2f}" for n, d in pairs]
        out.append("| peak RSS | " + " | ".join(cells) + " | ≤ 1 |")
    out.append("")
    out.append("Runs on the winning side of 1 (two-sided sign test: how likely so "
               "lopsided a count is if the two targets were equal):")
    out.append("")
    out.append("| | " + " | ".join(f"({n})/({d})" for n, d in pairs) + " |")
    out.append("|---" * (len(pairs) + 1) + "|")
    for label, cells in favour:
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "latency": latency,
        "metrics": metrics,
        "row": row,
        "half-median-rps": half_median_rps,
        "report": report,
    }[cmd](*args)
