#!/usr/bin/env python3
"""Summarises a valgrind DHAT output (dhat.out.PID) by allocation site: blocks allocated per
request at the first frames outside the allocator, biggest first.

    dhat_top.py dhat.out.123 --requests 12000 [--top 25] [--depth 3]
"""
import argparse
import json
import re

# Files of the allocator path: std's System allocator, liballoc, and the counting allocator.
SKIP_FILES = {"unix.rs", "alloc.rs", "raw_vec.rs", "boxed.rs", "global.rs", "main.rs"}
SKIP = re.compile(
    r"(malloc|calloc|realloc|__rust_|alloc::alloc|alloc::raw_vec|RawVec|finish_grow|do_reserve|"
    r"grow_one|grow_amortized|reserve_for_push|::reserve|alloc::boxed::Box<T>::new|exchange_malloc|"
    r"vgpreload|GlobalAlloc|imbang_alloc_count::Counting|<imbang_alloc_count)"
)


def short(frame):
    # "0x1234: name (file:line)" or "0x1234: name (in /lib)"
    m = re.match(r"0x[0-9A-Fa-f]+: (.*?)(?: \((?:in )?([^()]*)\))?$", frame)
    if not m:
        return frame
    name, where = m.group(1), m.group(2) or ""
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    where = where.split("/")[-1]
    return f"{name} [{where}]" if where else name


def location_file(frame):
    m = re.search(r"\(([^():]*)(?::\d+)?\)$", frame)
    return m.group(1).split("/")[-1] if m else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--requests", type=float, required=True)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--depth", type=int, default=3)
    a = ap.parse_args()
    d = json.load(open(a.file))
    ftbl = d["ftbl"]
    sites = {}
    total_blocks = total_bytes = 0
    for pp in d["pps"]:
        frames = [ftbl[i] for i in pp["fs"]]
        kept = [
            short(f)
            for f in frames
            if not SKIP.search(f) and location_file(f) not in SKIP_FILES
        ][: a.depth]
        key = "  <-  ".join(kept) or "?"
        s = sites.setdefault(key, [0, 0])
        s[0] += pp["tbk"]
        s[1] += pp["tb"]
        total_blocks += pp["tbk"]
        total_bytes += pp["tb"]
    print(f"total: {total_blocks / a.requests:.2f} blocks/request, {total_bytes / a.requests:.0f} bytes/request "
          f"(whole process, startup included, over {a.requests:.0f} requests)")
    print(f"{'blocks/req':>10} {'bytes/req':>10}  site (first frames outside the allocator)")
    for key, (blocks, nbytes) in sorted(sites.items(), key=lambda kv: -kv[1][0])[: a.top]:
        print(f"{blocks / a.requests:10.2f} {nbytes / a.requests:10.0f}  {key}")


if __name__ == "__main__":
    main()
