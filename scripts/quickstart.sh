#!/usr/bin/env bash
# HyperBox quick start, offline: builds hb and hyperboxd, starts the daemon with its data under
# ~/.hyperbox, builds a tiny image from this machine's own binaries (no registry, no internet),
# loads it, shows it with `hb images` and `hb system df`, and runs containers from it (as root:
# containers need namespaces and cgroups). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
HB_HOME=${HB_HOME:-$HOME/.hyperbox}
SOCK=$HB_HOME/hyperbox.sock
mkdir -p "$HB_HOME"

echo "==> building (release)"
scripts/build-release.sh
BIN=$(scripts/target-dir.sh)/release
export HYPERBOX_HOST=unix://$SOCK

if ! "$BIN/hb" version >/dev/null 2>&1; then
  echo "==> starting hyperboxd (data in $HB_HOME/data, log in $HB_HOME/hyperboxd.log)"
  HYPERBOX_DAEMON_DATA_DIR=$HB_HOME/data HYPERBOX_DAEMON_SOCKET=$SOCK \
    nohup "$BIN/hyperboxd" > "$HB_HOME/hyperboxd.log" 2>&1 &
  echo $! > "$HB_HOME/hyperboxd.pid"
  for _ in $(seq 100); do "$BIN/hb" version >/dev/null 2>&1 && break; sleep 0.05; done
fi

echo "==> building a tiny image from host binaries"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
root=$work/rootfs; mkdir -p "$root"/{bin,etc,tmp,proc,dev}
copy_with_libs() {
  local f=$1
  [ -e "$f" ] || return 0
  mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
  # A static binary (busybox-static) has no libraries: ldd fails and grep finds nothing.
  { ldd "$f" 2>/dev/null || true; } | { grep -o '/[^ )]*' || true; } | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"; cp -Ln "$lib" "$root$lib" 2>/dev/null || true
  done
}
if [ -x /bin/busybox ]; then
  copy_with_libs /bin/busybox
  for c in sh ls cat echo true hostname id; do ln -sf busybox "$root/bin/$c"; done
else
  for c in sh ls cat echo true hostname id; do copy_with_libs "$(command -v $c)"; done
fi
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
(cd "$root" && tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -cf "$work/layer.tar" .)
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
arch=$(uname -m); case $arch in x86_64) arch=amd64;; aarch64) arch=arm64;; esac
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
  "$arch" "$diff_id" > "$work/config.json"
printf '[{"Config":"config.json","RepoTags":["hyperbox/tiny:latest"],"Layers":["layer.tar"]}]' > "$work/manifest.json"
(cd "$work" && tar -cf image.tar manifest.json config.json layer.tar)

echo "==> hb load"
"$BIN/hb" load -i "$work/image.tar"
echo "==> hb images"
"$BIN/hb" images
echo "==> hb system df"
"$BIN/hb" system df
if [ "$(id -u)" = 0 ]; then
  echo "==> hb run --rm hyperbox/tiny (isolated: own pid, mount, uts, ipc, net namespaces)"
  "$BIN/hb" run --rm --network none hyperbox/tiny sh -c 'echo "hello from $(hostname), pid $$, as $(id -u)"'
  echo "==> timing 20 warm starts of /bin/true"
  start=$(date +%s%N)
  for _ in $(seq 20); do "$BIN/hb" run --rm --network none hyperbox/tiny true; done
  echo "    $(( ($(date +%s%N) - start) / 20000000 )) ms per hb run --rm (client, daemon, container, cleanup)"
else
  echo "(not root: skipping hb run; containers need namespaces and cgroups)"
fi
echo
echo "hyperboxd keeps running (pid $(cat "$HB_HOME/hyperboxd.pid" 2>/dev/null || echo '?')); use it with:"
echo "  export HYPERBOX_HOST=$HYPERBOX_HOST; $BIN/hb images"
echo "stop it with: kill \$(cat $HB_HOME/hyperboxd.pid) \$(cat $HB_HOME/monitor.pid 2>/dev/null)"
