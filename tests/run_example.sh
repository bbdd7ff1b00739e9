#!/bin/sh
# Runs an example program for ctest and passes only when it exits 0, its
# output holds the expected text, and no sanitizer reported anything:
#   run_example.sh EXPECTED PROGRAM [ARGS...]
expected="$1"
shift
out=$("$@" 2>&1)
code=$?
printf '%s\n' "$out"
if [ "$code" -ne 0 ]; then
  echo "run_example: exit code $code" >&2
  exit 1
fi
if ! printf '%s\n' "$out" | grep -qF -- "$expected"; then
  echo "run_example: the output lacks: $expected" >&2
  exit 1
fi
if printf '%s\n' "$out" | grep -qE 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:'; then
  echo "run_example: a sanitizer reported an error" >&2
  exit 1
fi
