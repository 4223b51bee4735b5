#!/usr/bin/env bash
# hyperboxd's RSS fresh and after rounds of concurrent `hb run --rm --network none tiny
# /bin/true` (CONC clients x RUNS each per round), to tell a high-water mark from a leak.
# Usage: bench/rss-after-runs.sh BIN_DIR [VAR=value ...]   (BIN_DIR holds hyperboxd and hb;
# the assignments go to the daemon's environment, e.g. MALLOC_ARENA_MAX=2)
# Knobs: CONC (8), RUNS (40), ROUNDS (2), DEB=1 (first pull and run hb/deb, the biggest test
# image), IDLE_SECS (20: the last row is after that long idle, past the daemon's 15 s trim).
# Needs the peer lab's registry (hb/tiny, hb/deb).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BIN_DIR [VAR=value ...]" >&2; exit 2; }
BIN=$1; shift
CONC=${CONC:-8}; RUNS=${RUNS:-40}; ROUNDS=${ROUNDS:-2}; DEB=${DEB:-0}; IDLE_SECS=${IDLE_SECS:-20}
W=$(mktemp -d /var/tmp/hb-rss.XXXXXX)
[ -d "$W" ] || { echo "mktemp failed" >&2; exit 1; }
printf '[daemon]\ndata_dir = "%s"\nsocket = "%s"\ncgroup_parent = "hb-rss"\n[networking]\nbridge_name = "hbrss0"\nbridge_subnet = "10.126.0.0/16"\n' \
  "$W/data" "$W/hb.sock" > "$W/c.toml"
env "$@" "$BIN/hyperboxd" --config "$W/c.toml" > "$W/log" 2>&1 &
P=$!
cleanup() {
  kill "$P" 2>/dev/null || true; wait "$P" 2>/dev/null || true
  [ -f "$W/monitor.pid" ] && kill "$(cat "$W/monitor.pid")" 2>/dev/null || true
  sleep 1; rm -rf "$W"
}
trap cleanup EXIT
HB="$BIN/hb -H unix://$W/hb.sock"
for _ in $(seq 200); do $HB version >/dev/null 2>&1 && break; sleep 0.05; done
$HB pull -q 127.0.0.1:5000/hb/tiny:latest >/dev/null
rss() { # "RSS | anon | file" in KiB
  awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} /^RssShmem:/ {s = $2} END {print a + f + s " | " a " | " f}' "/proc/$P/status"
}
echo "| after | hyperboxd RSS KiB | anon KiB | file KiB | threads |"
echo "|---|---|---|---|---|"
echo "| start | $(rss) | $(ls "/proc/$P/task" | wc -l) |"
if [ "$DEB" = 1 ]; then
  $HB pull -q 127.0.0.1:5000/hb/deb:latest >/dev/null
  $HB run --rm --network none 127.0.0.1:5000/hb/deb:latest /bin/true
  echo "| pull + run hb/deb | $(rss) | $(ls "/proc/$P/task" | wc -l) |"
fi
for round in $(seq "$ROUNDS"); do
  pids=()
  for _ in $(seq "$CONC"); do
    ( for _ in $(seq "$RUNS"); do $HB run --rm --network none 127.0.0.1:5000/hb/tiny:latest /bin/true >/dev/null 2>&1 || true; done ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  echo "| $((round * CONC * RUNS)) runs of tiny | $(rss) | $(ls "/proc/$P/task" | wc -l) |"
done
sleep "$IDLE_SECS"
echo "| then $IDLE_SECS s idle | $(rss) | $(ls "/proc/$P/task" | wc -l) |"
