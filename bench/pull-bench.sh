#!/usr/bin/env bash
# Pull and disk benchmarks for HyperBox side by side with docker and skopeo, in one run, against
# the peer lab's registry (../shared/bench/peers/setup.sh must have run: registry on
# 127.0.0.1:5000 with hb/tiny, hb/deb, hb/deb-curl, hb/deb-curl-squash).
# Writes a markdown report to $OUT (default bench/results/pull-<date>.md) and prints it.
# Knobs: RUNS (default 3; tiny always 5), SKIP_DOCKER=1, HB_CONFIG (extra TOML lines, no [daemon]).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REG=127.0.0.1:5000
OUT=${OUT:-$HERE/results/pull-$(date -u +%Y%m%dT%H%M%SZ).md}
RUNS=${RUNS:-3}
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d /var/tmp/hb-bench.XXXXXX)
[ -n "$WORK" ] && [ -d "$WORK" ] || { echo "mktemp failed" >&2; exit 1; }
RAW=$WORK/raw
mkdir -p "$RAW"

curl -fsS "http://$REG/v2/" >/dev/null || { echo "registry on $REG is not up: run ../shared/bench/peers/setup.sh" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine missing (apt-get install hyperfine)" >&2; exit 1; }

"$ROOT/scripts/build-release.sh" --manifest-path "$ROOT/Cargo.toml" >&2
RELEASE=$("$ROOT/scripts/target-dir.sh")/release
HBD=$RELEASE/hyperboxd
HB="$RELEASE/hb -H unix://$WORK/hb.sock"

# ---------------------------------------------------------------- hyperboxd
printf '[daemon]\ndata_dir = "%s"\nsocket = "%s"\n%s\n' "$WORK/hb-data" "$WORK/hb.sock" "${HB_CONFIG:-}" > "$WORK/hyperbox.toml"
"$HBD" --config "$WORK/hyperbox.toml" > "$WORK/hyperboxd.log" 2>&1 &
HBPID=$!

# ---------------------------------------------------------------- docker (own data root)
DSOCK=$WORK/docker.sock
D="/usr/bin/docker -H unix://$DSOCK"
DOCKER_OK=0
cleanup() {
  kill "$HBPID" 2>/dev/null || true
  # The monitor outlives the daemon by design (containers survive a restart): stop it too.
  if [ -f "$WORK/monitor.pid" ]; then kill "$(cat "$WORK/monitor.pid")" 2>/dev/null || true; fi
  for p in dockerd containerd; do
    if [ -f "$WORK/$p.pid" ]; then kill "$(cat "$WORK/$p.pid")" 2>/dev/null || true; fi
  done
  sleep 2
  umount "$WORK/docker/root/overlay2" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ "${SKIP_DOCKER:-0}" != 1 ] && command -v dockerd >/dev/null; then
  mkdir -p "$WORK/docker" "$WORK/run-containerd" "$WORK/run-docker"
  printf 'version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s"\n[plugins."io.containerd.internal.v1.opt"]\n  path = "%s"\n' \
    "$WORK/containerd" "$WORK/run-containerd/state" "$WORK/run-containerd/containerd.sock" "$WORK/containerd/opt" > "$WORK/containerd.toml"
  printf '{"data-root": "%s", "exec-root": "%s", "pidfile": "%s", "hosts": ["unix://%s"], "containerd": "%s", "insecure-registries": ["%s"], "storage-driver": "overlay2", "exec-opts": ["native.cgroupdriver=cgroupfs"], "bridge": "none", "iptables": false, "log-level": "warn"}\n' \
    "$WORK/docker/root" "$WORK/run-docker" "$WORK/run-docker/dockerd.pid" "$DSOCK" "$WORK/run-containerd/containerd.sock" "$REG" > "$WORK/daemon.json"
  containerd --config "$WORK/containerd.toml" > "$WORK/containerd.log" 2>&1 &
  echo $! > "$WORK/containerd.pid"
  for _ in $(seq 100); do [ -S "$WORK/run-containerd/containerd.sock" ] && break; sleep 0.1; done
  dockerd --config-file "$WORK/daemon.json" > "$WORK/dockerd.log" 2>&1 &
  echo $! > "$WORK/dockerd.pid"
  for _ in $(seq 200); do if $D version >/dev/null 2>&1; then DOCKER_OK=1; break; fi; sleep 0.1; done
  [ $DOCKER_OK = 1 ] || echo "docker did not start: $(tail -3 "$WORK/dockerd.log")" >&2
fi
for _ in $(seq 200); do $HB version >/dev/null 2>&1 && break; sleep 0.05; done

rows=()
row() { rows+=("| $* |"); }
hf() { # name hyperfine-args...  -> "median | mean | min | max | n"
  local name=$1; shift
  if ! hyperfine -N --style none --export-json "$RAW/$name.json" "$@" > "$RAW/$name.txt" 2>&1; then
    echo "hyperfine $name failed: $(tail -3 "$RAW/$name.txt")" >&2
    return 1
  fi
  python3 -c '
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"][0]
t = [x * 1000 for x in r["times"]]
print(f"{statistics.median(t):.1f} | {statistics.mean(t):.1f} | {min(t):.1f} | {max(t):.1f} | {len(t)}")
' "$RAW/$name.json"
}
ALL="$REG/hb/tiny:latest $REG/hb/deb:latest $REG/hb/deb-curl:latest $REG/hb/deb-curl-squash:latest"
hb_rmall="sh -c '$HB rmi -f $ALL >/dev/null 2>&1; $HB system prune >/dev/null; true'"
d_rmall="sh -c '$D rmi -f $ALL >/dev/null 2>&1; true'"
hb_havedeb="sh -c '$HB rmi -f $REG/hb/deb-curl:latest $REG/hb/deb-curl-squash:latest >/dev/null 2>&1; $HB system prune >/dev/null; $HB pull -q $REG/hb/deb:latest >/dev/null'"
d_havedeb="sh -c '$D rmi -f $REG/hb/deb-curl:latest $REG/hb/deb-curl-squash:latest >/dev/null 2>&1; $D pull -q $REG/hb/deb:latest >/dev/null'"

for case in "tiny(cold)|tiny|cold|5" "deb(cold)|deb|cold|$RUNS" "deb-curl(cold)|deb-curl|cold|$RUNS" \
            "deb-curl(deb present)|deb-curl|deb|$RUNS" "deb-curl-squash(deb present)|deb-curl-squash|deb|$RUNS"; do
  IFS='|' read -r label img mode runs <<< "$case"
  ref=$REG/hb/$img:latest
  if [ "$mode" = cold ]; then hp=$hb_rmall; dp=$d_rmall; else hp=$hb_havedeb; dp=$d_havedeb; fi
  if r=$(hf "hb-$img-$mode" --runs "$runs" --prepare "$hp" "$HB pull -q $ref"); then row "pull $label | hb | $r | ms"; fi
  if [ $DOCKER_OK = 1 ]; then
    if r=$(hf "docker-$img-$mode" --runs "$runs" --prepare "$dp" "$D pull -q $ref"); then row "pull $label | docker | $r | ms"; fi
  fi
  if [ "$img" = deb ] && [ "$mode" = cold ]; then
    # zstd runs after the pull returns; this is the time until the store is fully compressed.
    if r=$(hf "hb-deb-cold-compressed" --runs "$runs" --prepare "$hp" "sh -c '$HB pull -q $ref >/dev/null && $HB system compress >/dev/null'"); then
      row "pull $label, then hb system compress (background zstd finished) | hb | $r | ms"
    fi
  fi
  if [ "$mode" = cold ] && command -v skopeo >/dev/null; then
    if r=$(hf "skopeo-$img" --runs "$runs" --prepare "rm -rf $WORK/skopeo" "skopeo copy -q --src-tls-verify=false docker://$ref oci:$WORK/skopeo:x"); then
      row "pull $label | skopeo copy (no unpack) | $r | ms"
    fi
  fi
done

pack_bytes() { $HB system df --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["pack_bytes"])'; }
# Store growth for deb-curl-squash with deb present, from an emptied store (so no garbage of
# the runs above sits in a pack a rewrite would compact), sizes taken once background
# compression is done (`hb system compress` waits for it).
sh -c "$hb_rmall"
$HB pull -q "$REG/hb/deb:latest" >/dev/null
$HB system compress >/dev/null
before=$(pack_bytes)
$HB pull -q "$REG/hb/deb-curl-squash:latest" >/dev/null
$HB system compress >/dev/null
after=$(pack_bytes)
row "store growth: deb-curl-squash pulled with deb present | hb | $(( (after - before) / 1024 )) KiB | | | | 1 | pack bytes"
LAB_OCI=${HB_LAB:-/var/lib/hb-lab}/oci
if [ -f "$LAB_OCI/index.json" ] && command -v zstd >/dev/null; then
  ref=$(python3 "$HERE/new-content-zstd.py" "$LAB_OCI" deb deb-curl-squash 3)
  zb=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["zstd_bytes"])' "$ref")
  row "yardstick: zstd -3 of deb-curl-squash's new file content (bench/new-content-zstd.py) | zstd | $(( zb / 1024 )) KiB | | | | 1 | growth/yardstick = $(python3 -c "print(f'{$((after - before))/$zb:.2f}')")x"
