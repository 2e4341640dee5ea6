#!/usr/bin/env python3
"""Plots of a bench/compare.sh run: latency percentiles by scenario and subscriber count, and idle
memory per connection, ssehub beside Nchan.

Usage: COMPARE_JSON_DIR=DIR bench/compare.sh, then
       python3 bench/plot_compare.py DIR [OUT_DIR]   (default OUT_DIR: docs)
Writes OUT_DIR/compare-latency.png and OUT_DIR/compare-memory.png. Needs matplotlib.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERVERS = [("ssehub", "ssehub", "#1f77b4"), ("nchan", "Nchan", "#d62728")]
# (subscribers, events, rate, payload bytes, label)
SCENARIOS = [
    (1000, 100, 10, 100, "1k subs\npaced 10 ev/s"),
    (10000, 20, 1, 100, "10k subs\npaced 1 ev/s"),
    (1000, 200, 0, 100, "1k subs\nfast"),
    (1000, 200, 0, 4000, "1k subs\nfast, 4 KB"),
    (10000, 200, 0, 100, "10k subs\nfast"),
]


def load(directory, server, subs, events, rate, payload):
    path = os.path.join(directory, f"{server}-{subs}-{events}-{rate}-{payload}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    directory = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "docs"
    scenarios = [s for s in SCENARIOS if any(load(directory, k, *s[:4]) for k, _, _ in SERVERS)]

    fig, axes = plt.subplots(1, 3, figsize=(15, 5), sharey=True)
    for ax, pct in zip(axes, ["p50", "p99", "max"]):
        width = 0.38
        for i, (key, name, color) in enumerate(SERVERS):
            values = []
            for s in scenarios:
                r = load(directory, key, *s[:4])
                values.append(((r or {}).get("latency_ms") or {}).get(pct, 0) or 0)
            xs = [x + (i - 0.5) * width for x in range(len(scenarios))]
            bars = ax.bar(xs, values, width, label=name, color=color)
            ax.bar_label(bars, labels=[f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in values],
                         fontsize=7, padding=1)
        ax.set_xticks(range(len(scenarios)), [s[4] for s in scenarios], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"delivery latency {pct}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms (log scale), publish send time to subscriber parse")
    axes[0].legend()
    fig.suptitle("ssehub vs Nchan: latency per event and subscriber (ssehub bench, 100 B unless noted)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare-latency.png"), dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    counts = [1000, 10000]
    width = 0.38
    for i, (key, name, color) in enumerate(SERVERS):
        values = []
        for subs in counts:
            # Idle memory is read before any publish, so every scenario of a count measures it;
            # take the median over them.
            kbs = sorted(
                r["server"]["idle_kb_per_connection"]
                for s in SCENARIOS
                if s[0] == subs
                for r in [load(directory, key, *s[:4])]
                if r and r.get("server")
            )
            values.append(kbs[len(kbs) // 2] if kbs else 0)
        xs = [x + (i - 0.5) * width for x in range(len(counts))]
        bars = ax.bar(xs, values, width, label=name, color=color)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=1)
    ax.set_xticks(range(len(counts)), [f"{c:,} subscribers" for c in counts])
    ax.set_ylabel("KB per idle connection (RSS, fresh server)")
    ax.set_title("Idle memory per connection: ssehub vs Nchan (nginx worker)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare-memory.png"), dpi=110)


if __name__ == "__main__":
    main()
