#!/usr/bin/env python3
"""The load side of bench/soak.sh: mixed clients against imbang for a bounded time, with the
reloads, backend kills and abusive clients the soak asks for; prints a report.

Clients (asyncio, 127.0.0.1 only), each kind in its own tasks:
  keepalive   GETs on kept-alive connections
  fresh       one GET per new connection
  post        POSTs of 16 KiB on kept-alive connections
  websocket   an Upgrade, then a frame echoed back, per connection
  h2c         h2load bursts (HTTP/2 with prior knowledge), every 10 s
  abusive     slow heads (slowloris), huge header lines, garbage, half-sent bodies, clients that
              never read their answer: their own answers are not counted as failures
Events: SIGHUP (reload) to imbang every 10 s; origin A killed (SIGKILL) every minute and
started again 5 s later.
Sampled every 5 s: imbang's VmRSS and open file descriptors (/proc/PID).

A failed request is one whose answer is not the expected status and body, or that got no answer
(connection error, timeout after 10 s). Requests that were in flight at origin A when it was
killed are counted apart, as the soak allows: those that failed within 2 s after a kill (imbang
retries idempotent requests on the other origin, so few should).
"""
import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--duration", type=float, default=1800)
p.add_argument("--port", type=int, required=True)
p.add_argument("--h2-port", type=int, required=True)
p.add_argument("--pid", type=int, required=True)
p.add_argument("--origin-a-cmd", required=True, help="shell command that starts origin A")
p.add_argument("--origin-a-pidfile", required=True)
p.add_argument("--reload-every", type=float, default=10)
p.add_argument("--kill-every", type=float, default=60)
p.add_argument("--ws-port", type=int, required=True, help="where to serve the WebSocket echo")
p.add_argument("--json", default="")
args = p.parse_args()

HOST = "127.0.0.1"
START = time.monotonic()
END = START + args.duration
kills = []  # monotonic times origin A was killed


