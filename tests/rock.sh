#!/bin/sh
# Builds and installs the rock with `luarocks make` into a temporary tree,
# from a copy of the source (luarocks builds inside the source directory),
# then requires it from stock lua5.4 with only `luarocks path` set.
#   tests/rock.sh SOURCE_DIR
set -eu
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "rock test: $*" >&2; exit 1; }
mkdir "$tmp/src"
tar -C "$src" --exclude=./build --exclude='./build-*' --exclude=./build.luarocks \
  --exclude=./.sluice --exclude=./node_modules -cf - . | tar -C "$tmp/src" -xf -
# lpeg comes from Debian (lua-lpeg), which luarocks does not know of.
(cd "$tmp/src" && luarocks --lua-version 5.4 make --tree "$tmp/tree" --deps-mode=none \
  sluice-*.rockspec) > "$tmp/log" 2>&1 || { cat "$tmp/log" >&2; fail "luarocks make failed"; }
paths=$(luarocks --lua-version 5.4 path --tree "$tmp/tree")
out=$(env -i PATH=/usr/bin:/bin HOME="$tmp" sh -c "$paths; cd /; lua5.4 -e '
  local sl = require \"sluice\"
  assert(package.searchpath(\"sluice\", package.path):find(\"$tmp/tree\", 1, true),
    \"the module did not come from the rock tree\")
  local p = sl.pipeline{ name = \"p\", sl.step{ name = \"s\", run = function(x) return x + 1 end } }
  io.write(sl.encode(sl.run(p, 41).output))'") || fail "lua5.4 could not require the rock: $out"
[ "$out" = 42 ] || fail "the rock gave $out"
echo "rock test: passed"
