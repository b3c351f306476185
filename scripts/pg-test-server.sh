#!/usr/bin/env bash
# Start a throwaway PostgreSQL on loopback, as an unprivileged user, in a temporary
# folder, for the test suite. It takes plain and TLS connections (a certificate for
# 127.0.0.1 from a throwaway CA made with openssl). Prints the export lines for
# HALLGATE_TEST_POSTGRES, HALLGATE_TEST_POSTGRES_CA (that CA, PEM) and
# HALLGATE_TEST_POSTGRES_SOCKET (the folder of its Unix socket).
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

exports() {
  echo "export HALLGATE_TEST_POSTGRES=postgres://hallgate@127.0.0.1:$PORT/postgres"
  echo "export HALLGATE_TEST_POSTGRES_CA=$DIR/tls/ca.pem"
  echo "export HALLGATE_TEST_POSTGRES_SOCKET=$DIR"
}

. "$(dirname "$0")/test-certs.sh"

case "$cmd" in
  start)
    if [ -f "$DIR/data/postmaster.pid" ] && [ -f "$DIR/tls/ca.pem" ] \
      && as_user "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      exports
      exit 0
    fi
    if [ -f "$DIR/data/postmaster.pid" ]; then
      as_user "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown "$RUNAS" "$DIR"
    make_certs
    as_user "$BIN/initdb" -D "$DIR/data" -A trust -U hallgate -E UTF8 --no-locale >/dev/null
    as_user "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 -c shared_buffers=128MB -c ssl=on -c ssl_cert_file=$DIR/tls/server.pem -c ssl_key_file=$DIR/tls/server.key" \
      start >/dev/null
    exports
    ;;
  stop)
    as_user "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
