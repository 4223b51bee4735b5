#!/usr/bin/env bash
# The same docker CLI against hyperboxd and against dockerd (+ containerd), side by side in one
# run, with the peer lab's registry (../shared/bench/peers/setup.sh: 127.0.0.1:5000/hb/tiny):
#   - `docker run --rm 127.0.0.1:5000/hb/tiny /bin/true`, `docker ps`, `docker images`
#     (hyperfine, warm, median and p99), for each docker client found (28.x, Debian's 20.10);
#   - hyperboxd idle RSS with the metrics history on, fresh and after the runs (dockerd +
#     containerd beside it);
#   - API throughput of GET /containers/json and POST /containers/create over TCP with wrk.
# Writes a markdown report to $OUT (default bench/results/docker-cli-<date>.md) and prints it.
# Knobs: RUNS (hyperfine runs, default 30), WRK_SECS (default 10), WRK_CONNS (default 16),
#        SKIP_DOCKERD=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REG=127.0.0.1:5000
IMG=$REG/hb/tiny:latest
OUT=${OUT:-$HERE/results/docker-cli-$(date -u +%Y%m%dT%H%M%SZ).md}
RUNS=${RUNS:-30}
WRK_SECS=${WRK_SECS:-10}
WRK_CONNS=${WRK_CONNS:-16}
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d /var/tmp/hb-dockercli.XXXXXX)
[ -n "$WORK" ] && [ -d "$WORK" ] || { echo "mktemp failed" >&2; exit 1; }
RAW=$WORK/raw
mkdir -p "$RAW"

curl -fsS "http://$REG/v2/" >/dev/null || { echo "registry on $REG is not up: run ../shared/bench/peers/setup.sh" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine missing (apt-get install hyperfine)" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >&2
fi

"$ROOT/scripts/build-release.sh" --manifest-path "$ROOT/Cargo.toml" >&2
TARGET=$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
HBD=$TARGET/release/hyperboxd
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port)
METRICS_PORT=$(free_port)
HSOCK=$WORK/hb.sock
DSOCK=$WORK/docker.sock

printf '[daemon]\ndata_dir = "%s"\nsocket = "%s"\nlisten_addr = "127.0.0.1:%s"\ninsecure_registries = ["%s"]\ncgroup_parent = "hb-dcbench"\n[networking]\nbridge_name = "hbdc0"\nbridge_subnet = "10.124.0.0/16"\n[monitoring]\nenabled = true\nmetrics_addr = "127.0.0.1:%s"\n' \
  "$WORK/hb-data" "$HSOCK" "$API_PORT" "$REG" "$METRICS_PORT" > "$WORK/hyperbox.toml"
"$HBD" --config "$WORK/hyperbox.toml" > "$WORK/hyperboxd.log" 2>&1 &
HBPID=$!
DPID=""; CPID=""
cleanup() {
  for c in /usr/local/bin/docker; do
    [ -x "$c" ] && $c -H "unix://$HSOCK" rm -f $($c -H "unix://$HSOCK" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  done
  kill "$HBPID" 2>/dev/null || true
  if [ -f "$WORK/monitor.pid" ]; then kill "$(cat "$WORK/monitor.pid")" 2>/dev/null || true; fi
  [ -n "$DPID" ] && kill "$DPID" 2>/dev/null || true
  [ -n "$CPID" ] && kill "$CPID" 2>/dev/null || true
  sleep 2
  umount -R "$WORK/docker" 2>/dev/null || true
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 200); do [ -S "$HSOCK" ] && curl -fsS --unix-socket "$HSOCK" http://x/_ping >/dev/null 2>&1 && break; sleep 0.05; done
sleep 2
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
HB_RSS_FRESH=$(rss "$HBPID")

# dockerd with its own containerd, data and sockets under $WORK (nothing shared with a system
# docker), as ../shared/bench/peers/bench-peers.sh runs it.
DOCKER_OK=0
if [ "${SKIP_DOCKERD:-0}" != 1 ] && command -v dockerd >/dev/null && command -v containerd >/dev/null; then
  mkdir -p "$WORK/docker/root" "$WORK/docker/exec" "$WORK/containerd"
  cat > "$WORK/containerd.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/containerd/containerd.sock"
EOF
  containerd --config "$WORK/containerd.toml" > "$WORK/containerd.log" 2>&1 &
  CPID=$!
  for _ in $(seq 100); do [ -S "$WORK/containerd/containerd.sock" ] && break; sleep 0.1; done
  dockerd --data-root "$WORK/docker/root" --exec-root "$WORK/docker/exec" --pidfile "$WORK/docker/dockerd.pid" \
    -H "unix://$DSOCK" --containerd "$WORK/containerd/containerd.sock" --insecure-registry "$REG" \
    --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs --ip 127.0.0.1 \
    --log-level warn > "$WORK/dockerd.log" 2>&1 &
  DPID=$!
  for _ in $(seq 300); do curl -fsS --unix-socket "$DSOCK" http://x/_ping >/dev/null 2>&1 && { DOCKER_OK=1; break; }; sleep 0.1; done
  [ "$DOCKER_OK" = 1 ] || echo "dockerd did not start: $(tail -3 "$WORK/dockerd.log")" >&2
fi

rows=()
row() { rows+=("| $* |"); echo "| $* |" >&2; }
hf() { # name hyperfine-args...  -> "median | p99 | n"
  local name=$1; shift
  if ! hyperfine -N --style none --export-json "$RAW/$name.json" "$@" > "$RAW/$name.txt" 2>&1; then
    echo "hyperfine $name failed: $(tail -3 "$RAW/$name.txt")" >&2
    echo "failed | | "
    return 0
  fi
  python3 -c '
import json, statistics, sys
r = json.load(open(sys.argv[1]))["results"][0]
t = sorted(x * 1000 for x in r["times"])
p99 = t[min(len(t) - 1, int(round(0.99 * (len(t) - 1))))]
print(f"{statistics.median(t):.1f} | {p99:.1f} | {len(t)}")
' "$RAW/$name.json"
}
median() { python3 -c 'import json,statistics,sys; print(statistics.median(json.load(open(sys.argv[1]))["results"][0]["times"])*1000)' "$RAW/$1.json" 2>/dev/null || echo 0; }

CLIS=()
for c in /usr/local/bin/docker /usr/bin/docker; do [ -x "$c" ] && CLIS+=("$c"); done
[ ${#CLIS[@]} -gt 0 ] || { echo "no docker CLI found" >&2; exit 1; }
ratios=()
for cli in "${CLIS[@]}"; do
  ver=$($cli --version | awk '{print $3}' | tr -d ,)
  HB="$cli -H unix://$HSOCK"
  $HB pull -q "$IMG" >/dev/null
  $HB run --rm "$IMG" /bin/true
  for op in run ps images; do
    case $op in
      run) args="run --rm $IMG /bin/true" ;;
      ps) args="ps" ;;
      images) args="images" ;;
    esac
    row "docker $ver: \`docker $args\` | hyperboxd | $(hf "hb-$op-$ver" --warmup 3 --runs "$RUNS" "$HB $args")"
    if [ "$DOCKER_OK" = 1 ]; then
      D="$cli -H unix://$DSOCK"
      $D pull -q "$IMG" >/dev/null 2>&1 || true
      row "docker $ver: \`docker $args\` | dockerd | $(hf "d-$op-$ver" --warmup 3 --runs "$RUNS" "$D $args")"
      ratios+=("docker $ver \`$op\`: dockerd/hyperboxd median = $(python3 -c "print(f'{$(median "d-$op-$ver")/$(median "hb-$op-$ver"):.1f}x')")")
    fi
  done
