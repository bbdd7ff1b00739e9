#!/usr/bin/env bash
# Runs an example pipeline that calls a model (scripts/examples/NAME.lua)
# against the local mock server: starts build/mock_server on a free port,
# runs the pipeline on it, and stops the server, whatever happens.
#
#   bash scripts/examples/demo.sh research ['{"topic":"tides"}' [sluice run options...]]
#   bash scripts/examples/demo.sh staged ['{"question":"How do tides work?"}' [...]]
#
# SLUICE_BUILD names another build directory (default: build);
# SLUICE_MOCK_SERVER another mock server (default: $SLUICE_BUILD/mock_server).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${SLUICE_BUILD:-build}
name=${1:-}
case $name in
  research) input='{"topic":"tides"}' ;;
  staged) input='{"question":"How do tides work?"}' ;;
  *) echo "demo.sh: name an example: research or staged" >&2; exit 2 ;;
esac
shift
mock=${SLUICE_MOCK_SERVER:-$build/mock_server}
for bin in "$build/sluice" "$mock"; do
  if [ ! -x "$bin" ]; then
    echo "demo.sh: $bin is missing; build first:" \
      "cmake -S . -B $build && cmake --build $build" >&2
    exit 2
  fi
done

coproc MOCK { exec "$mock" 0; }
mock_pid=$MOCK_PID
trap 'kill -TERM "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true' EXIT
# The server prints "listening on PORT" once it accepts connections.
read -r line <&"${MOCK[0]}"
port=${line#listening on }
case $port in
  ''|*[!0-9]*) echo "demo.sh: the mock server did not start ($line)" >&2; exit 1 ;;
esac

input=${1:-$input}
shift || true
SLUICE_LLM_BASE_URL="http://127.0.0.1:$port/v1" SLUICE_LLM_MOCK=1 \
  "$build/sluice" run "scripts/examples/$name.lua" --input "$input" "$@"