def minute(t):
    return int((t - START) // 60)


class Stats:
    def __init__(self):
        self.ok = {}
        self.failed = {}
        self.near_kill = {}
        self.latency = {}  # minute -> list of seconds
        self.errors = {}

    def record(self, kind, ok, started, why=""):
        now = time.monotonic()
        m = minute(started)
        if ok:
            self.ok[kind] = self.ok.get(kind, 0) + 1
            self.latency.setdefault(m, []).append(now - started)
        elif any(0 <= started - k < 2 or 0 <= now - k < 2 for k in kills):
            self.near_kill[kind] = self.near_kill.get(kind, 0) + 1
        else:
            self.failed[kind] = self.failed.get(kind, 0) + 1
            key = f"{kind}: {why}"[:120]
            self.errors[key] = self.errors.get(key, 0) + 1


stats = Stats()


async def read_answer(reader):
    """Status and body of one Content-Length or chunked answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    if "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = b""
    return status, body, fields


async def keepalive(kind, path, body=b""):
    while time.monotonic() < END:
        try:
            reader, writer = await asyncio.open_connection(HOST, args.port)
        except OSError as e:
            stats.record(kind, False, time.monotonic(), f"connect: {e}")
            await asyncio.sleep(0.1)
            continue
        try:
            for _ in range(200):
                if time.monotonic() >= END:
                    break
                started = time.monotonic()
                method = "POST" if body else "GET"
                req = f"{method} {path} HTTP/1.1\r\nHost: soak\r\n"
                if body:
                    req += f"Content-Length: {len(body)}\r\n"
                writer.write(req.encode() + b"\r\n" + body)
                try:
                    status, got, fields = await asyncio.wait_for(read_answer(reader), 10)
                except Exception as e:
                    stats.record(kind, False, started, type(e).__name__)
                    break
                good = status == 200 and len(got) > 0
                stats.record(kind, good, started, f"status {status}")
                if fields.get("connection", "").lower() == "close":
                    break
        finally:
            writer.close()


async def fresh():
    while time.monotonic() < END:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(HOST, args.port)
            writer.write(b"GET /fresh HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            status, _, _ = await asyncio.wait_for(read_answer(reader), 10)
            stats.record("fresh", status == 200, started, f"status {status}")
            writer.close()
        except Exception as e:
            stats.record("fresh", False, started, type(e).__name__)


async def websocket():
    while time.monotonic() < END:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(HOST, args.port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    "GET /ws HTTP/1.1\r\nHost: soak\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
                ).encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if not head.startswith(b"HTTP/1.1 101"):
                stats.record("websocket", False, started, head.split(b"\r\n")[0].decode("latin-1"))
                writer.close()
                continue
            ok = True
            for i in range(20):
                payload = b"soak %d" % i
                mask = os.urandom(4)
                frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
                    b ^ mask[j % 4] for j, b in enumerate(payload)
                )
                writer.write(frame)
                echoed = await asyncio.wait_for(reader.readexactly(len(frame)), 10)
                ok = ok and echoed == frame
            stats.record("websocket", ok, started, "echo differs")
            writer.close()
        except Exception as e:
            stats.record("websocket", False, started, type(e).__name__)


async def h2c():
    while time.monotonic() < END:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "h2load", "-n", "2000", "-c", "4", "-m", "10", f"http://{HOST}:{args.h2_port}/h2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        out = out.decode(errors="replace")
        line = next((l for l in out.splitlines() if l.startswith("requests:")), "")
        # requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout
        words = line.replace(",", "").split()
        try:
            succeeded = int(words[words.index("succeeded") - 1])
            total = int(words[1])
        except (ValueError, IndexError):
            succeeded, total = 0, 2000
        for _ in range(succeeded):
            stats.ok["h2c"] = stats.ok.get("h2c", 0) + 1
        for _ in range(total - succeeded):
            stats.record("h2c", False, started, "h2load: " + line[:80])
        await asyncio.sleep(max(0, 10 - (time.monotonic() - started)))


abuse_counts = {}


async def abusive(kind):
    """Abusive clients: each kind in a loop; what they get back is not a failure."""
    while time.monotonic() < END:
        try:
            reader, writer = await asyncio.open_connection(HOST, args.port)
            if kind == "slowloris":
                writer.write(b"GET / HTTP/1.1\r\nHost: soak\r\n")
                for i in range(20):
                    await asyncio.sleep(1)
                    writer.write(b"X-%d: a\r\n" % i)
                    await writer.drain()
            elif kind == "huge-header":
                writer.write(b"GET / HTTP/1.1\r\nHost: soak\r\nX: " + b"a" * 65536 + b"\r\n\r\n")
                await asyncio.wait_for(reader.read(), 10)
            elif kind == "garbage":
                writer.write(os.urandom(2048))
                await asyncio.wait_for(reader.read(), 10)
            elif kind == "half-body":
                writer.write(b"POST /post HTTP/1.1\r\nHost: soak\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                await asyncio.sleep(5)
            elif kind == "never-reads":
                writer.write(b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n" * 20)
                await asyncio.sleep(15)
            writer.close()
            abuse_counts[kind] = abuse_counts.get(kind, 0) + 1
            # A mix, not a flood: each abusive client comes back ten times a second at most.
            await asyncio.sleep(0.1)
        except Exception:
            abuse_counts[kind] = abuse_counts.get(kind, 0) + 1
            await asyncio.sleep(0.1)


samples = []  # (seconds, rss bytes, fds)


def sample():
    try:
        status = open(f"/proc/{args.pid}/status").read()
        rss = int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1]) * 1024
        fds = len(os.listdir(f"/proc/{args.pid}/fd"))
    except (OSError, StopIteration):
        return
    samples.append((time.monotonic() - START, rss, fds))


def origin_a_pid():
    try:
        return int(open(args.origin_a_pidfile).read().strip())
    except (OSError, ValueError):
        return None


async def events():
    next_reload = START + args.reload_every
    next_kill = START + args.kill_every
    next_sample = START
    reloads = 0
    while time.monotonic() < END:
        now = time.monotonic()
        if now >= next_sample:
            sample()
            next_sample += 5
        if now >= next_reload:
            os.kill(args.pid, signal.SIGHUP)
            reloads += 1
            next_reload += args.reload_every
        if now >= next_kill:
            pid = origin_a_pid()
            if pid:
                kills.append(time.monotonic())
                # A single process (`master_process off`): its pid is the whole origin.
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(5)
                subprocess.Popen(args.origin_a_cmd, shell=True)
            next_kill += args.kill_every
        await asyncio.sleep(0.2)
    sample()
    return reloads


async def ws_echo(reader, writer):
    """The WebSocket origin: answers the Upgrade, then sends back every byte."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            l.split(b":", 1)[1].strip()
            for l in head.split(b"\r\n")
            if l.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()


async def main():
    await asyncio.start_server(ws_echo, HOST, args.ws_port)
    tasks = []
    for _ in range(8):
        tasks.append(asyncio.create_task(keepalive("keepalive", "/")))
    for _ in range(4):
        tasks.append(asyncio.create_task(fresh()))
    for _ in range(4):
        tasks.append(asyncio.create_task(keepalive("post", "/post", b"p" * 16384)))
    for _ in range(2):
        tasks.append(asyncio.create_task(websocket()))
    tasks.append(asyncio.create_task(h2c()))
    for kind in ["slowloris", "slowloris", "huge-header", "garbage", "half-body", "never-reads"]:
        tasks.append(asyncio.create_task(abusive(kind)))
    reloads = await events()
    await asyncio.gather(*tasks, return_exceptions=True)
    return reloads


reloads = asyncio.run(main())


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


report = {
    "duration_s": args.duration,
    "reloads": reloads,
    "origin_kills": len(kills),
    "ok": stats.ok,
    "failed": stats.failed,
    "failed_near_kill": stats.near_kill,
    "errors": stats.errors,
    "abusive_clients": abuse_counts,
    "per_minute": [
        {
            "minute": m,
            "requests": len(v),
            "p50_ms": round(pct(v, 0.5) * 1000, 2),
            "p99_ms": round(pct(v, 0.99) * 1000, 2),
        }
        for m, v in sorted(stats.latency.items())
    ],
    "samples": [{"t": round(t), "rss_mib": round(r / 2**20, 1), "fds": f} for t, r, f in samples],
}
print(f"duration {args.duration:.0f} s, {reloads} reloads, {len(kills)} kills of origin A")
print("succeeded:", json.dumps(stats.ok))
print("failed:", json.dumps(stats.failed), " (near a kill:", json.dumps(stats.near_kill) + ")")
for k, v in sorted(stats.errors.items(), key=lambda kv: -kv[1])[:10]:
    print(f"  {v} x {k}")
print("abusive clients run:", json.dumps(abuse_counts))
print("minute  requests  p50 ms  p99 ms")
for row in report["per_minute"]:
    print(f"{row['minute']:6d} {row['requests']:9d} {row['p50_ms']:7.2f} {row['p99_ms']:7.2f}")
print("   t s  RSS MiB  fds")
for s in report["samples"][:: max(1, len(report["samples"]) // 20)]:
    print(f"{s['t']:6d} {s['rss_mib']:8.1f} {s['fds']:4d}")
if args.json:
    json.dump(report, open(args.json, "w"), indent=1)
