#!/usr/bin/env python3
"""Report of a bench/compare.sh run (ssehub beside Nchan): a Markdown table of the medians over
the rounds, and plots.

    python3 bench/compare_report.py table DIR ROUNDS "SUBS EVENTS RATE PAYLOAD PUBLISHERS LABEL..." ...
    python3 bench/compare_report.py plots DIR [OUT_DIR]      (default OUT_DIR: docs; matplotlib)

DIR holds one `ssehub bench --json` report per run, named
SERVER-SUBSCRIBERS-EVENTS-RATE-PAYLOAD-PUBLISHERS-rROUND.json, SERVER being ssehub (in-memory
history), ssehub-durable (the default durable history) or nchan. The plots: delivery latency
p50/p99 by scenario (compare-latency.png); publish round trip and delivery p99 against the
subscriber count with one publisher, fast (compare-vs-subscribers.png); idle memory per
connection against the subscriber count (compare-memory.png).
"""
import glob
import json
import os
import re
import statistics
import sys

SERVERS = [
    ("ssehub", "ssehub", "#1f77b4"),
    ("ssehub-durable", "ssehub (durable)", "#2ca02c"),
    ("nchan", "Nchan", "#d62728"),
]
NAME = re.compile(r"(ssehub-durable|ssehub|nchan)-(\d+)-(\d+)-([\d.]+)-(\d+)-(\d+)-r(\d+)\.json$")


def load_all(directory):
    """{(server, subs, events, rate, payload, publishers): [report, ...]} over the rounds."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        m = NAME.search(os.path.basename(path))
        if not m:
            continue
        server, subs, events, rate, payload, publishers, _ = m.groups()
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError):
            continue
        key = (server, int(subs), int(events), float(rate), int(payload), int(publishers))
        runs.setdefault(key, []).append(report)
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def latency(report, pct):
    return (report.get("latency_ms") or {}).get(pct)


def publish(report, pct):
    return (report.get("publish_latency_ms") or {}).get(pct)


def server(report, key):
    return (report.get("server") or {}).get(key)


def cpu_per_delivery_us(report):
    cpu = server(report, "publish_phase_cpu_seconds")
    delivered = report.get("delivered") or 0
    return cpu * 1e6 / delivered if cpu is not None and delivered else None


METRICS = [
    ("delivered events/s", lambda r: r["delivered_per_second"]),
    ("delivery latency p50 ms", lambda r: latency(r, "p50")),
    ("delivery latency p99 ms", lambda r: latency(r, "p99")),
    ("delivery latency max ms", lambda r: latency(r, "max")),
    ("publish round trip p50 ms", lambda r: publish(r, "p50")),
    ("publish round trip p99 ms", lambda r: publish(r, "p99")),
    ("publish round trip max ms", lambda r: publish(r, "max")),
    ("server CPU s", lambda r: server(r, "publish_phase_cpu_seconds")),
    ("server CPU µs per delivery", cpu_per_delivery_us),
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
    print(f"| scenario | figure (median of {rounds}) | ssehub | ssehub durable | Nchan | ssehub / Nchan |")
    print("|---|---|---|---|---|---|")
    for s in scenarios:
        subs, events, rate, payload, publishers, *label = s.split()
        key = (int(subs), int(events), float(rate), int(payload), int(publishers))
        name = f"{int(subs):,} subs, {events} events, {' '.join(label)}, {payload} B"
        reports = [runs.get((server_key, *key), []) for server_key, _, _ in SERVERS]

        def delivered(reports):
            if not reports:
                return "–"
            worst = min(reports, key=lambda r: r["delivered"])
            return f"{worst['delivered']:,}/{worst['expected']:,} (worst of {len(reports)})"

        a, d, b = reports
        print(f"| {name} | delivered | {delivered(a)} | {delivered(d)} | {delivered(b)} |  |")
        for fig, get in METRICS:
            va, vd, vb = (median(get(r) for r in rs) for rs in reports)
            ratio = f"{va / vb:.2f}" if va is not None and vb else "–"
            print(f"| {name} | {fig} | {fmt(va)} | {fmt(vd)} | {fmt(vb)} | {ratio} |")


def plots(directory, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_all(directory)
    scenarios = sorted({k[1:] for k in runs}, key=lambda k: (k[2] == 0, k[0], k[3], k[4]))

    def label(s):
        subs, _, rate, payload, publishers = s
        mode = f"paced {rate:g} ev/s" if rate else f"fast, {publishers} pub"
        size = "" if payload == 100 else f", {payload / 1000:g} KB"
        return f"{subs / 1000:g}k subs\n{mode}{size}"

    # Delivery latency by scenario.
    fig, axes = plt.subplots(1, 2, figsize=(15, 5), sharey=True)
    width = 0.27
    for ax, pct in zip(axes, ["p50", "p99"]):
        for i, (key, name, color) in enumerate(SERVERS):
            values = [median(latency(r, pct) for r in runs.get((key, *s), [])) or 0 for s in scenarios]
            xs = [x + (i - 1) * width for x in range(len(scenarios))]
            bars = ax.bar(xs, values, width, label=name, color=color)
            ax.bar_label(bars, labels=[f"{v:.0f}" if v >= 10 else (f"{v:.1f}" if v else "")
                                       for v in values], fontsize=6, padding=1)
        ax.set_xticks(range(len(scenarios)), [label(s) for s in scenarios], fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"delivery latency {pct} (median of the rounds)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("ms (log scale), publish send time to subscriber parse")
    axes[0].legend()
    fig.suptitle("ssehub vs Nchan: latency per event and subscriber (ssehub bench)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compare-latency.png"), dpi=110)

    # One publisher, fast, 100-byte events: publish round trip and delivery p99 against the
    # subscriber count.
    points = sorted((s[0], s) for s in scenarios if s[2] == 0 and s[3] == 100 and s[4] == 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, (title, get) in zip(axes, [
        ("publish round trip p99 (ms)", lambda r: publish(r, "p99")),
        ("delivery latency p99 (ms)", lambda r: latency(r, "p99")),
    ]):
        for key, name, color in SERVERS:
            xs, ys = [], []
            for subs, s in points:
                v = median(get(r) for r in runs.get((key, *s), []))
                if v is not None:
                    xs.append(subs)
                    ys.append(v)
            if xs:
                ax.plot(xs, ys, marker="o", color=color, label=name)
                for x, y in zip(xs, ys):
                    ax.annotate(f"{y:.1f}" if y < 10 else f"{y:.0f}", (x, y),
                                textcoords="offset points", xytext=(0, 6), ha="center",
                                fontsize=7)
        ax.set_xlabel("subscribers")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("One publisher in a closed loop, as fast as answered, 100-byte events "
                 "(median of the rounds)")
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
        xs = [x for x, y in zip(counts, ys) if y is not None]
        ys = [y for y in ys if y is not None]
        ax.plot(xs, ys, marker="o", color=color, label=name)
        for x, y in zip(xs, ys):
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
