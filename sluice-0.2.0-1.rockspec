rockspec_format = "3.0"
package = "sluice"
version = "0.2.0-1"
source = {
  url = "git+https://github.com/sluice-engine/sluice",
  tag = "v0.2.0",
}
description = {
  summary = "An orchestration engine for multi-step work, scripted in Lua 5.4",
  detailed = [[
Pipelines of steps (model calls, tools, validators, fallbacks) written in
Lua, run by a small C core: budgets, caching, concurrency on libuv, and
durable runs that resume after a crash or a pause for a person.]],
  license = "MIT",
  homepage = "https://github.com/sluice-engine/sluice",
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "lpeg >= 1.0",
}
external_dependencies = {
  LIBUV = { header = "uv.h" },
  SQLITE = { header = "sqlite3.h" },
  XXHASH = { header = "xxhash.h" },
  LIBPQ = { header = "postgresql/libpq-fe.h" },
  LIBMICROHTTPD = { header = "microhttpd.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    SLUICE_TESTS = "OFF",
    SLUICE_SANITIZE = "OFF",
    SLUICE_INSTALL_LIBRARY = "OFF",
    SLUICE_EMBED = "OFF",
    SLUICE_LUA_INSTALL_DIR = "$(LUADIR)",
    SLUICE_CMOD_INSTALL_DIR = "$(LIBDIR)/sluice",
  },
}
