#!/usr/bin/env python3
"""Plot ms_bench's bulk figures (ms_bench --data FILE) as grouped bars.

    build/venv/bin/python Tests/bench/plot_bulk.py build/bench/bulk.tsv Tests/bench/bulk.png

Left: MiB/s by the wall clock; right: the same runs over the CPU time of the
busier process (what two cores of their own would give).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rows = list(csv.DictReader(open(src), delimiter="\t"))
    stacks = []
    for r in rows:
        if r["stack"] not in stacks:
            stacks.append(r["stack"])
    sizes = sorted({int(r["write"]) for r in rows}, reverse=True)
    label = {65536: "64 KiB writes", 4096: "4 KiB writes", 1024: "1 KiB writes"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    width = 0.8 / len(sizes)
    for ax, key, title in ((axes[0], "wall_MiBps", "wall clock"),
                           (axes[1], "cpu_MiBps", "over the busier side's CPU time")):
        for i, size in enumerate(sizes):
            vals = []
            for st in stacks:
                v = [float(r[key]) for r in rows if r["stack"] == st and int(r["write"]) == size]
                vals.append(v[0] if v else 0)
            xs = [j + (i - (len(sizes) - 1) / 2) * width for j in range(len(stacks))]
            ax.bar(xs, vals, width, label=label.get(size, f"{size} B writes"))
        ax.set_xticks(range(len(stacks)))
        ax.set_xticklabels(stacks, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"bulk, one connection, two processes ({title})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("MiB/s of application data")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
