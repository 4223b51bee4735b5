#!/usr/bin/env python3
"""How often each model's confident guesses came true on the generated families.

For each family (seed 1 unless given) and technique, replays the trace through the daemon's
engine (`replay replay --json`, hb-predict's example) at a cache size and sums the calibration
record's bands at 60% and above: guesses made, and the share whose image started within the
horizon. Usage: bench/calibration-summary.py [--seed S] [--cache-mb N]
"""

import argparse
import json
import os
import subprocess
import tempfile


def replay_tool(*args):
    return subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "hb-predict", "--example", "replay", "--", *args],
        check=True, capture_output=True, text=True).stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", default="1")
    parser.add_argument("--cache-mb", default="1024")
    args = parser.parse_args()
    print(f"| family | technique | kind of guess | settled at ≥ 60% | came true |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("dev", "ci", "team"):
            trace = os.path.join(tmp, f"{family}.jsonl")
            with open(trace, "w") as f:
                f.write(replay_tool("gen-trace", "--family", family, "--seed", args.seed))
            for technique in ("frequency", "predictive", "statistical"):
                report = json.loads(replay_tool(
                    "replay", "--trace", trace, "--cache-mb", args.cache_mb,
                    "--technique", technique, "--json"))
                for kind, bands in sorted(report["calibration"]["bands"].items()):
                    came_true = sum(b[0] for b in bands[6:])
                    settled = sum(b[1] for b in bands[6:])
                    if settled:
                        print(f"| {family} | {technique} | {kind} | {settled} | "
                              f"{100.0 * came_true / settled:.1f}% |")


if __name__ == "__main__":
    main()
