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

# The workspace: the library `helix-wal` (root) and the command-line tool `helix-wal-cli` (cli/).
# Each is linted on its own, never `--workspace --all-features`: that would unify the library's
# test-only features (`sabotage`: deliberate bugs) into the tool's build.
step "clippy, library, portable build"
cargo clippy -p helix-wal --all-targets -- -D warnings

step "clippy, library, all features (sabotage and test-support included: test-only)"
cargo clippy -p helix-wal --all-targets --all-features -- -D warnings

step "clippy, command-line tool (default features: io-uring; and none)"
cargo clippy -p helix-wal-cli --all-targets -- -D warnings
cargo clippy -p helix-wal-cli --all-targets --no-default-features -- -D warnings

# Without the io-uring feature the library needs no C toolchain: nothing in its build graph
# compiles C (checked here, as no C compiler is taken away), and it builds. Its portable test
# then runs; that one does compile C, but only for a dev-dependency (criterion's alloca).
step "library without the io-uring feature: no C in its build graph, build, portable test"
if cargo tree -p helix-wal --no-default-features -e normal,build --prefix none |
    grep -E '^(cc|cmake|bindgen) '; then
    echo "the library's portable build graph compiles C (above): it must not" >&2
    exit 1
fi
cargo build -p helix-wal --no-default-features --lib
cargo test -p helix-wal --no-default-features --test portable

step "command-line tool without the io-uring feature (verify, inspect, dump; no C)"
cargo build -p helix-wal-cli --no-default-features

# io_uring tests fail instead of skipping when the kernel refuses io_uring; set
# HELIX_REQUIRE_IO_URING=0 to let them skip (loudly) on hosts that block it.
export HELIX_REQUIRE_IO_URING="${HELIX_REQUIRE_IO_URING:-1}"
# Tests that mount a small filesystem (disk full, power loss on a loop-mounted ext4 image) need
# root: required when running as root (as CI does), skipped loudly otherwise.
if [ "$(id -u)" = 0 ]; then root_default=1; else root_default=0; fi
export HELIX_REQUIRE_ROOT_TESTS="${HELIX_REQUIRE_ROOT_TESTS:-$root_default}"

# The library's features that ship: all but `sabotage`, whose deliberate bugs exist for the
# meta-tests only (and `test-support`, below).
shipped_features="io-uring,metrics"
# `test-support` is test-only, not shipped (it exposes the public storage conformance suite and
# compiles the io_uring backend's test hooks): it is added to the test run so that
# tests/storage_conformance.rs (required-features) and the hook tests of tests/io_uring.rs run.
test_features="$shipped_features,test-support"

step "library tests, shipped features and test-support ($test_features)"
cargo test -p helix-wal --features "$test_features"

# The tool's own tests: its binary end to end (tests/cli.rs, the bench smoke run included), and
# the library's conformance suite on the naive baseline it holds.
step "command-line tool tests (default features: io-uring)"
cargo test -p helix-wal-cli

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
cargo test -p helix-wal --features "$shipped_features,sabotage" "${meta_targets[@]}" -- meta::
