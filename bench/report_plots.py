# SPDX-License-Identifier: Apache-2.0
"""The PNG plots of bench/report.py --plots (see its help): one Plotter per
result file, drawn with matplotlib's Agg backend. The files reaching here are
checked by report.py (every field read below is there, of its type)."""
import os
import sys
import textwrap


# faultline's configurations (the runtime, and the zstd restores through it),
# the kernel's mmap baselines, and the userfaultfd floors written in the bench.
FAMILY_COLOURS = {"faultline": "#1f77b4", "mmap": "#8c8c8c", "floor": "#2ca02c"}


def family(config):
    if config.startswith(("faultline", "zstd")):
        return "faultline"
    if config.startswith("mmap"):
        return "mmap"
    return "floor"


def label(r):
    return f"{r['config']} ({r['cache']})" + ("" if r["ok"] else " ERROR")


def spread(r, per_run):
    """(median, below, above): the median figure and the distances to the
    lowest and highest of the repeats' figures (per_run maps seconds to it)."""
    runs = [per_run(s) for s in r["seconds_all"] if s is not None and s > 0]
    median = per_run(r["seconds"]) if r["seconds"] else None
    if median is None or not runs:
        return median, 0.0, 0.0
    return median, max(0.0, median - min(runs)), max(0.0, max(runs) - median)


