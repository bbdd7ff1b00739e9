#!/usr/bin/env bash
# Sets up and builds sluice, then runs the example pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec ./build/sluice run scripts/examples/hello.lua --input '{"name":"Ada"}'
