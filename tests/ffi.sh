#!/bin/sh
# require "sluice.ffi" in the hosts it is for: a LuaJIT script
# (tests/ffi/host.lua: host kinds completed during the call and later from
# the host's loop, a failing one, a resumed run, misuse), the binding's
# refusal of the library that uses the system's Lua, and the Neovim
# example (scripts/examples/nvim), headless, on Neovim's own loop.
#   tests/ffi.sh LIBSLUICE_EMBED LIBSLUICE LUAJIT NVIM SOURCE_DIR [PRELOAD]
# PRELOAD (the sanitizer runtime, for the asan flavour) is preloaded into
# LuaJIT and Neovim, which are not built with it.
set -eu
embed=$1
system=$2
luajit=$3
nvim=$4
src=$5
preload=${6:-}
fail() { echo "ffi test: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export LUA_PATH="$src/lua/?.lua;;"
export SLUICE_EMBED_LIB="$embed"
# Neither LuaJIT nor Neovim is built with the sanitizers: leaks are checked
# in the library's own tests, not in these hosts.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=0"

out=$(LD_PRELOAD=$preload "$luajit" "$src/tests/ffi/host.lua" "$tmp" 2>&1) || fail "the LuaJIT host failed: $out"
[ "$out" = ok ] || fail "the LuaJIT host: $out"

out=$(LD_PRELOAD=$preload "$luajit" -e "
  local ok, err = pcall(function() return require('sluice.ffi').engine{ lib = '$system' } end)
  print(ok, err)" 2>&1) || fail "loading the wrong library crashed: $out"
case "$out" in
  *"false"*"is the sluice library that uses the system's Lua 5.4; in a LuaJIT or Lua 5.1 process load libsluice_embed.so"*) ;;
  *) fail "the system-Lua library was not refused clearly: $out" ;;
esac

SLUICE_NVIM_OUT="$tmp/nvim.json" LD_PRELOAD=$preload timeout 60 "$nvim" --headless -u NONE -i NONE \
  -c "luafile $src/scripts/examples/nvim/wordcount.lua" >/dev/null 2>"$tmp/nvim.err" \
  || fail "Neovim failed: $(cat "$tmp/nvim.err")"
out=$(cat "$tmp/nvim.json")
case "$out" in *'"status": "completed"'*) ;; *) fail "Neovim: the run did not complete: $out" ;; esac
case "$out" in *'"words": 8'*) ;; *) fail "Neovim: wrong output: $out" ;; esac
case "$out" in *'"lua": "Lua 5.4"'*) ;; *) fail "Neovim: the pipeline ran on another Lua: $out" ;; esac
# The run sleeps 0.2 s: a host that waits on the descriptor turns a few
# times, one that spins thousands.
turns=$(echo "$out" | sed -n 's/.*"turns": *\([0-9]*\).*/\1/p')
[ -n "$turns" ] && [ "$turns" -lt 50 ] || fail "Neovim turned the engine $turns times for one short run"
echo "ffi test: passed"
