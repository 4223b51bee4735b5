#!/usr/bin/env bash
# Container start benchmarks for HyperBox side by side with crun (prepared bundle), podman and
# docker, in one run, against the peer lab (../shared/bench/peers/setup.sh: registry on
# 127.0.0.1:5000 with hb/tiny and hb/deb; bundles under /var/lib/hb-lab/bundles).
# Measures: warm `run --rm IMG /bin/true` latency (median, p99) with --network none and bridge;
# closed-loop throughput at concurrency 2/4/8 (podman and docker with --network none); the
# first run after a pull of hb/deb (unpack included); hyperboxd + monitor RSS with 100 running
# `sleep` containers. podman runs with the lab's settings; docker through a dockerd already
# answering `docker version`, else one this script starts and stops (see "peers" below).
# Writes a markdown report to $OUT (default bench/results/run-<date>.md) and prints it.
# Knobs: RUNS (latency runs, default 50), TP_SECS (default 10), CONCS ("2 4 8"), N_SLEEP (100),
#        SETTLE_SECS (default 31), SKIP_DOCKER=1, SKIP_PODMAN=1.
# Each throughput case and each first run after a pull starts after a `sync` and SETTLE_SECS
# more: on ext4 without a journal (this VM's root filesystem) the inode allocator skips, one by
# one, every free inode whose deletion time is less than 60 s old (360 s while its inode-table
# block is dirty), so a case pays for the files the cases before it deleted (crun's bundle
# creates nothing there, hb's containers do). The pause trims that carry-over but cannot remove
# it: the new case's own allocations dirty the inode-table blocks again, which stretches the
# window of their freed neighbours to 360 s (with sync + 61 s, the first run of hb/deb after a
# pull still took 4.85 s, against 3.96-5.2 s without).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REG=127.0.0.1:5000
LAB=${HB_LAB:-/var/lib/hb-lab}
OUT=${OUT:-$HERE/results/run-$(date -u +%Y%m%dT%H%M%SZ).md}
RUNS=${RUNS:-50}
TP_SECS=${TP_SECS:-10}
CONCS=${CONCS:-2 4 8}
N_SLEEP=${N_SLEEP:-100}
SETTLE_SECS=${SETTLE_SECS:-31}
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d /var/tmp/hb-runbench.XXXXXX)
[ -n "$WORK" ] && [ -d "$WORK" ] || { echo "mktemp failed" >&2; exit 1; }
RAW=$WORK/raw
mkdir -p "$RAW"

