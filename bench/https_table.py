#!/usr/bin/env python3
"""Medians of bench/https.sh output (stdin): server CPU per delivered event by mode and rate;
the difference from plain HTTP/1.1 at the same rate; and the TLS cost per delivered event, the
difference from the same protocol in cleartext (tls - plain, tls-h2 - plain-h2)."""
import json
import statistics
import sys

runs = {}
for line in sys.stdin:
    parts = line.split(" ", 2)
    if len(parts) != 3 or not parts[2].startswith("{"):
        continue
    mode, rate, report = parts[0], float(parts[1]), json.loads(parts[2])
    runs.setdefault((mode, rate), []).append(report)

def med(values):
    return statistics.median(values)

rows = {}
for (mode, rate), reports in runs.items():
    cpu = [r["server"]["publish_phase_cpu_seconds"] for r in reports]
    per_event_us = [r["server"]["publish_phase_cpu_seconds"] / r["delivered"] * 1e6 for r in reports]
    rows[(mode, rate)] = {
        "n": len(reports),
        "delivered": f'{min(r["delivered"] for r in reports):,} / {reports[0]["expected"]:,}',
        "lost": sum(r["lost"] for r in reports),
        "connections": reports[0]["connections"],
        "connect": med([r["connect_seconds"] for r in reports]),
        "eps": med([r["delivered_per_second"] for r in reports]),
        "p50": med([r["latency_ms"]["p50"] for r in reports]),
        "p99": med([r["latency_ms"]["p99"] for r in reports]),
        "idle_kb": med([r["server"]["idle_kb_per_connection"] for r in reports]),
        "cpu": med(cpu),
        "cpu_runs": cpu,
        "us": med(per_event_us),
        "bench_cpu": med([r["bench_cpu_seconds"] for r in reports]),
    }

print("| mode | rate | runs | connections | delivered (min) / expected | lost | connect s | delivered/s | p50 ms | p99 ms | idle KB/subscriber | server CPU s (runs) | server CPU µs/delivery | vs plain HTTP/1.1 µs | TLS cost µs/delivery | bench CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (mode, rate), row in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    plain = rows.get(("plain", rate))
    versus = "—" if mode == "plain" or plain is None else f'{row["us"] - plain["us"]:+.2f}'
    clear = rows.get((mode.replace("tls", "plain"), rate)) if mode.startswith("tls") else None
    cost = "—" if clear is None else f'{row["us"] - clear["us"]:+.2f}'
    runs_cpu = ", ".join(f"{c:.2f}" for c in row["cpu_runs"])
    print(f'| {mode} | {"fast" if rate == 0 else f"{rate:g}/s"} | {row["n"]} | {row["connections"]:,} | {row["delivered"]} | {row["lost"]} | '
          f'{row["connect"]:.2f} | {row["eps"]:,.0f} | {row["p50"]:.1f} | {row["p99"]:.1f} | {row["idle_kb"]:.1f} | '
          f'{row["cpu"]:.2f} ({runs_cpu}) | {row["us"]:.2f} | {versus} | {cost} | {row["bench_cpu"]:.2f} |')
