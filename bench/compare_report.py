#!/usr/bin/env python3
"""Report of a bench/compare.sh run (ssehub beside Nchan): a Markdown table of the medians over
the rounds, and plots.

    python3 bench/compare_report.py table DIR ROUNDS "SUBS EVENTS RATE PAYLOAD LABEL..." ...
    python3 bench/compare_report.py plots DIR [OUT_DIR]      (default OUT_DIR: docs; matplotlib)

DIR holds one `ssehub bench --json` report per run, named
SERVER-SUBSCRIBERS-EVENTS-RATE-PAYLOAD-rROUND.json. The plots: latency p50/p99 by scenario
(compare-latency.png), and latency and idle memory per connection against the subscriber count
(compare-vs-subscribers.png, compare-memory.png).
"""
import glob
import json
import os
import re
import statistics
import sys

SERVERS = [("ssehub", "ssehub", "#1f77b4"), ("nchan", "Nchan", "#d62728")]
NAME = re.compile(r"(ssehub|nchan)-(\d+)-(\d+)-([\d.]+)-(\d+)-r(\d+)\.json$")


def load_all(directory):
    """{(server, subs, events, rate, payload): [report, ...]} over the rounds."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        m = NAME.search(os.path.basename(path))
        if not m:
            continue
        server, subs, events, rate, payload, _ = m.groups()
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError):
            continue
        runs.setdefault((server, int(subs), int(events), float(rate), int(payload)), []).append(report)
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def latency(report, pct):
    return (report.get("latency_ms") or {}).get(pct)


def server(report, key):
    return (report.get("server") or {}).get(key)


METRICS = [
    ("delivered events/s", lambda r: r["delivered_per_second"]),
    ("latency p50 ms", lambda r: latency(r, "p50")),
    ("latency p99 ms", lambda r: latency(r, "p99")),
    ("latency max ms", lambda r: latency(r, "max")),
    ("publish p99 ms", lambda r: (r.get("publish_latency_ms") or {}).get("p99")),
    ("server CPU s", lambda r: server(r, "publish_phase_cpu_seconds")),
    ("idle KB/connection", lambda r: server(r, "idle_kb_per_connection")),
    ("RSS end MiB", lambda r: (server(r, "rss_end_kib") or 0) / 1024),
]


def fmt(v):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def table(directory, rounds, scenarios):
    runs = load_all(directory)
    print(f"| scenario | figure (median of {rounds}) | ssehub | Nchan | ssehub / Nchan |")
    print("|---|---|---|---|---|")
    for s in scenarios:
        subs, events, rate, payload, *label = s.split()
        key = (int(subs), int(events), float(rate), int(payload))
        name = f"{int(subs):,} subs, {events} events, {' '.join(label)}, {payload} B"
        a, b = runs.get(("ssehub", *key), []), runs.get(("nchan", *key), [])

        def delivered(reports):
            if not reports:
                return "failed"
            worst = min(reports, key=lambda r: r["delivered"])
            return f"{worst['delivered']:,}/{worst['expected']:,} (worst of {len(reports)})"

        print(f"| {name} | delivered | {delivered(a)} | {delivered(b)} |  |")
        for fig, get in METRICS:
            va, vb = median(get(r) for r in a), median(get(r) for r in b)
            ratio = f"{va / vb:.2f}" if va is not None and vb else "–"
            print(f"| {name} | {fig} | {fmt(va)} | {fmt(vb)} | {ratio} |")


def plots(directory, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_all(directory)
    scenarios = sorted({k[1:] for k in runs}, key=lambda k: (k[2] == 0, k[0], k[3]))

    def label(s):
        subs, _, rate, payload = s
        mode = f"paced {rate:g} ev/s" if rate else "fast"
        size = "" if payload == 100 else f", {payload / 1000:g} KB"
        return f"{subs // 1000}k subs\n{mode}{size}"

    # Latency by scenario.
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    for ax, pct in zip(axes, ["p50", "p99"]):
        width = 0.38
        for i, (key, name, color) in enumerate(SERVERS):
            values = [median(latency(r, pct) for r in runs.get((key, *s), [])) or 0 for s in scenarios]
            xs = [x + (i - 0.5) * width for x in range(len(scenarios))]
            bars = ax.bar(xs, values, width, label=name, color=color)
            ax.bar_label(bars, labels=[f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in values],
                         fontsize=7, padding=1)
        ax.set_xticks(range(len(scenarios)), [label(s) for s in scenarios], fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"delivery latency {pct} (median of the rounds)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms (log scale), publish send time to subscriber parse")
    axes[0].legend()
    fig.suptitle("ssehub vs Nchan: latency per event and subscriber (ssehub bench)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare-latency.png"), dpi=110)

    # Against the subscriber count: paced (1 event/s at 10k and above, 10 at 1k) and fast.
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, fast in zip(axes, [False, True]):
        for key, name, color in SERVERS:
            points = sorted(
                (s[0], s) for s in scenarios if (s[2] == 0) == fast and s[3] == 100
            )
            for pct, style in [("p50", "--"), ("p99", "-")]:
                xs, ys = [], []
                for subs, s in points:
                    v = median(latency(r, pct) for r in runs.get((key, *s), []))
                    if v is not None:
                        xs.append(subs)
                        ys.append(v)
                ax.plot(xs, ys, style, marker="o", color=color, label=f"{name} {pct}")
        ax.set_xlabel("subscribers")
        ax.set_ylabel("ms")
        ax.set_title("fast (as fast as possible)" if fast else "paced (about 10,000 deliveries/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Delivery latency against the number of subscribers, 100-byte events")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare-vs-subscribers.png"), dpi=110)

    # Idle memory per connection against the subscriber count (read before any publish, so every
    # run of a count measures it: the median over all of them).
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, name, color in SERVERS:
        counts = sorted({s[0] for s in scenarios})
        ys = [
            median(server(r, "idle_kb_per_connection") for s in scenarios if s[0] == subs
                   for r in runs.get((key, *s), []))
            for subs in counts
        ]
        ax.plot(counts, ys, marker="o", color=color, label=name)
        for x, y in zip(counts, ys):
            if y is not None:
                ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)
    ax.set_xlabel("idle subscribers")
    ax.set_ylabel("KB per idle connection (RSS, fresh server)")
    ax.set_ylim(bottom=0)
    ax.set_title("Idle memory per connection: ssehub vs Nchan (nginx worker)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare-memory.png"), dpi=110)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "table":
        table(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "plots":
        plots(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "docs")
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