fi

# Disk for all four images, pulled once into an emptied store (rmi + prune first, as for docker,
# whose data root is fresh): the runs above leave dead chunks in packs GC has not compacted yet.
sh -c "$hb_rmall"
for i in tiny deb deb-curl deb-curl-squash; do $HB pull -q "$REG/hb/$i:latest" >/dev/null; done
$HB system compress >/dev/null
hb_disk=$(du -sk "$WORK/hb-data" | cut -f1)
row "disk, all four images | hb data_dir | $(( hb_disk / 1024 )) MiB | | | | 1 | du -sk"
$HB system df > "$RAW/hb-df.txt"
if [ $DOCKER_OK = 1 ]; then
  for i in tiny deb deb-curl deb-curl-squash; do $D pull -q "$REG/hb/$i:latest" >/dev/null; done
  d_disk=$(du -sk "$WORK/docker/root" "$WORK/containerd" 2>/dev/null | awk '{s += $1} END {print s}')
  row "disk, all four images | docker data-root + containerd root | $(( d_disk / 1024 )) MiB | | | | 1 | du -sk"
fi

# Idle RSS of hyperboxd (restarted on the same data dir, after one request).
kill "$HBPID"; wait "$HBPID" 2>/dev/null || true
"$HBD" --config "$WORK/hyperbox.toml" > "$WORK/hyperboxd.log" 2>&1 &
HBPID=$!
for _ in $(seq 200); do $HB version >/dev/null 2>&1 && break; sleep 0.05; done
$HB images >/dev/null
sleep 1
rss=$(awk '/^Rss:/ {print $2}' "/proc/$HBPID/smaps_rollup")
pss=$(awk '/^Pss:/ {print $2}' "/proc/$HBPID/smaps_rollup")
row "idle RSS (restarted, 4 images stored) | hyperboxd | $(( rss / 1024 )) MiB ($rss KiB, PSS $pss KiB) | | | | 1 | smaps_rollup"

{
  echo "### Pull benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Command: \`bench/pull-bench.sh\` (RUNS=$RUNS${HB_CONFIG:+, HB_CONFIG='$HB_CONFIG'}); machine: $(nproc) vCPU, kernel $(uname -r); docker: $( [ $DOCKER_OK = 1 ] && $D version --format '{{.Server.Version}}' || echo skipped); hyperfine -N, --prepare removes images (hb: rmi + system prune)."
  echo
  echo "| what | engine | median | mean | min | max | n | unit |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo '`hb system df` after all four images:'
  echo '```'
  cat "$RAW/hb-df.txt"
  echo '```'
} | tee "$OUT"
