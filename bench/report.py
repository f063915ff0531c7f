#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Turns a faultline-bench --json file into the Markdown tables of docs/benchmarks.md.

usage: bench/report.py RESULTS.json > tables.md
"""
import json
import sys


def f(v, fmt):
    return "–" if v is None else fmt.format(v)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    with open(sys.argv[1]) as fh:
        d = json.load(fh)
    m, p = d["machine"], d["params"]
    print(f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['kernel']}, {m['mem_total_mb']} MiB RAM, "
          f"THP `{m['thp']}`, dataset on `{m['dataset_disk']}` (read_ahead_kb {m['read_ahead_kb']}); "
          f"uffd: {m['uffd_mode']}; drop_caches: {m['drop_caches']}; {m['date']}; "
          f"load average {m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end.")
    print()
    print(f"Dataset {p['size'] >> 20} MiB, {p['repeat']} repeats (medians), seed {p['seed']}, "
          f"mt-rand {p['threads']} threads (disjoint pages), zipf s={p['zipf_s']}, "
          f"thread placement {p.get('pin', 'none')}"
          + (f", custom `{p['custom']}`" if p.get('custom') else "")
          + f", total {p['total_seconds']:.0f} s.")
    print()
    cur = None
    for r in d["results"]:
        if r["workload"] != cur:
            cur = r["workload"]
            print()
            print(f"**{cur}**")
            print()
            print("| config | cache | seconds | ns/page | GB/s | faults | fault p50 µs | fault p99 µs "
                  "| service p50 µs | peak RSS MB | RSS Δ MB |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        ok = "" if r["ok"] else " (ERROR)"
        print(f"| {r['config']}{ok} | {r['cache']} | {f(r['seconds'], '{:.4f}')} | {f(r['ns_per_page'], '{:.0f}')} "
              f"| {f(r['gb_per_s'], '{:.3f}')} | {f(r['faults'], '{:.0f}')} | {f(r['fault_p50_us'], '{:.2f}')} "
              f"| {f(r['fault_p99_us'], '{:.1f}')} | {f(r.get('service_p50_us'), '{:.2f}')} "
              f"| {f(r['peak_rss_mb'], '{:.0f}')} | {f(r['rss_delta_mb'], '{:.0f}')} |")
    if d.get("reserve"):
        print()
        print("**reserve** (1 TiB, nothing touched)")
        print()
        print("| config | map ms | Runtime() ms | RSS Δ map MiB | RSS Δ runtime+map MiB | unmap ms | zeros ok |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for r in d["reserve"]:
            print(f"| {r['config']} | {f(r['map_ms'], '{:.3f}')} | {f(r['runtime_ms'], '{:.3f}')} "
                  f"| {f(r['rss_map_mb'], '{:.2f}')} | {f(r['rss_total_mb'], '{:.2f}')} | {f(r['unmap_ms'], '{:.3f}')} "
                  f"| {r['zeros_ok']} |")
    rows = [r for r in d["results"] if r.get("rss_check") and r["config"].startswith("faultline")]
    if rows:
        print()
        print("**RSS vs installed** (after the workload, before teardown; limit = installed + 2% + 32 MiB)")
        print()
        print("| workload | config | cache | RSS Δ MiB | installed MiB | limit MiB | ok |")
        print("|---|---|---|---:|---:|---:|---|")
        for r in rows:
            c = r["rss_check"]
            print(f"| {r['workload']} | {r['config']} | {r['cache']} | {f(r['rss_delta_mb'], '{:.1f}')} "
                  f"| {f(r['installed_mb'], '{:.1f}')} | {f(c['limit_mb'], '{:.1f}')} | {c['ok']} |")
    print()
    print("**targets**")
    print()
    print("| target | value | met | detail |")
    print("|---|---:|---|---|")
    for t in d["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        print(f"| {t['name']} | {f(t['value'], '{:.3f}')} | {met} | {t['detail']} |")


if __name__ == "__main__":
    main()
