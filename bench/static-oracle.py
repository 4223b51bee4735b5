#!/usr/bin/env python3
"""Indicative ceiling of hot-tier *retention* on a trace: an oracle that knows every image's start
count over the whole trace keeps a fixed set (best starts per MiB first, knapsack-greedy) and
never changes it; printed beside LRU by bytes. It ignores what prewarming can add (loading an
image right before its start) and what a dynamic policy gains from bursts and drift, so it is a
yardstick, not a bound on every policy.

Usage: bench/static-oracle.py TRACE.jsonl [CACHE_MB ...]   (default sizes 512 1024 2048 4096)
"""
import collections
import json
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    events = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    sizes = [float(x) for x in sys.argv[2:]] or [512, 1024, 2048, 4096]
    size = {e["image"]: e["size_mb"] for e in events}
    count = collections.Counter(e["image"] for e in events)
    print("| cache MB | starts | LRU cold starts | static oracle cold starts | fewer |")
    print("|---|---|---|---|---|")
    for cap in sizes:
        used, keep = 0.0, set()
        for image in sorted(count, key=lambda i: (-count[i] / max(size[i], 1.0), i)):
            if used + size[image] <= cap:
                keep.add(image)
                used += size[image]
        oracle_cold = len(events) - sum(count[i] for i in keep)
        lru, held, hits = collections.OrderedDict(), 0.0, 0
        for e in events:
            image = e["image"]
            if image in lru:
                hits += 1
                lru.move_to_end(image)
                continue
            if size[image] > cap:
                continue
            lru[image] = size[image]
            held += size[image]
            while held > cap:
                victim = next(iter(lru))
                if victim == image:
                    lru.move_to_end(victim)
                    victim = next(iter(lru))
                held -= lru.pop(victim)
        lru_cold = len(events) - hits
        print(f"| {cap:.0f} | {len(events)} | {lru_cold} | {oracle_cold} | "
              f"{100 * (1 - oracle_cold / lru_cold):.1f}% |")


if __name__ == "__main__":
    main()
