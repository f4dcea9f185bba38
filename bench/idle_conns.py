#!/usr/bin/env python3
"""Opens N keep-alive connections to a proxy, sends one GET on each, reads the whole response,
then keeps every connection open and idle until SIGTERM/SIGINT (or --hold seconds).

Writes "READY ok=<n> failed=<m>" to --ready-file once all connections are idle, so a script
can read the proxy's RSS at that moment. Used by bench/run.sh scenario (e)."""

import argparse
import asyncio
import resource
import signal
import sys


async def one(host, port, path, sem, conns):
    async with sem:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle-conns\r\n\r\n".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await asyncio.wait_for(reader.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                writer.close()
                return False
            conns.append((reader, writer))
            return True
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            return False


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/small")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=200, help="connections being opened at once")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--hold", type=float, default=120, help="give up holding after this long")
    a = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)

    sem = asyncio.Semaphore(a.parallel)
    conns = []
    results = await asyncio.gather(*(one(a.host, a.port, a.path, sem, conns) for _ in range(a.n)))
    ok = sum(results)
    with open(a.ready_file, "w") as f:
        f.write(f"READY ok={ok} failed={a.n - ok}\n")
    try:
        await asyncio.wait_for(stop.wait(), a.hold)
    except asyncio.TimeoutError:
        pass
    # How many were still open when told to stop (the proxy may close idle ones).
    alive = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()
    with open(a.ready_file, "a") as f:
        f.write(f"CLOSED alive_at_end={alive}\n")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
