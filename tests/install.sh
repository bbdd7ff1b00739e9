#!/bin/sh
# Installs sluice into a temporary prefix (with DESTDIR, then moved, so the
# tree must work from wherever it lands) and uses it as a packager's user
# would, with a clean environment: the command runs a pipeline; a C program
# builds with pkg-config and runs; a CMake project finds sluice::sluice;
# stock lua5.4 requires the module; only the public API is exported and the
# SONAME is versioned; the self-contained library, when built, works alone.
#   tests/install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "install test: $*" >&2; exit 1; }

DESTDIR=$tmp/dest cmake --install "$build" --prefix /opt/sluice >/dev/null
mv "$tmp/dest/opt/sluice" "$tmp/pfx"
pfx=$tmp/pfx
clean="env -i PATH=/usr/bin:/bin HOME=$tmp"

# The command, from the moved tree, with nothing set.
out=$($clean "$pfx/bin/sluice" run "$src/scripts/examples/hello.lua" --input '{"name":"Ada"}' \
  --store :memory:) || fail "the installed command failed"
[ "$out" = '"Hello, Ada"' ] || fail "the installed command printed $out"
$clean "$pfx/bin/sluice" version | grep -q "^sluice 0\." || fail "no version"

# A C program, with pkg-config.
cat > "$tmp/host.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <sluice.h>
int main(int argc, char **argv) {
  sl_engine_options o = SL_ENGINE_OPTIONS_INIT;
  sl_engine *e;
  sl_run *r;
  if (sl_engine_new(&e, &o) != 0) { fprintf(stderr, "%s\n", sl_engine_errmsg(NULL)); return 1; }
  if (sl_engine_load(e, argv[1]) != 0) { fprintf(stderr, "%s\n", sl_engine_errmsg(e)); return 1; }
  if (sl_run_start(e, "hello", "{\"name\":\"Ada\"}", &r) != 0) return 1;
  sl_run_wait(r);
  printf("%s %d %s\n", sl_version(), sl_run_status(r), strstr(sl_run_result_json(r), "Hello, Ada") ? "ok" : "wrong");
  sl_run_free(r);
  sl_engine_free(e);
  return 0;
}
C
flags=$(PKG_CONFIG_PATH=$pfx/lib/pkgconfig pkg-config --cflags --libs sluice) || fail "pkg-config"
cc -o "$tmp/host" "$tmp/host.c" $flags -Wl,-rpath,"$pfx/lib" || fail "the C program did not build"
out=$($clean "$tmp/host" "$src/scripts/examples/hello.lua") || fail "the C program failed: $out"
case "$out" in "0."*" 1 ok") ;; *) fail "the C program printed $out" ;; esac

# A CMake project.
mkdir -p "$tmp/proj"
cp "$tmp/host.c" "$tmp/proj/host.c"
cat > "$tmp/proj/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(user C)
find_package(sluice 0.2 REQUIRED)
add_executable(host host.c)
target_link_libraries(host PRIVATE sluice::sluice)
CM
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$pfx" >/dev/null \
  || fail "find_package(sluice) failed"
cmake --build "$tmp/proj/build" >/dev/null || fail "the CMake project did not build"
out=$($clean LD_LIBRARY_PATH="$pfx/lib" "$tmp/proj/build/host" "$src/scripts/examples/hello.lua") \
  || fail "the CMake-built program failed"
case "$out" in *" 1 ok") ;; *) fail "the CMake-built program printed $out" ;; esac

# Stock lua5.4, pointed at the prefix only.
out=$($clean LUA_PATH="$pfx/share/lua/5.4/?.lua;$pfx/share/lua/5.4/?/init.lua;;" \
  LUA_CPATH="$pfx/lib/lua/5.4/?.so;;" lua5.4 -e '
  local sl = require "sluice"
  local p = sl.pipeline{ name = "p", sl.step{ name = "s", run = function(x) return x * 2 end } }
  io.write(sl.encode(sl.run(p, 21).output))') || fail "lua5.4 could not require the installed module"
[ "$out" = 42 ] || fail "the installed module gave $out"

# Only the public API, and a versioned SONAME.
extra=$(nm -D --defined-only "$pfx/lib/libsluice.so" | awk '{print $3}' \
  | grep -v -E '^(sl_[a-z_]+|luaopen_sluice_core)$' || true)
[ -z "$extra" ] || fail "exported beyond the public API: $extra"
for sym in $(nm -D --defined-only "$pfx/lib/libsluice.so" | awk '{print $3}' | grep '^sl_'); do
  grep -q "$sym(" "$pfx/include/sluice.h" || fail "$sym is exported but not in sluice.h"
done
core=$(nm -D --defined-only "$pfx/lib/lua/5.4/sluice/core.so" | awk '{print $3}')
[ "$core" = luaopen_sluice_core ] || fail "core.so exports more than luaopen_sluice_core: $core"
readelf -d "$pfx/lib/libsluice.so" | grep -q 'SONAME.*\[libsluice\.so\.0\]' || fail "the SONAME is not versioned"
[ -f "$pfx/lib/libsluice.a" ] || fail "no static library"

# The self-contained library: the same C program, built with its
# pkg-config file, runs with no Lua of its own; only sl_* is exported.
if [ -e "$pfx/lib/libsluice_embed.so" ]; then
  flags=$(PKG_CONFIG_PATH=$pfx/lib/pkgconfig pkg-config --cflags --libs sluice-embed) \
    || fail "pkg-config sluice-embed"
  cc -o "$tmp/host_embed" "$tmp/host.c" $flags -Wl,-rpath,"$pfx/lib" \
    || fail "the C program did not build with sluice-embed"
  ! ldd "$tmp/host_embed" | grep -q liblua || fail "the self-contained library links a shared Lua"
  out=$($clean "$tmp/host_embed" "$src/scripts/examples/hello.lua") \
    || fail "the C program failed with sluice-embed: $out"
  case "$out" in "0."*" 1 ok") ;; *) fail "the C program printed $out with sluice-embed" ;; esac
  extra=$(nm -D --defined-only "$pfx/lib/libsluice_embed.so" | awk '{print $3}' \
    | grep -v -E '^sl_[a-z_]+$' || true)
  [ -z "$extra" ] || fail "libsluice_embed exports beyond sl_*: $extra"
  readelf -d "$pfx/lib/libsluice_embed.so" | grep -q 'SONAME.*\[libsluice_embed\.so\.0\]' \
    || fail "the self-contained library's SONAME is not versioned"
fi
[ -f "$pfx/share/man/man1/sluice.1" ] || fail "no man page"
echo "install test: passed"