done

# ------------------------------------------------------------------ memory
sleep 3
HB_RSS_AFTER=$(rss "$HBPID")
DOCKERD_RSS=""
if [ "$DOCKER_OK" = 1 ]; then DOCKERD_RSS="$(( ($(rss "$DPID") + $(rss "$CPID")) / 1024 ))"; fi

# ------------------------------------------------------------------ API throughput (wrk)
cat > "$WORK/create.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"Image": "$IMG", "Cmd": ["true"]}'
EOF
tp() { # name url [script]
  local out
  if [ -n "${3:-}" ]; then
    out=$(wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency -s "$3" "$2" 2>&1)
  else
    out=$(wrk -t2 -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency "$2" 2>&1)
  fi
  echo "$out" > "$RAW/wrk-$1.txt"
  local rps p50 p99 errs
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "$rps | $p50 | $p99 | ${errs:-0}"
}
C=/usr/local/bin/docker; [ -x "$C" ] || C=${CLIS[0]}
for i in $(seq 20); do $C -H "unix://$HSOCK" create "$IMG" true >/dev/null; done
tprows=()
tprows+=("| GET /containers/json (20 containers) | $(tp list "http://127.0.0.1:$API_PORT/v1.43/containers/json?all=1") |")
tprows+=("| POST /containers/create | $(tp create "http://127.0.0.1:$API_PORT/v1.43/containers/create" "$WORK/create.lua") |")
CREATED=$($C -H "unix://$HSOCK" ps -aq | wc -l)
HB_RSS_LOADED=$(rss "$HBPID")

{
  echo "# docker CLI: hyperboxd vs dockerd ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Command: \`bench/docker-cli-bench.sh\` (RUNS=$RUNS WRK_SECS=$WRK_SECS WRK_CONNS=$WRK_CONNS); host: $(nproc) cores, $(uname -r)."
  echo "Both daemons on their own unix sockets, same CLI binary, image $IMG pulled first (warm)."
  echo "Both use their default bridge network (dockerd: docker0 with iptables; hyperboxd: its own bridge)."
  echo
  echo "| command | daemon | median ms | p99 ms | runs |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  for r in "${ratios[@]}"; do echo "- $r"; done
  echo
  echo "## Memory (VmRSS)"
  echo
  echo "- hyperboxd, metrics history on, fresh after start: $HB_RSS_FRESH KiB"
  echo "- hyperboxd after the CLI runs above, idle 3 s: $HB_RSS_AFTER KiB"
  echo "- hyperboxd after the wrk runs ($CREATED containers exist): $HB_RSS_LOADED KiB"
  [ -n "$DOCKERD_RSS" ] && echo "- dockerd + containerd after the same runs: $DOCKERD_RSS MiB"
  echo
  echo "## API throughput (wrk -t2 -c$WRK_CONNS -d${WRK_SECS}s, TCP 127.0.0.1)"
  echo
  echo "| request | req/s | p50 | p99 | non-2xx |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${tprows[@]}"
} > "$OUT"
cat "$OUT"
