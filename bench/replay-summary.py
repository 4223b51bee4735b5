#!/usr/bin/env python3
"""Issue 5's targets across generator seeds, from the replay tables themselves.

Runs `replay bench --seed S` (hb-predict's example: the daemon's engine on generated traces)
for each seed and prints, per family and cache size, how many fewer cold starts than LRU
(`none`) the technique with the fewest cold starts has, with its prediction_accuracy and
prewarm count, and the same for the best technique whose accuracy is at least 70% (or that
made no prewarm). Usage:
  bench/replay-summary.py [SEED ...]           run the replay for these seeds (default 1 2 3 4)
  bench/replay-summary.py --from FILE ...      summarize saved `replay bench` outputs instead
                                               (their seed is read from the family headings)
"""

import re
import subprocess
import sys

TECHNIQUES = ["frequency", "predictive", "statistical"]


def run_replay(seed):
    return subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "hb-predict", "--example", "replay", "--",
         "bench", "--seed", str(seed)],
        check=True, capture_output=True, text=True).stdout


def parse(out, what):
    rows, family = {}, None
    for line in out.splitlines():
        m = re.match(r"#+ (\w+) \(", line)
        if m:
            family = m.group(1)
            continue
        if family and line.startswith("| ") and not line.startswith("| technique"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not cells[1].isdigit():
                continue
            accuracy = None if cells[6] == "-" else float(cells[6].rstrip("%"))
            rows[(family, int(cells[1]), cells[0])] = (int(cells[3]), int(cells[5]), accuracy)
    if not rows:
        sys.exit(f"{what}: no tables in the replay output")
    return rows


def seed_of(out, what):
    m = re.search(r"days, seed (\d+)\)", out)
    if not m:
        sys.exit(f"{what}: no seed in the family headings")
    return int(m.group(1))


def cell(rows, family, mb):
    lru = rows[(family, mb, "none")][0]
    best = ok = None
    for t in TECHNIQUES:
        cold, prewarmed, accuracy = rows[(family, mb, t)]
        entry = (cold, t, 100.0 * (lru - cold) / lru, prewarmed, accuracy)
        if best is None or cold < best[0]:
            best = entry
        if (accuracy is None or accuracy >= 70.0) and (ok is None or cold < ok[0]):
            ok = entry

    def show(e):
        if e is None:
            return "none"
        _, t, fewer, prewarmed, accuracy = e
        acc = "-" if accuracy is None else f"{accuracy:.1f}%"
        mark = "✓" if fewer >= 30.0 and (accuracy is None or accuracy >= 70.0) else "✗"
        return f"{mark} {t} {fewer:.1f}% ({acc} on {prewarmed})"

    return f"{show(best)}; ≥70%: {show(ok)}"


def main():
    args = sys.argv[1:]
    per_seed = {}
    if args[:1] == ["--from"]:
        for path in args[1:]:
            with open(path) as f:
                out = f.read()
            per_seed[seed_of(out, path)] = parse(out, path)
    else:
        for seed in [int(s) for s in args] or [1, 2, 3, 4]:
            per_seed[seed] = parse(run_replay(seed), f"seed {seed}")
    seeds = sorted(per_seed)
    print("| family | seed | " + " | ".join(f"{mb} MB" for mb in (512, 1024, 2048, 4096)) + " |")
    print("|---|---|" + "---|" * 4)
    for family in ("dev", "ci", "team"):
        for seed in seeds:
            rows = per_seed[seed]
            sizes = sorted({k[1] for k in rows if k[0] == family})
            print(f"| {family} | {seed} | " + " | ".join(cell(rows, family, mb) for mb in sizes) + " |")


if __name__ == "__main__":
    main()
