#!/usr/bin/env bash
# Installs QEMU 10.0 or newer on Debian 12 (bookworm) from bookworm-backports,
# with qemu-utils (qemu-storage-daemon, the third-party vhost-user-blk backend
# of the vhost-user cases), unless both are already there. Run as root.
set -euo pipefail

have_qemu() {
    local v
    v=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')
    [ -n "$v" ] && [ "$v" -ge 10 ]
}

if have_qemu && command -v qemu-storage-daemon >/dev/null; then
    echo "install-qemu: $(qemu-system-x86_64 --version | head -n 1), qemu-storage-daemon"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list
apt-get update -q
apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils
have_qemu || { echo "install-qemu: QEMU 10.0 or newer still not found" >&2; exit 2; }
command -v qemu-storage-daemon >/dev/null || { echo "install-qemu: qemu-storage-daemon still not found" >&2; exit 2; }
echo "install-qemu: $(qemu-system-x86_64 --version | head -n 1)"
