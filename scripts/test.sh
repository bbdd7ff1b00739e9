#!/usr/bin/env bash
# Sets up and builds sluice, then runs the whole test suite (plain and
# sanitized builds) through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd build
exec ctest --output-on-failure -j"$(nproc)" "$@"
