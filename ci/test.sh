#!/usr/bin/env bash
# Runs the README's test command from the repository root: unit tests, then the
# conformance runner (every case x refvmm and its mutants x fault point against
# the reviewed snapshots under snapshots/), then its leak check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "+ cargo test"
cargo test
