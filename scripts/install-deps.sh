#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine that has only the Rust toolchain.
# Idempotent: each step runs only when its tool is missing.
set -euo pipefail
echo "install-deps: nothing beyond the Rust toolchain is needed yet"
