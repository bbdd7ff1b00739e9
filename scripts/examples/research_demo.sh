#!/usr/bin/env bash
# Runs scripts/examples/research.lua against the local mock server: starts
# build/mock_server on a free port, runs the pipeline on it, and stops the
# server, whatever happens.
#
#   bash scripts/examples/research_demo.sh ['{"topic":"tides"}' [sluice run options...]]
#
# SLUICE_BUILD names another build directory (default: build).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${SLUICE_BUILD:-build}
for bin in sluice mock_server; do
  if [ ! -x "$build/$bin" ]; then
    echo "research_demo.sh: $build/$bin is missing; build first:" \
      "cmake -S . -B $build && cmake --build $build" >&2
    exit 2
  fi
done

coproc MOCK { exec "$build/mock_server" 0; }
mock_pid=$MOCK_PID
trap 'kill -TERM "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true' EXIT
# The server prints "listening on PORT" once it accepts connections.
read -r line <&"${MOCK[0]}"
port=${line#listening on }
case $port in
  ''|*[!0-9]*) echo "research_demo.sh: the mock server did not start ($line)" >&2; exit 1 ;;
esac

input=${1:-'{"topic":"tides"}'}
shift || true
SLUICE_LLM_BASE_URL="http://127.0.0.1:$port/v1" \
  "$build/sluice" run scripts/examples/research.lua --input "$input" "$@"
