#!/usr/bin/env bash
# Runs the io_uring tests (the backend's own, and the conformance, log and BufferedWal suites on
# it) under AddressSanitizer, with the C shim instrumented too. Needs a nightly toolchain
# (`rustup toolchain install nightly --component rust-src`); not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps.sh
target="$(rustc -vV | sed -n 's/^host: //p')"
export HELIX_SANITIZE=address
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export HELIX_REQUIRE_IO_URING=1
export CARGO_TARGET_DIR=target/sanitize
# `test-support`: the conformance suite, and the backend's test hooks (short writes).
run() { cargo +nightly test --target "$target" --features io-uring,test-support "$@"; }
run --test io_uring
run --test storage_conformance --test wal --test buffered_wal -- io_uring
