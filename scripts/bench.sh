#!/usr/bin/env bash
# The main job: the side-by-side backend comparison on this machine's disk. Installs what the
# io-uring build needs, builds the command-line tool (package helix-wal-cli in cli/, whose
# default features include io-uring) in release mode, and runs `helix-wal bench` in a temporary
# directory under the current one (the disk under test). Extra arguments go to `helix-wal bench`
# (see `helix-wal bench --help`), e.g. `scripts/bench.sh --seconds 5 --json`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
"$repo/scripts/install-build-deps.sh" >&2
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p helix-wal-cli --bin helix-wal
exec "$repo/target/release/helix-wal" bench "$@"
