#!/usr/bin/env bash
# Installs what cprkit's tests need on a Debian 12 CI machine (run as root):
# QEMU 10.0 (qemu-system-x86) from bookworm-backports, for the QEMU adapter's
# tests; Debian 12 itself has QEMU 7.2, which has no cpr-transfer.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found: install Rust and cargo first (https://rustup.rs)" >&2
    exit 2
fi
echo "install-deps: $(cargo --version)"

bash "$(dirname "${BASH_SOURCE[0]}")/install-qemu.sh"
