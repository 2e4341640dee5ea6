#!/usr/bin/env python3
"""Idle memory per open stream of a running ssehub (or any SSE server).

Opens N raw HTTP/1.1 subscriptions, waits until each got its response head, and reports the
server's RSS before and after: (RSS with N idle streams - RSS with none) / N.

    python3 bench/idle_memory.py --pid PID --url http://127.0.0.1:3000/.well-known/mercure?topic=t -n 10000

Loopback only; bounded in count (N) and time (--timeout). The proper benchmark is `ssehub bench`
(issue 6); this script gives the one figure the core issue asks about.
"""
import argparse, asyncio, resource, time, urllib.parse


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_stream(host, port, path):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    u = urllib.parse.urlsplit(a.url)
    path = u.path + ("?" + u.query if u.query else "")
    before = rss_kib(a.pid)
    started = time.monotonic()
    streams = []
    for i in range(0, a.n, 200):
        batch = [open_stream(u.hostname, u.port, path) for _ in range(min(200, a.n - i))]
        streams += await asyncio.wait_for(asyncio.gather(*batch), a.timeout)
    opened = time.monotonic() - started
    await asyncio.sleep(2)
    after = rss_kib(a.pid)
    print(f"streams={a.n} open_seconds={opened:.1f} rss_before_kib={before} rss_after_kib={after} "
          f"per_stream_bytes={(after - before) * 1024 / a.n:.0f}")
    for _, w in streams:
        w.close()


asyncio.run(main())
