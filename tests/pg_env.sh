#!/usr/bin/env bash
# Runs a command beside a PostgreSQL server of its own: initdb into a
# temporary directory, the server on a Unix socket in it (no TCP port), a
# database "sluice" for role "sluice"; SLUICE_TEST_PG names it for the
# command (a libpq URL). The server is stopped and the directory removed
# however the command ends. As root, the server runs as user postgres.
#   tests/pg_env.sh COMMAND [ARGS...]
set -euo pipefail
# The sanitized flavour preloads the ASan runtime: for the command only,
# not for the server.
preload=${LD_PRELOAD:-}
unset LD_PRELOAD
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "pg_env: no PostgreSQL server found (scripts/setup.sh installs postgresql)" >&2
  exit 1
fi
dir=$(mktemp -d /tmp/sluice-pg.XXXXXX)
as=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$dir"
  as=(runuser -u postgres --)
fi
stop() {
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
"${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U sluice --no-sync -E UTF8 >/dev/null
# Quick to start and stop, and durable enough for tests (fsync off).
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start \
  -o "-k $dir -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null
"${as[@]}" "$bin/createdb" -h "$dir" -U sluice sluice
export SLUICE_TEST_PG="postgresql://sluice@/sluice?host=$dir"
export SLUICE_TEST_PG_DIR="$dir"
if [ -n "$preload" ]; then
  LD_PRELOAD="$preload" "$@"
else
  "$@"
fi
