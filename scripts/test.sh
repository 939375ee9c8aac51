#!/usr/bin/env bash
# Runs every check and every test, io_uring included, on a fresh Debian machine that has only
# the Rust toolchain: installs what the build needs first (libclang for bindgen).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "build dependencies"
scripts/install-build-deps.sh

# The power-loss tests (root) make an ext4 image: mkfs.ext4 comes with e2fsprogs.
if [ "$(id -u)" = 0 ] && ! command -v mkfs.ext4 >/dev/null 2>&1 && command -v apt-get >/dev/null; then
    step "e2fsprogs for the power-loss tests"
    apt-cache show e2fsprogs >/dev/null 2>&1 || apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends e2fsprogs
fi

step "rustfmt and clippy components"
if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy, portable build"
cargo clippy --all-targets -- -D warnings

step "clippy, all features"
cargo clippy --all-targets --all-features -- -D warnings

step "build and portable test without the io-uring feature (no C toolchain involved)"
cargo build --no-default-features --lib
cargo test --no-default-features --test portable

# io_uring tests fail instead of skipping when the kernel refuses io_uring; set
# HELIX_REQUIRE_IO_URING=0 to let them skip (loudly) on hosts that block it.
export HELIX_REQUIRE_IO_URING="${HELIX_REQUIRE_IO_URING:-1}"
# Tests that mount a small filesystem (disk full, power loss on a loop-mounted ext4 image) need
# root: required when running as root (as CI does), skipped loudly otherwise.
if [ "$(id -u)" = 0 ]; then root_default=1; else root_default=0; fi
export HELIX_REQUIRE_ROOT_TESTS="${HELIX_REQUIRE_ROOT_TESTS:-$root_default}"

# The features that ship: all but `sabotage`, whose deliberate bugs exist for the meta-tests
# only (`baselines` comes with `cli`).
shipped_features="io-uring,cli,metrics"
# `test-support` is test-only, not shipped (it exposes the public storage conformance suite and
# compiles the io_uring backend's test hooks): it is added to the test run so that
# tests/storage_conformance.rs (required-features) and the hook tests of tests/io_uring.rs run.
test_features="$shipped_features,test-support"

step "tests, shipped features and test-support ($test_features)"
cargo test --features "$test_features"

# Meta-tests (each checker catches the bug it exists for) live in `meta` modules behind the
# `sabotage` feature. Only the test targets that hold them are built again, bugs compiled in:
# every file or directory of tests/ that names the feature.
mapfile -t meta_targets < <(grep -rl 'feature = "sabotage"' tests |
    sed -E 's|^tests/([^/.]+).*|--test=\1|' | sort -u)
if [ "${#meta_targets[@]}" = 0 ]; then
    echo "no test target names the sabotage feature: where did the meta-tests go?" >&2
    exit 1
fi
step "meta-tests, shipped features and sabotage (${meta_targets[*]})"
cargo test --features "$shipped_features,sabotage" "${meta_targets[@]}" -- meta::