class Plotter:
    """Draws one result file's PNGs into a directory, named after the file."""

    def __init__(self, plt, d, path, out_dir):
        self.plt, self.d, self.out_dir = plt, d, out_dir
        self.stem = os.path.splitext(os.path.basename(path))[0]
        p, m = d["params"], d["machine"]
        self.subtitle = (f"{os.path.basename(path)}: {int(p['size']) >> 20} MiB, {p['repeat']} repeats, "
                         f"pin {p.get('pin', 'none')}, {m.get('date', '')}")
        self.written = []

    def figure(self, rows, width=8.0):
        fig, ax = self.plt.subplots(figsize=(width, max(2.4, 0.9 + 0.24 * rows)))  # room for the legend
        return fig, ax

    def save(self, fig, ax, title, name):
        ax.set_title(title, fontsize=10, loc="left")
        fig.text(0.99, 0.005, self.subtitle, fontsize=6, color="#666666", ha="right", va="bottom")
        fig.tight_layout(rect=(0, 0.25 / fig.get_figheight(), 1, 1))  # a quarter inch for the footer
        out = os.path.join(self.out_dir, f"{self.stem}-{name}.png")
        fig.savefig(out, dpi=100, metadata={"Software": None}, pil_kwargs={"optimize": True})
        self.plt.close(fig)
        self.written.append(out)

    def family_legend(self, fig):
        """The colours' and the hatch's key, in the footer left of the subtitle
        (inside the axes it would hide bars)."""
        handles = [self.plt.Rectangle((0, 0), 1, 1, color=c) for c in FAMILY_COLOURS.values()]
        handles.append(self.plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="#555555", hatch="//"))
        fig.legend(handles, ["faultline", "mmap baselines", "uffd floors", "cold cache"], fontsize=6, ncol=4,
                   loc="lower left", bbox_to_anchor=(0, 0), frameon=False)

    def hbars(self, ax, rows, values, below, above, unit):
        ys = list(range(len(rows)))
        colours = [FAMILY_COLOURS[family(r["config"])] for r in rows]
        hatches = ["//" if r["cache"] == "cold" else "" for r in rows]
        bars = ax.barh(ys, values, xerr=[below, above], color=colours, edgecolor="white",
                       error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        ax.set_yticks(ys, [label(r) for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 30:
            ax.set_xscale("log")
        ax.grid(axis="x", linewidth=0.3)
        for v, up, y in zip(values, above, ys):  # right of the error bar
            ax.text(v + up, y, f" {v:.3g}", va="center", fontsize=6)
        self.family_legend(ax.figure)

    def workloads(self):
        seen = []
        for r in self.d["results"]:
            if r["workload"] not in seen:
                seen.append(r["workload"])
        return seen

    def throughput(self, workload):
        rows = [r for r in self.d["results"] if r["workload"] == workload and r["gb_per_s"] is not None
                and r["seconds"]]
        if not rows:
            return
        stats = [spread(r, lambda s, b=r["bytes"]: b / s / 1e9) for r in rows]
        fig, ax = self.figure(len(rows))
        self.hbars(ax, rows, [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats], "GB/s")
        self.save(fig, ax, f"{workload}: throughput, median (bars: slowest and fastest repeat)",
                  f"throughput-{workload}")

    def latency(self, workload):
        rows = [r for r in self.d["results"] if r["workload"] == workload and r["fault_p50_us"] is not None
                and r["fault_p99_us"] is not None]
        if not rows:
            return
        fig, ax = self.figure(len(rows) * 1.4)
        ys = [1.6 * i for i in range(len(rows))]
        colours = [FAMILY_COLOURS[family(r["config"])] for r in rows]
        p50 = [r["fault_p50_us"] for r in rows]
        p99 = [r["fault_p99_us"] for r in rows]
        ax.barh([y - 0.35 for y in ys], p50, height=0.7, color=colours, label="p50")
        ax.barh([y + 0.35 for y in ys], p99, height=0.7, color=colours, alpha=0.45, label="p99")
        for y, a, b in zip(ys, p50, p99):
            ax.text(a, y - 0.35, f" {a:.3g}", va="center", fontsize=6)
            ax.text(b, y + 0.35, f" {b:.4g}", va="center", fontsize=6)
        ax.set_yticks(ys, [label(r) for r in rows], fontsize=7)
        ax.invert_yaxis()
        if min(p50) > 0:
            ax.set_xscale("log")
        ax.set_xlabel("fault latency, µs (p50 solid, p99 light; medians over the repeats)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", linewidth=0.3)
        self.family_legend(fig)
        self.save(fig, ax, f"{workload}: 4 KiB fault latency p50 / p99 by configuration", f"latency-{workload}")

    def restore(self):
        rows = [r for r in self.d["results"] if r["workload"] == "restore" and r["seconds"]]
        if not rows:
            return
        stats = [spread(r, lambda s: s) for r in rows]
        fig, ax = self.figure(len(rows))
        self.hbars(ax, rows, [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats], "seconds")
        self.save(fig, ax, "restore: time to restore, median (bars: fastest and slowest repeat)", "restore")

    def targets(self):
        measured = [t for t in self.d["targets"] if t["value"] is not None and t["threshold"] is not None]
        if not measured:
            return
        left_out = len(self.d["targets"]) - len(measured)
        fig, ax = self.figure(len(measured), width=10.0)
        colour = {True: "#2ca02c", False: "#d62728", None: "#aaaaaa"}
        verdict = {True: "met", False: "MISSED", None: "n/a"}
        ys = list(range(len(measured)))
        for y, t in zip(ys, measured):
            text = f" {t['value']:.3g} vs {t['threshold']:.3g}: {verdict[t['met']]}"
            if t["threshold"] > 0 and t["value"] > 0:
                ratio = t["value"] / t["threshold"]
                ax.barh(y, ratio - 1, left=1, color=colour[t["met"]])  # from the threshold to the value
                ax.text(max(ratio, 1), y, text, va="center", fontsize=6)
            else:  # a count that must stay at its threshold (runs over a limit): no ratio
                ax.plot([1], [y], marker="D", color=colour[t["met"]])
                ax.text(1, y, text + " (count)", va="center", fontsize=6)
        ax.axvline(1, color="#333333", linewidth=0.8)
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, 0.5), max(hi, 2) * 4)  # room for the text right of the bars
        ax.set_yticks(ys, [textwrap.shorten(t["name"], 95, placeholder="…") for t in measured], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("measured / threshold (1 = the threshold; whether higher or lower passes is in each name)",
                      fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", linewidth=0.3)
        note = f"; {left_out} not measured, left out" if left_out else ""
        self.save(fig, ax, f"targets: green met, red missed, grey unknown{note}", "targets")

    def all(self):
        for w in self.workloads():
            if w != "restore":
                self.throughput(w)
        for w in self.workloads():
            self.latency(w)
        self.restore()
        self.targets()
        return self.written


def write_plots(files, out_dir):
    """Draws each (path, result) of files into out_dir; prints the PNGs' paths."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit(f"report.py: --plots needs matplotlib (Debian: python3-matplotlib): {e}")
    for path, d in files:
        try:
            os.makedirs(out_dir, exist_ok=True)
            written = Plotter(plt, d, path, out_dir).all()
        except OSError as e:
            raise SystemExit(f"report.py: cannot write into {out_dir}: {e.strerror}")
        if not written:
            sys.stderr.write(f"report.py: {path}: nothing measured to plot\n")
        for out in written:
            print(out)
