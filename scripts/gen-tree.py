#!/usr/bin/env python3
"""Deterministic benchmark tree: many small files (half text, half random),
some large ones (half compressible), a few duplicates.

usage: gen-tree.py DIR [SMALL_COUNT] [LARGE_COUNT]
"""
import os
import random
import sys

out = sys.argv[1]
small = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
large = int(sys.argv[3]) if len(sys.argv) > 3 else 20
rng = random.Random(42)
words = [b"tenant", b"event", b"object", b"strata", b"vault", b"point", b"time", b"key", b"value", b"\n"]

def text(n):
    parts = []
    size = 0
    while size < n:
        w = words[rng.randrange(len(words))] + b" "
        parts.append(w)
        size += len(w)
    return b"".join(parts)[:n]

for i in range(small):
    d = os.path.join(out, "tenant", str(i % 50), "attachments", str(i % 997))
    os.makedirs(d, exist_ok=True)
    n = rng.randrange(1024, 16 * 1024)
    data = text(n) if i % 2 == 0 else rng.randbytes(n)
    with open(os.path.join(d, f"obj-{i}.json"), "wb") as f:
        f.write(data)
os.makedirs(os.path.join(out, "large"), exist_ok=True)
for i in range(large):
    n = rng.randrange(4 << 20, 8 << 20)
    data = text(n) if i % 2 == 0 else rng.randbytes(n)
    with open(os.path.join(out, "large", f"blob-{i}.bin"), "wb") as f:
        f.write(data)
# Exact duplicates under other keys (~5%).
for i in range(0, small, 20):
    src = os.path.join(out, "tenant", str(i % 50), "attachments", str(i % 997), f"obj-{i}.json")
    dst_dir = os.path.join(out, "copies", str(i % 50))
    os.makedirs(dst_dir, exist_ok=True)
    with open(src, "rb") as a, open(os.path.join(dst_dir, f"copy-{i}.json"), "wb") as b:
        b.write(a.read())
