#!/usr/bin/env bash
# Prints where cargo builds this workspace: target/ unless CARGO_TARGET_DIR or cargo's config
# say otherwise. The scripts that run the built binaries look for them there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
