#!/bin/sh
# The self-contained library (libsluice_embed) in processes that already
# hold another Lua: it exports the public C API only (every sl_* it exports
# is in sluice.h) and needs no shared Lua; a C host that opened Lua 5.3
# with its symbols global runs a pipeline through it and still has a
# working 5.3; a LuaJIT host runs one through the FFI. Both hosts wait on
# the engine's descriptor between turns.
#   tests/embed.sh LIBSLUICE_EMBED LUA53_HOST LUAJIT SOURCE_DIR [PRELOAD]
# PRELOAD (the sanitizer runtime, for the asan flavour) is preloaded into
# LuaJIT, which is not built with it.
set -eu
lib=$1
host53=$2
luajit=$3
src=$4
preload=${5:-}
fail() { echo "embed test: $*" >&2; exit 1; }

syms=$(nm -D --defined-only "$lib" | awk '{print $3}')
[ -n "$syms" ] || fail "$lib exports nothing"
extra=$(echo "$syms" | grep -v -E '^sl_[a-z_]+$' || true)
[ -z "$extra" ] || fail "exported beyond the public API: $extra"
for sym in $syms; do
  grep -q "$sym(" "$src/engine/include/sluice.h" || fail "$sym is exported but not in sluice.h"
done
for sym in sl_engine_new sl_engine_fd sl_engine_timeout sl_engine_poll; do
  echo "$syms" | grep -qx "$sym" || fail "$sym is not exported"
done
! ldd "$lib" | grep -q 'liblua' || fail "it links a shared Lua: $(ldd "$lib" | grep liblua)"

# What the pipeline returns, in both hosts.
check() {
  case "$2" in
    *'"status":"completed"'*) ;; *) fail "$1: the run did not complete: $2" ;;
  esac
  case "$2" in *'"greeting":"Hello, Ada"'*) ;; *) fail "$1: wrong output: $2" ;; esac
  case "$2" in *'"lua":"Lua 5.4"'*) ;; *) fail "$1: the pipeline ran on another Lua: $2" ;; esac
  case "$2" in
    *"no C module 'lfs': this sluice library keeps its Lua 5.4 to itself"*) ;;
    *) fail "$1: a C module from disk was not refused: $2" ;;
  esac
}

out=$("$host53" "$lib" "$src/tests/embed/nap.lua") || fail "the Lua 5.3 host failed: $out"
check "the Lua 5.3 host" "$out"
case "$out" in *"5.3 ok"*) ;; *) fail "Lua 5.3 did not work after the run: $out" ;; esac

out=$(LD_PRELOAD=$preload "$luajit" "$src/tests/embed/luajit_host.lua" "$lib" \
  "$src/tests/embed/nap.lua") || fail "the LuaJIT host failed: $out"
check "the LuaJIT host" "$out"
echo "embed test: passed"
