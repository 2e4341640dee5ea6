#!/usr/bin/env python3
"""Plot and table of a soak run (tests/it/soak.rs): the hub's resident memory, open file
descriptors and registry size (open streams) over time, phases shaded, and a Markdown table of
baseline, peak under the main load, and end.

Usage: python3 bench/plot_soak.py CSV [OUT]   (default OUT: docs/soak.png)
The CSV is the one the test writes (SSEHUB_SOAK_CSV, default target/soak/soak.csv); scripts/soak
runs both. Prints the table to stdout. Needs matplotlib.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PHASE_COLORS = {"fill": "#dddddd", "warm-up": "#fde0c5", "quiet": "#e8f4e8", "load": "#dbe9f6"}


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if key != "phase":
                row[key] = float(value)
    return rows


def phase_spans(rows):
    """(phase, first second, last second) for each run of equal phases."""
    spans = []
    for row in rows:
        if spans and spans[-1][0] == row["phase"]:
            spans[-1][2] = row["seconds"]
        else:
            spans.append([row["phase"], row["seconds"], row["seconds"]])
    # Each span reaches to the start of the next one.
    for current, following in zip(spans, spans[1:]):
        current[2] = following[1]
    return spans


def table(rows):
    baseline = next(r for r in rows if r["phase"] == "baseline")
    end = rows[-1]
    under_load = [r for r in rows if r["phase"] == "load"] or [end]
    minutes = (under_load[-1]["seconds"] - under_load[0]["seconds"]) / 60

    def peak(key):
        return max(r[key] for r in under_load)

    def delta(key):
        return end[key] - baseline[key]

    mib = 1024
    lines = [
        f"| soak, {minutes:.1f} min main load | baseline | peak under load | end |",
        "|---|---:|---:|---:|",
        f"| hub RSS (MiB) | {baseline['rss_kib'] / mib:.1f} | {peak('rss_kib') / mib:.1f} "
        f"| {end['rss_kib'] / mib:.1f} |",
        f"| hub open fds | {baseline['open_fds']:.0f} | {peak('open_fds'):.0f} "
        f"| {end['open_fds']:.0f} |",
        f"| registry: open streams | {baseline['subscribers_connected']:.0f} "
        f"| {peak('subscribers_connected'):.0f} | {end['subscribers_connected']:.0f} |",
        f"| registry: topic selectors | {baseline['subscriptions']:.0f} "
        f"| {peak('subscriptions'):.0f} | {end['subscriptions']:.0f} |",
        f"| hub threads | {baseline['threads']:.0f} | {peak('threads'):.0f} "
        f"| {end['threads']:.0f} |",
        f"| history events | {baseline['history_events']:.0f} | {peak('history_events'):.0f} "
        f"| {end['history_events']:.0f} |",
        "",
        "| after the baseline | count |",
        "|---|---:|",
        f"| events published (acknowledged) | {delta('events_published_total'):.0f} |",
        f"| frames queued to subscribers | {delta('events_delivered_total'):.0f} |",
        f"| events replayed from history | {delta('events_replayed_total'):.0f} |",
        f"| events received and checked by clients | {delta('client_events_received'):.0f} |",
        f"| streams closed | {delta('streams_closed_total'):.0f} |",
        f"| slow subscribers disconnected (hub) | "
        f"{delta('slow_subscribers_disconnected_total'):.0f} |",
        f"| slow clients found dropped (client) | {delta('slow_clients_dropped'):.0f} |",
        f"| RSS end minus baseline (MiB) | {delta('rss_kib') / mib:+.1f} |",
    ]
    return "\n".join(lines)


def main():
    path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/soak.png"
    rows = load(path)
    seconds = [r["seconds"] for r in rows]
    baseline = next(r for r in rows if r["phase"] == "baseline")

    series = [
        ("hub RSS (MiB)", [r["rss_kib"] / 1024 for r in rows], baseline["rss_kib"] / 1024),
        ("hub open file descriptors", [r["open_fds"] for r in rows], baseline["open_fds"]),
        ("open streams (ssehub_subscribers_connected)",
         [r["subscribers_connected"] for r in rows], baseline["subscribers_connected"]),
    ]
    fig, axes = plt.subplots(len(series), 1, figsize=(11, 8), sharex=True)
    spans = phase_spans(rows)
    for ax, (title, values, base) in zip(axes, series):
        for phase, start, stop in spans:
            if phase in PHASE_COLORS:
                ax.axvspan(start, stop, color=PHASE_COLORS[phase], lw=0)
        ax.plot(seconds, values, color="#1f77b4", lw=1.2)
        ax.axhline(base, color="#d62728", lw=0.8, ls="--", label="baseline")
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[0].legend(loc="lower right", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLORS.values()]
    axes[-1].legend(handles, list(PHASE_COLORS), loc="upper right", fontsize=8, ncol=4)
    axes[-1].set_xlabel("seconds since the hub started")
    fig.suptitle("ssehub soak: steady churn, then back to baseline", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(table(rows))
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