curl -fsS "http://$REG/v2/" >/dev/null || { echo "registry on $REG is not up: run ../shared/bench/peers/setup.sh" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine missing (apt-get install hyperfine)" >&2; exit 1; }

"$ROOT/scripts/build-release.sh" --manifest-path "$ROOT/Cargo.toml" >&2
RELEASE=$("$ROOT/scripts/target-dir.sh")/release
HBD=$RELEASE/hyperboxd
HBBIN=$RELEASE/hb
HB="$HBBIN -H unix://$WORK/hb.sock"
TINY=$REG/hb/tiny:latest
DEB=$REG/hb/deb:latest

printf '[daemon]\ndata_dir = "%s"\nsocket = "%s"\ncgroup_parent = "hb-bench"\n[networking]\nbridge_name = "hbb0"\nbridge_subnet = "10.123.0.0/16"\n' \
  "$WORK/hb-data" "$WORK/hb.sock" > "$WORK/hyperbox.toml"
"$HBD" --config "$WORK/hyperbox.toml" > "$WORK/hyperboxd.log" 2>&1 &
HBPID=$!
PEER_PIDS=()
cleanup() {
  $HB rm -f $($HB ps -a -q 2>/dev/null) >/dev/null 2>&1 || true
  kill "$HBPID" 2>/dev/null || true
  if [ -f "$WORK/monitor.pid" ]; then kill "$(cat "$WORK/monitor.pid")" 2>/dev/null || true; fi
  # dockerd before containerd, each given 10 s.
  for p in "${PEER_PIDS[@]}"; do
    kill "$p" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  sleep 1
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 200); do $HB version >/dev/null 2>&1 && break; sleep 0.05; done

# ------------------------------------------------------------------ peers in the same run
# podman and docker with the peer lab's settings (../shared/bench/peers/bench-peers.sh). podman:
# no systemd here, so cgroupfs and file events, and rlimits this VM's root can grant (it lacks
# CAP_SYS_RESOURCE: podman's default nofile of 1048576 fails every run with exit 126). docker:
# when no dockerd answers, this script starts its own containerd and dockerd on sockets of its
# own (data under $LAB, like the lab's) and stops them at exit; it leaves the host's firewall
# alone ("iptables": false: nothing measured here publishes a port or leaves the host).
PODMAN_OK=0
if [ "${SKIP_PODMAN:-0}" != 1 ] && command -v podman >/dev/null; then
  mkdir -p "$WORK/podman"
  cat > "$WORK/podman/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$WORK/podman/events.log"
runtime = "crun"
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[network]
network_backend = "netavark"
EOF
  cat > "$WORK/podman/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$LAB/bench-podman/storage"
runroot = "/run/hb-bench-podman"
EOF
  export CONTAINERS_CONF=$WORK/podman/containers.conf CONTAINERS_STORAGE_CONF=$WORK/podman/storage.conf
  { podman pull -q "$TINY" || podman pull -q --tls-verify=false "$TINY"; } >/dev/null 2>&1 \
    && podman run --rm --network none "$TINY" /bin/true && PODMAN_OK=1
fi
DOCKER_OK=0
if [ "${SKIP_DOCKER:-0}" != 1 ] && command -v docker >/dev/null; then
  if ! docker version >/dev/null 2>&1 && command -v dockerd >/dev/null && command -v containerd >/dev/null; then
    export DOCKER_HOST=unix:///run/hb-bench-docker.sock
    mkdir -p "$WORK/docker" /run/hb-bench-containerd
    cat > "$WORK/docker/containerd.toml" <<EOF
version = 2
root = "$LAB/bench-containerd"
state = "/run/hb-bench-containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "/run/hb-bench-containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$LAB/bench-containerd/opt"
EOF
    cat > "$WORK/docker/daemon.json" <<EOF
{
  "data-root": "$LAB/bench-docker",
  "exec-root": "/run/hb-bench-docker",
  "pidfile": "/run/hb-bench-docker/dockerd.pid",
  "hosts": ["$DOCKER_HOST"],
  "containerd": "/run/hb-bench-containerd/containerd.sock",
  "insecure-registries": ["$REG"],
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "ip": "127.0.0.1",
  "iptables": false,
  "log-level": "warn"
}
EOF
    containerd --config "$WORK/docker/containerd.toml" > "$WORK/docker/containerd.log" 2>&1 &
    PEER_PIDS+=($!)
    for _ in $(seq 100); do [ -S /run/hb-bench-containerd/containerd.sock ] && break; sleep 0.1; done
    dockerd --config-file "$WORK/docker/daemon.json" > "$WORK/docker/dockerd.log" 2>&1 &
    PEER_PIDS=($! "${PEER_PIDS[@]}")
    for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  docker pull -q "$TINY" >/dev/null 2>&1 && docker run --rm --network none "$TINY" /bin/true && DOCKER_OK=1
fi

rows=()
row() { rows+=("| $* |"); echo "| $* |" >&2; }
hf() { # name hyperfine-args...  -> "median | p99 | mean | min | max | n"
  local name=$1; shift
  if ! hyperfine -N --style none --export-json "$RAW/$name.json" "$@" > "$RAW/$name.txt" 2>&1; then
    echo "hyperfine $name failed: $(tail -3 "$RAW/$name.txt")" >&2
    return 1
  fi
  python3 -c '
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"][0]
t = sorted(x * 1000 for x in r["times"])
p99 = t[min(len(t) - 1, int(round(0.99 * (len(t) - 1))))]
print(f"{statistics.median(t):.2f} | {p99:.2f} | {statistics.mean(t):.2f} | {t[0]:.2f} | {t[-1]:.2f} | {len(t)}")
' "$RAW/$name.json"
}

# A crun bundle of hb/tiny, as the peer lab makes it (umoci unpack of the lab's OCI layout,
# `crun spec` with args /bin/true): crun's floor, no overlay and no image store.
BUNDLE=$WORK/bundle-tiny
if command -v crun >/dev/null && command -v umoci >/dev/null && [ -d "$LAB/oci" ]; then
  umoci unpack --image "$LAB/oci:tiny" "$WORK/umoci" >/dev/null && mkdir -p "$BUNDLE" \
    && mv "$WORK/umoci/rootfs" "$BUNDLE/rootfs" \
    && (cd "$BUNDLE" && crun spec && python3 -c '
import json; c = json.load(open("config.json")); c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]; json.dump(c, open("config.json", "w"))') || BUNDLE=""
else
  BUNDLE=""
fi

# ------------------------------------------------------------------ latency, warm
$HB pull -q "$TINY" >/dev/null
$HB run --rm --network none "$TINY" /bin/true
row "run --rm tiny /bin/true, net none | hb | $(hf hb-none --warmup 5 --runs "$RUNS" "$HB run --rm --network none $TINY /bin/true")"
row "run --rm tiny /bin/true, bridge | hb | $(hf hb-bridge --warmup 5 --runs "$RUNS" "$HB run --rm $TINY /bin/true")"
if [ -n "$BUNDLE" ]; then
  row "run tiny /bin/true (prepared bundle, no overlay) | crun | $(hf crun --warmup 5 --runs "$RUNS" "crun run -b $BUNDLE hbrb$$")"
fi
if [ "$PODMAN_OK" = 1 ]; then
  row "run --rm tiny /bin/true, net none | podman | $(hf podman-none --warmup 3 --runs 20 "podman run --rm --network none $TINY /bin/true")"
  row "run --rm tiny /bin/true, bridge | podman | $(hf podman-bridge --warmup 3 --runs 20 "podman run --rm $TINY /bin/true")"
fi
if [ "$DOCKER_OK" = 1 ]; then
  row "run --rm tiny /bin/true, net none | docker | $(hf docker-none --warmup 3 --runs 20 "docker run --rm --network none $TINY /bin/true")"
  row "run --rm tiny /bin/true, bridge | docker | $(hf docker-bridge --warmup 3 --runs 20 "docker run --rm $TINY /bin/true")"
fi

# ------------------------------------------------------------------ throughput
tp() { # label conc cmd...  (closed loop: conc workers back-to-back for TP_SECS)
  local label=$1 conc=$2; shift 2
  local dir=$WORK/tp-$label-$conc
  mkdir -p "$dir"
  sync
  sleep "$SETTLE_SECS"
  # bash's own clock ($EPOCHREALTIME, microseconds): a `date` per iteration cost the loop a
  # fork and exec per run, about a tenth of the CPU at c=8 (the same for every engine).
  local start=${EPOCHREALTIME/./}
  local end=$(( start + TP_SECS * 1000000 ))
  local pids=()
  for w in $(seq "$conc"); do
    (
      ok=0 bad=0 i=0
      while [ "${EPOCHREALTIME/./}" -lt "$end" ]; do
        i=$((i + 1))
        if "$@" "$w" "$i" >/dev/null 2>>"$dir/err"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
      done
      echo "$ok $bad" > "$dir/w$w"
    ) &
    pids+=($!)
  done
  # Only the workers: a bare `wait` would also wait for the daemon started above.
  wait "${pids[@]}"
  local el=$(( (${EPOCHREALTIME/./} - start) / 1000 ))
  local ok=0 bad=0
  for f in "$dir"/w*; do read -r o b < "$f"; ok=$((ok + o)); bad=$((bad + b)); done
  local ops
  ops=$(python3 -c "print(f'{$ok / ($el / 1000):.1f}')")
  row "throughput tiny /bin/true | $label c=$conc | $ops ops/s | ok=$ok fail=$bad | | | | ${el} ms"
}
hb_none() { $HB run --rm --network none "$TINY" /bin/true; }
hb_bridge() { $HB run --rm "$TINY" /bin/true; }
crun_one() { crun run -b "$BUNDLE" "hbtp$$x$1x$2"; }
podman_none() { podman run --rm --network none "$TINY" /bin/true; }
docker_none() { docker run --rm --network none "$TINY" /bin/true; }
for c in $CONCS; do
  tp hb-none "$c" hb_none
  tp hb-bridge "$c" hb_bridge
  if [ -n "$BUNDLE" ]; then tp crun "$c" crun_one; fi
  if [ "$PODMAN_OK" = 1 ]; then tp podman-none "$c" podman_none; fi
  if [ "$DOCKER_OK" = 1 ]; then tp docker-none "$c" docker_none; fi
done

# ------------------------------------------------------------------ first run after a pull
hb_fresh_deb="sh -c '$HB rmi -f $DEB >/dev/null 2>&1; $HB system prune >/dev/null; sync; sleep $SETTLE_SECS; $HB pull -q $DEB >/dev/null'"
row "first run --rm deb /bin/true after pull (unpack included) | hb | $(hf hb-deb-first --runs 5 --prepare "$hb_fresh_deb" "$HB run --rm --network none $DEB /bin/true")"
row "warm run --rm deb /bin/true | hb | $(hf hb-deb-warm --warmup 3 --runs 30 "$HB run --rm --network none $DEB /bin/true")"

# ------------------------------------------------------------------ memory per running container
rss() { awk '/^Rss:/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
MONPID=$(cat "$WORK/monitor.pid")
d0=$(rss "$HBPID"); m0=$(rss "$MONPID")
for i in $(seq "$N_SLEEP"); do $HB run -d --network none "$TINY" sleep 1000 >/dev/null; done
sleep 1
d1=$(rss "$HBPID"); m1=$(rss "$MONPID")
per=$(python3 -c "print(f'{(($d1 - $d0) + ($m1 - $m0)) / $N_SLEEP:.1f}')")
row "RSS with 0 running | hyperboxd $d0 KiB + monitor $m0 KiB | | | | | | KiB"
row "RSS with $N_SLEEP running sleep | hyperboxd $d1 KiB + monitor $m1 KiB | | | | | | KiB"
row "memory per running container (daemon + monitor growth / N) | hb | $per KiB | | | | |"
$HB rm -f $($HB ps -q) >/dev/null

{
  echo "# Container start benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "Command: \`bench/run-bench.sh\` (RUNS=$RUNS TP_SECS=$TP_SECS CONCS=\"$CONCS\" N_SLEEP=$N_SLEEP SETTLE_SECS=$SETTLE_SECS); $(nproc) CPUs, kernel $(uname -r)."
  echo "Latency: hyperfine -N (no shell), warm (image present, layers unpacked). crun runs a prepared bundle (no overlay, no image store): the floor the issue compares against."
  echo
  echo "| what | engine / case | median ms | p99 ms | mean ms | min ms | max ms | n |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT"
