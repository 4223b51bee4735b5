#!/usr/bin/env bash
# The effect of each store knob of the tuning guide on a cold `hb pull` of hb/deb, on the store's
# size, and on reading the image back (`hb save` to /dev/null). One fresh data dir per setting;
# everything else at defaults. Needs the peer lab's registry on 127.0.0.1:5000.
# Writes a markdown table to $OUT (default bench/results/knobs-<date>.md) and prints it.
# Knobs: REPS (pulls per setting, default 3; the median is reported), IMAGE (default hb/deb).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REPS=${REPS:-3}
IMAGE=${IMAGE:-127.0.0.1:5000/hb/deb:latest}
OUT=${OUT:-$HERE/results/knobs-$(date -u +%Y%m%dT%H%M%SZ).md}
mkdir -p "$(dirname "$OUT")"
curl -fsS http://127.0.0.1:5000/v2/ >/dev/null || { echo "registry on 127.0.0.1:5000 is not up" >&2; exit 1; }
"$ROOT/scripts/build-release.sh" --manifest-path "$ROOT/Cargo.toml" >&2
RELEASE=$("$ROOT/scripts/target-dir.sh")/release
HBD=$RELEASE/hyperboxd
WORK=$(mktemp -d /var/tmp/hb-knobs.XXXXXX)
[ -n "$WORK" ] && [ -d "$WORK" ] || exit 1
PID=
stop_monitor() { [ -f "$WORK/monitor.pid" ] && kill "$(cat "$WORK/monitor.pid")" 2>/dev/null; sleep 0.2; true; }
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; stop_monitor; rm -rf "$WORK"; }
trap cleanup EXIT
HB="$RELEASE/hb -H unix://$WORK/hb.sock"

start() { # toml-lines
  [ -n "$PID" ] && { kill "$PID"; wait "$PID" 2>/dev/null || true; stop_monitor; }
  rm -rf "$WORK/data"
  printf '[daemon]\ndata_dir = "%s"\nsocket = "%s"\n%b\n' "$WORK/data" "$WORK/hb.sock" "$1" > "$WORK/c.toml"
  "$HBD" --config "$WORK/c.toml" 2> "$WORK/log" &
  PID=$!
  for _ in $(seq 200); do $HB version >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "hyperboxd did not start: $(cat "$WORK/log")" >&2; exit 1
}
ms() { python3 -c 'import sys,time; t=time.monotonic(); import subprocess; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(f"{(time.monotonic()-t)*1000:.0f}")' "$@"; }
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.0f}")' "$@"; }

rows=()
measure() { # label toml
  local pulls=() zstd=() reads=() stored
  for _ in $(seq "$REPS"); do
    start "$2"
    pulls+=("$(ms $HB pull -q "$IMAGE")")
    # What the background compression still had to do when the pull returned.
    zstd+=("$(ms $HB system compress)")
    reads+=("$(ms $HB save -o /dev/null "$IMAGE")")
  done
  stored=$($HB system df --format json | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]; print(s["pack_bytes"]//1024)')
  rows+=("| $1 | $(median "${pulls[@]}") | $(median "${zstd[@]}") | $(median "${reads[@]}") | $stored |")
  echo "$1 done" >&2
}

measure "defaults (sha256, level 6, batch 100/100ms, parallel_ops 4, mmap)" ""
measure "deduplication.hash_algorithm = blake3" '[deduplication]\nhash_algorithm = "blake3"'
measure "deduplication.hash_algorithm = xxhash" '[deduplication]\nhash_algorithm = "xxhash"'
measure "deduplication.parallel_ops = 1" '[deduplication]\nparallel_ops = 1'
measure "deduplication.parallel_ops = 2" '[deduplication]\nparallel_ops = 2'
measure "deduplication.enabled = false" '[deduplication]\nenabled = false'
measure "cache.compression = false" '[cache]\ncompression = false'
measure "cache.compression_level = 1" '[cache]\ncompression_level = 1'
measure "cache.compression_level = 3" '[cache]\ncompression_level = 3'
measure "cache.compression_level = 9" '[cache]\ncompression_level = 9'
measure "cache.batch_writes = false" '[cache]\nbatch_writes = false'
measure "cache.batch_size = 10" '[cache]\nbatch_size = 10'
measure "cache.batch_size = 1000" '[cache]\nbatch_size = 1000'
measure "cache.batch_timeout_ms = 0" '[cache]\nbatch_timeout_ms = 0'
measure "cache.use_mmap = false" '[cache]\nuse_mmap = false'

{
  echo "### Store knobs, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Command: \`bench/knobs.sh\` (REPS=$REPS, IMAGE=$IMAGE); $(nproc) vCPU. Each setting: fresh data dir, cold pull; median of $REPS; then \`hb system compress\` (the background zstd left when the pull returned); read = \`hb save -o /dev/null\` (reassembles every layer from the store); pack KiB after compression."
  echo
  echo "| setting | cold pull ms | compress after ms | read (save) ms | pack KiB |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT"
