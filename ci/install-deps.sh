#!/usr/bin/env bash
# Installs what cprkit's tests need on a Debian 12 CI machine (run as root).
#
# Today the tests need nothing beyond the Rust toolchain, which the machine
# already has: this script checks that cargo is there and says what it will
# install once the QEMU adapter and the vhost-user profile exist.
set -euo pipefail

# Debian packages the tests need today (installed with apt-get below).
PACKAGES=()
# Debian packages planned for later, not installed yet: QEMU for the qemu
# adapter, qemu-utils for qemu-storage-daemon's vhost-user-blk export.
PLANNED=(qemu-system-x86 qemu-utils)

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found: install Rust and cargo first (https://rustup.rs)" >&2
    exit 2
fi
echo "install-deps: $(cargo --version)"

if ((${#PACKAGES[@]} > 0)); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
else
    echo "install-deps: no Debian package needed today"
fi
echo "install-deps: planned, not installed yet: ${PLANNED[*]}"
