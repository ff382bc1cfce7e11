#!/bin/sh
# Create the cluster once (role archivechain), then run. Dev consortium only: connections from
# 127.0.0.1 are trusted (host networking; nothing else reaches the port). A production database
# uses password or certificate authentication and its URL comes from a secret.
set -eu
BIN=/usr/lib/postgresql/15/bin
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  "$BIN/initdb" --username=postgres --encoding=UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=trust -D "$PGDATA"
  "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start
  echo "CREATE ROLE archivechain LOGIN CREATEDB" | psql -h /tmp -U postgres -v ON_ERROR_STOP=1
  "$BIN/pg_ctl" -D "$PGDATA" -w stop
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses=127.0.0.1 -c port=55432 -k /tmp
