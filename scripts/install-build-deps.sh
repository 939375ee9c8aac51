#!/usr/bin/env bash
# Installs what building with the io-uring feature needs on Debian/Ubuntu: libclang (for
# bindgen). Idempotent: does nothing when libclang is already there.
set -euo pipefail

have_libclang() {
    ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null && return 0
    compgen -G '/usr/lib/x86_64-linux-gnu/libclang*.so*' >/dev/null && return 0
    return 1
}

if [ "$(uname -s)" != "Linux" ]; then
    echo "not Linux: the io-uring feature is Linux-only, nothing to install"
    exit 0
fi
if have_libclang; then
    echo "libclang: present"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "libclang is missing and apt-get is not available: install libclang (LLVM) for bindgen" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "libclang: installing libclang-dev"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
have_libclang || { echo "libclang-dev installed but libclang not found" >&2; exit 1; }
echo "libclang: installed"
