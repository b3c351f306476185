#!/usr/bin/env bash
# Start a throwaway PostgreSQL on loopback, as an unprivileged user, in a temporary
# folder, for the test suite. Prints the export line for HALLGATE_TEST_POSTGRES.
#
#   eval "$(bash scripts/pg-test-server.sh start)"   # then: cargo test
#   bash scripts/pg-test-server.sh stop
#
# Env: PG_TEST_DIR (default /tmp/hallgate-pg-test), PG_TEST_PORT (default 54329).
# Installs PostgreSQL from Debian's packages when it is missing and we are root.
set -euo pipefail
DIR=${PG_TEST_DIR:-/tmp/hallgate-pg-test}
PORT=${PG_TEST_PORT:-54329}
cmd=${1:-start}

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

if [ -z "$(pgbin)" ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
  else
    echo "PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2
    exit 1
  fi
fi
BIN=$(pgbin)

# initdb and the server refuse to run as root: use an unprivileged account.
if [ "$(id -u)" = 0 ]; then
  RUNAS=${PG_TEST_USER:-postgres}
  id "$RUNAS" >/dev/null 2>&1 || useradd --system --no-create-home "$RUNAS"
  as_user() { runuser -u "$RUNAS" -- "$@"; }
else
  as_user() { "$@"; }
fi

case "$cmd" in
  start)
    if [ -f "$DIR/data/postmaster.pid" ] && as_user "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      echo "export HALLGATE_TEST_POSTGRES=postgres://hallgate@127.0.0.1:$PORT/postgres"
      exit 0
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown "$RUNAS" "$DIR"
    as_user "$BIN/initdb" -D "$DIR/data" -A trust -U hallgate -E UTF8 --no-locale >/dev/null
    as_user "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 -c shared_buffers=128MB" \
      start >/dev/null
    echo "export HALLGATE_TEST_POSTGRES=postgres://hallgate@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    as_user "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
