#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Turns faultline-bench --json files into the Markdown tables of
docs/benchmarks.md (the default) or into PNG plots (--plots DIR).

  bench/report.py RESULTS.json > tables.md
  bench/report.py --plots docs/img RESULTS.json...

The plots need matplotlib (Debian: python3-matplotlib) and are drawn with its
Agg backend (no display), in report_plots.py. Each input FILE.json gives,
in DIR:
  FILE-throughput-WORKLOAD.png  GB/s by configuration (median; bars: fastest
                                and slowest repeat), one per workload
  FILE-latency-WORKLOAD.png     fault latency p50 and p99 by configuration,
                                for the workloads that measure it (rand, mt-rand)
  FILE-restore.png              restore times of the restore workload
  FILE-targets.png              each measured target: value / threshold, met or not
A file that is not a faultline-bench result is an error naming the file and
the field (exit 1); bad arguments exit 2.
"""
import argparse
import json
import math
import sys


class BadResult(Exception):
    """A file that is not a faultline-bench result (the message says where)."""


# --- reading and checking ------------------------------------------------------------------------

def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def expect(obj, key, where, kind, nullable=False):
    """obj[key], which must be of `kind` ("number", "string", "bool", "list", "object")."""
    if not isinstance(obj, dict):
        raise BadResult(f"{where}: expected an object, got {json.dumps(obj)[:40]}")
    if key not in obj:
        raise BadResult(f"{where}: missing field '{key}'")
    v = obj[key]
    if v is None and nullable:
        return v
    ok = {"number": is_number, "string": lambda x: isinstance(x, str), "bool": lambda x: isinstance(x, bool),
          "list": lambda x: isinstance(x, list), "object": lambda x: isinstance(x, dict)}[kind](v)
    if not ok:
        raise BadResult(f"{where}.{key}: expected {'a' if kind != 'object' else 'an'} {kind}"
                        f"{' or null' if nullable else ''}, got {json.dumps(v)[:40]}")
    return v


def check(d):
    """Raises BadResult unless d has every field the tables and plots read."""
    if not isinstance(d, dict):
        raise BadResult(f"expected a JSON object with 'machine', 'params', 'results' and 'targets', "
                        f"got {type(d).__name__}")
    expect(d, "machine", "top level", "object")
    params = expect(d, "params", "top level", "object")
    expect(params, "size", "params", "number")
    expect(params, "repeat", "params", "number")
    for i, r in enumerate(expect(d, "results", "top level", "list")):
        where = f"results[{i}]"
        for key in ("workload", "config", "cache"):
            expect(r, key, where, "string")
        expect(r, "bytes", where, "number")
        expect(r, "ok", where, "bool")
        for key in ("seconds", "gb_per_s", "fault_p50_us", "fault_p99_us"):
            expect(r, key, where, "number", nullable=True)
        for j, s in enumerate(expect(r, "seconds_all", where, "list")):
            if s is not None and not is_number(s):
                raise BadResult(f"{where}.seconds_all[{j}]: expected a number or null, got {json.dumps(s)[:40]}")
    for i, t in enumerate(expect(d, "targets", "top level", "list")):
        where = f"targets[{i}]"
        expect(t, "name", where, "string")
        expect(t, "detail", where, "string")
        expect(t, "value", where, "number", nullable=True)
        expect(t, "threshold", where, "number", nullable=True)
        expect(t, "met", where, "bool", nullable=True)
    if d.get("reserve") is not None:
        for i, r in enumerate(expect(d, "reserve", "top level", "list")):
            expect(r, "config", f"reserve[{i}]", "string")
    if d.get("skipped") is not None:  # (results from before it have none)
        for i, s in enumerate(expect(d, "skipped", "top level", "list")):
            expect(s, "config", f"skipped[{i}]", "string")
            expect(s, "reason", f"skipped[{i}]", "string")


def load(path):
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except UnicodeDecodeError as e:
        raise BadResult(f"not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadResult(f"not JSON: line {e.lineno} column {e.colno}: {e.msg}") from None
    check(d)
    return d


# --- Markdown tables -----------------------------------------------------------------------------

def f(v, fmt):
    return "–" if v is None else fmt.format(v)


def print_tables(d):
    m, p = d["machine"], d["params"]
    print(f"Machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('kernel')}, {m.get('mem_total_mb')} MiB RAM, "
          f"THP `{m.get('thp')}`, dataset on `{m.get('dataset_disk')}` (read_ahead_kb {m.get('read_ahead_kb')}); "
          f"uffd: {m.get('uffd_mode')}; drop_caches: {m.get('drop_caches')}; {m.get('date')}; "
          f"load average {m.get('loadavg_start')} at start, {m.get('loadavg_end')} at end.")
    print()
    print(f"Dataset {int(p['size']) >> 20} MiB, {p['repeat']} repeats (medians), seed {p.get('seed')}, "
          f"mt-rand {p.get('threads')} threads (disjoint pages), zipf s={p.get('zipf_s')}, "
          f"thread placement {p.get('pin', 'none')}"
          + (f", custom `{p['custom']}`" if p.get('custom') else "")
          + f", total {f(p.get('total_seconds'), '{:.0f}')} s.")
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
        print(f"| {r['config']}{ok} | {r['cache']} | {f(r['seconds'], '{:.4f}')} | {f(r.get('ns_per_page'), '{:.0f}')} "
              f"| {f(r['gb_per_s'], '{:.3f}')} | {f(r.get('faults'), '{:.0f}')} | {f(r['fault_p50_us'], '{:.2f}')} "
              f"| {f(r['fault_p99_us'], '{:.1f}')} | {f(r.get('service_p50_us'), '{:.2f}')} "
              f"| {f(r.get('peak_rss_mb'), '{:.0f}')} | {f(r.get('rss_delta_mb'), '{:.0f}')} |")
    if d.get("reserve"):
        print()
        print("**reserve** (1 TiB, nothing touched)")
        print()
        print("| config | map ms | Runtime() ms | RSS Δ map MiB | RSS Δ runtime+map MiB | unmap ms | zeros ok |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for r in d["reserve"]:
            print(f"| {r['config']} | {f(r.get('map_ms'), '{:.3f}')} | {f(r.get('runtime_ms'), '{:.3f}')} "
                  f"| {f(r.get('rss_map_mb'), '{:.2f}')} | {f(r.get('rss_total_mb'), '{:.2f}')} "
                  f"| {f(r.get('unmap_ms'), '{:.3f}')} | {r.get('zeros_ok')} |")
    rows = [r for r in d["results"] if r.get("rss_check") and r["config"].startswith("faultline")]
    if rows:
        print()
        print("**RSS vs installed** (after the workload, before teardown; limit = installed + 2% + 32 MiB)")
        print()
        print("| workload | config | cache | RSS Δ MiB | installed MiB | limit MiB | ok |")
        print("|---|---|---|---:|---:|---:|---|")
        for r in rows:
            c = r["rss_check"]
            print(f"| {r['workload']} | {r['config']} | {r['cache']} | {f(r.get('rss_delta_mb'), '{:.1f}')} "
                  f"| {f(r.get('installed_mb'), '{:.1f}')} | {f(c.get('limit_mb'), '{:.1f}')} | {c.get('ok')} |")
    print()
    for s in d.get("skipped") or []:
        print(f"skipped: {s['config']}: {s['reason']}")
        print()
    print("**targets**")
    print()
    print("| target | value | met | detail |")
    print("|---|---:|---|---|")
    for t in d["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        print(f"| {t['name']} | {f(t['value'], '{:.3f}')} | {met} | {t['detail']} |")


def main():
    parser = argparse.ArgumentParser(
        prog="report.py", description=__doc__.split("\n\n")[0],
        epilog="Without --plots: Markdown tables on standard output.")
    parser.add_argument("files", nargs="+", metavar="RESULTS.json", help="faultline-bench --json output")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR (created if missing)")
    args = parser.parse_args()
    files = []
    for path in args.files:
        try:
            files.append((path, load(path)))
        except OSError as e:
            sys.stderr.write(f"report.py: {path}: cannot read: {e.strerror}\n")
            sys.exit(1)
        except BadResult as e:
            sys.stderr.write(f"report.py: {path}: not a faultline-bench result: {e}\n")
            sys.exit(1)
    if args.plots is not None:
        if not args.plots:
            parser.error("--plots: empty directory name")
        import report_plots  # beside this file; imports matplotlib, which the tables do not need
        report_plots.write_plots(files, args.plots)
        return
    for i, (_, d) in enumerate(files):
        if i:
            print()
        print_tables(d)


if __name__ == "__main__":
    main()
