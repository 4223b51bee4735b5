#!/usr/bin/env bash
# A/B comparison of two HyperBox builds on the container start path, measured in alternation
# (A B A B ...) so both see the same machine state. Each build gets its own daemon and data dir.
# Usage: bench/ab-start.sh DIR_A DIR_B   (each DIR holds hyperboxd and hb, release builds)
# Knobs: ROUNDS (default 2), RUNS (latency runs per round, 40), TP_SECS (8), CONC (8).
# Needs the peer lab's registry (127.0.0.1:5000 with hb/tiny) and hyperfine.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 DIR_A DIR_B" >&2; exit 2; }
ROUNDS=${ROUNDS:-2}; RUNS=${RUNS:-40}; TP_SECS=${TP_SECS:-8}; CONC=${CONC:-8}
TINY=127.0.0.1:5000/hb/tiny:latest
WORK=$(mktemp -d /var/tmp/hb-ab.XXXXXX)
[ -d "$WORK" ] || { echo "mktemp failed" >&2; exit 1; }
declare -A DIR=([A]=$1 [B]=$2)
for v in A B; do
  [ -x "${DIR[$v]}/hyperboxd" ] && [ -x "${DIR[$v]}/hb" ] || { echo "${DIR[$v]}: no hyperboxd/hb" >&2; exit 2; }
done
PID=""
stop() {
  local v=$1
  "${DIR[$v]}/hb" -H "unix://$WORK/$v/hb.sock" rm -f $("${DIR[$v]}/hb" -H "unix://$WORK/$v/hb.sock" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [ -f "$WORK/$v/monitor.pid" ] && kill "$(cat "$WORK/$v/monitor.pid")" 2>/dev/null || true
  PID=""
  sleep 0.5
}
cleanup() { for v in A B; do stop "$v"; done; rm -rf "$WORK"; }
trap cleanup EXIT
start() {
  local v=$1
  mkdir -p "$WORK/$v"
  printf '[daemon]\ndata_dir = "%s"\nsocket = "%s"\ncgroup_parent = "hb-ab-%s"\n[networking]\nbridge_name = "hbab%s"\nbridge_subnet = "10.12%s.0.0/16"\n' \
    "$WORK/$v/data" "$WORK/$v/hb.sock" "$v" "$v" "$([ "$v" = A ] && echo 4 || echo 5)" > "$WORK/$v/config.toml"
  "${DIR[$v]}/hyperboxd" --config "$WORK/$v/config.toml" > "$WORK/$v/daemon.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do "${DIR[$v]}/hb" -H "unix://$WORK/$v/hb.sock" version >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "daemon $v did not start: $(tail -3 "$WORK/$v/daemon.log")" >&2; exit 1
}
rss() { awk '/^Rss:/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
echo "| round | build | run --rm none median ms | p99 ms | c=$CONC runs/s | fail | daemon RSS KiB after |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for v in A B; do
    start "$v"
    HB="${DIR[$v]}/hb -H unix://$WORK/$v/hb.sock"
    $HB pull -q "$TINY" >/dev/null
    $HB run --rm --network none "$TINY" /bin/true
    hyperfine -N --style none --warmup 5 --runs "$RUNS" --export-json "$WORK/$v-$round.json" \
      "$HB run --rm --network none $TINY /bin/true" >/dev/null 2>&1
    lat=$(python3 -c '
import json, statistics, sys
t = sorted(x * 1000 for x in json.load(open(sys.argv[1]))["results"][0]["times"])
print(f"{statistics.median(t):.2f} | {t[min(len(t) - 1, round(0.99 * (len(t) - 1)))]:.2f}")' "$WORK/$v-$round.json")
    end=$(( $(date +%s%N) + TP_SECS * 1000000000 )); t0=$(date +%s%N); pids=()
    for w in $(seq "$CONC"); do
      ( ok=0 bad=0
        while [ "$(date +%s%N)" -lt "$end" ]; do
          if $HB run --rm --network none "$TINY" /bin/true >/dev/null 2>&1; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
        done
        echo "$ok $bad" > "$WORK/tp-$w" ) &
      pids+=($!)
    done
    wait "${pids[@]}"
    el=$(( ($(date +%s%N) - t0) / 1000000 )); ok=0; bad=0
    for w in $(seq "$CONC"); do read -r o b < "$WORK/tp-$w"; ok=$((ok + o)); bad=$((bad + b)); done
    echo "| $round | $v | $lat | $(python3 -c "print(f'{$ok / ($el / 1000):.1f}')") | $bad | $(rss "$PID") |"
    stop "$v"
  done
done
