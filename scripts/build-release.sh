#!/usr/bin/env bash
# The release binaries as HyperBox ships them: target/release/hyperboxd and target/release/hb.
#
# hb is linked static-pie against glibc: `-C target-feature=+crt-static` on hb's own crate only
# (`cargo rustc`), because in RUSTFLAGS it would also reach the proc-macro crates, which cannot
# be built that way. hb runs once per command, and a dynamically linked hb spent 0.4-0.5 ms of
# the ~2.7 ms of CPU of `hb run --rm` in the dynamic loader (BENCHMARKS.md). Host names in
# `-H tcp://NAME:PORT` still resolve through the host's NSS modules, loaded at run time.
#
# Extra arguments go to both cargo calls (e.g. --manifest-path PATH).
set -euo pipefail
cargo build --release --locked "$@" -p hyperboxd
cargo rustc --release --locked "$@" -p hb-cli --bin hb -- -C target-feature=+crt-static
