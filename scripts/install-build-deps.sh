#!/usr/bin/env bash
# Installs what `cargo build --features io-uring` needs beyond a C compiler: libclang, which
# bindgen loads to read the C shim's header (and the bundled liburing header).
#
# Idempotent: does nothing when libclang is already present; runs `apt-get update` only when the
# package index does not know the package yet. The portable build (no feature) needs none of this.
set -euo pipefail

libclang_present() {
    # LIBCLANG_PATH, when set, is where bindgen looks first. libclang-cpp is a different library:
    # bindgen needs libclang itself.
    local dir
    for dir in "${LIBCLANG_PATH:-}" /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib; do
        [[ -n "${dir}" ]] || continue
        if compgen -G "${dir}/libclang.so*" >/dev/null \
            || compgen -G "${dir}/libclang-[0-9]*.so*" >/dev/null; then
            return 0
        fi
    done
    ldconfig -p 2>/dev/null | grep -Eq 'libclang(-[0-9.]+)?\.so'
}

if [[ "$(uname -s)" != "Linux" ]]; then
    echo "install-build-deps: not Linux; the io-uring feature is Linux-only, nothing to install"
    exit 0
fi

if libclang_present; then
    echo "install-build-deps: libclang is present; nothing to do"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "install-build-deps: libclang is missing and apt-get is not available;" \
        "install libclang (the clang or llvm package of your distribution) or set LIBCLANG_PATH" >&2
    exit 1
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
    SUDO="sudo"
fi

# Refresh the package index only when it does not know the package (a fresh container has none).
if ! apt-cache show libclang-dev >/dev/null 2>&1; then
    ${SUDO} apt-get update
fi
DEBIAN_FRONTEND=noninteractive ${SUDO} apt-get install -y --no-install-recommends libclang-dev
if ! libclang_present; then
    echo "install-build-deps: libclang-dev is installed but libclang was not found" >&2
    exit 1
fi
echo "install-build-deps: installed libclang-dev"
