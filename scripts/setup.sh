#!/usr/bin/env bash
# Installs what sluice needs to build and test (Debian packages), then
# configures and builds it in ./build. Safe to run again: it installs only
# what is missing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  gcc make cmake pkg-config
  lua5.4 liblua5.4-dev lua-cjson lua-lpeg lua-busted luarocks
  lua-cjson-dev lua-lpeg-dev liblua5.3-0 luajit neovim lua-luv
  libuv1-dev libcmocka-dev libsqlite3-dev libcurl4-openssl-dev libxxhash-dev
  libpq-dev postgresql libmicrohttpd-dev curl
  chromium
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node.js serves tests only (tests/otlp, tests/ui); a machine that has node and npm
# from elsewhere keeps them.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The OTLP check decodes traces with the official protobuf definitions,
# from npm (tests/otlp/package-lock.json).
# The ui's browser tests drive Debian's chromium with playwright-core
# (tests/ui/package-lock.json); no browser is downloaded.
for dir in tests/otlp tests/ui; do
  if [ ! -d $dir/node_modules ] || [ $dir/package-lock.json -nt $dir/node_modules ]; then
    echo "setup: installing the test tools in $dir (npm ci)" >&2
    (cd $dir && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch $dir/node_modules
  fi
done

cmake -S . -B build -DCMAKE_BUILD_TYPE="${SLUICE_BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
