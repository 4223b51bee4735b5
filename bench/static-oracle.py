#!/usr/bin/env python3
"""Indicative ceilings of hot-tier *retention* on a trace, printed beside LRU by bytes:
- static oracle: knows every image's start count over the whole trace and keeps a fixed set
  (best starts per MiB first, knapsack-greedy), never changing it;
- clairvoyant: knows the whole future and, at each cold start, keeps of the held images and the
  one just started those whose next start comes soonest, as many as fit (Belady's rule, filled
  greedily by bytes; images never started again are let go).
Neither loads anything ahead of its start (that is prewarming, which needs a prediction), so
they show how far keeping alone can go. With images of different sizes Belady's rule is not
exactly optimal, so the clairvoyant column is a strong yardstick, not a proof.

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
    # Index of the next start of the same image, for each start (len(events) when none).
    never = len(events)
    next_use, seen = [never] * len(events), {}
    for i in range(len(events) - 1, -1, -1):
        next_use[i] = seen.get(events[i]["image"], never)
        seen[events[i]["image"]] = i
    print("| cache MB | starts | LRU cold starts | static oracle cold starts | fewer "
          "| clairvoyant cold starts | fewer |")
    print("|---|---|---|---|---|---|---|")
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
        clair_cold = clairvoyant_cold_starts(events, size, next_use, cap)
        print(f"| {cap:.0f} | {len(events)} | {lru_cold} | {oracle_cold} | "
              f"{100 * (1 - oracle_cold / lru_cold):.1f}% | {clair_cold} | "
              f"{100 * (1 - clair_cold / lru_cold):.1f}% |")


def clairvoyant_cold_starts(events, size, next_use, cap):
    """Belady's rule with sizes: after each cold start, keep the soonest needed that fit."""
    never = len(events)
    held = {}  # image -> index of its next start
    cold = 0
    for i, e in enumerate(events):
        image = e["image"]
        if image in held:
            held[image] = next_use[i]
            continue
        cold += 1
        candidates = dict(held)
        candidates[image] = next_use[i]
        held, used = {}, 0.0
        for x in sorted(candidates, key=lambda x: (candidates[x], x)):
            if candidates[x] < never and used + size[x] <= cap:
                held[x] = candidates[x]
                used += size[x]
    return cold


if __name__ == "__main__":
    main()
