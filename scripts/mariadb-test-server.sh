#!/usr/bin/env bash
# Start a throwaway MariaDB on loopback, as an unprivileged user, in a temporary
# folder: the 前置库 (front-end database) of the table source and destination tests.
# Prints the export lines for HALLGATE_TEST_MARIADB (a mysql:// URL of a user with
# a password, allowed to create and drop databases) and HALLGATE_TEST_MARIADB_CA
# (the PEM of a throwaway CA that signed the server's certificate for 127.0.0.1;
# the user hallgate_tls, same password, must connect with TLS).
#
#   eval "$(bash scripts/mariadb-test-server.sh start)"   # then: cargo test
#   bash scripts/mariadb-test-server.sh stop
#
# Env: MARIADB_TEST_DIR (default /tmp/hallgate-mariadb-test), MARIADB_TEST_PORT
# (default 33069). Installs mariadb-server from Debian's packages when it is missing
# and we are root.
set -euo pipefail
DIR=${MARIADB_TEST_DIR:-/tmp/hallgate-mariadb-test}
PORT=${MARIADB_TEST_PORT:-33069}
PASSWORD=hallgate-test
cmd=${1:-start}

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq mariadb-server >&2
  else
    echo "MariaDB is not installed (Debian: apt-get install mariadb-server)" >&2
    exit 1
  fi
fi
SERVER=$(command -v mariadbd || echo /usr/sbin/mariadbd)

if [ "$(id -u)" = 0 ]; then
  RUNAS=${MARIADB_TEST_USER:-mysql}
  id "$RUNAS" >/dev/null 2>&1 || useradd --system --no-create-home "$RUNAS"
  as_user() { runuser -u "$RUNAS" -- "$@"; }
else
  RUNAS=$(id -un)
  as_user() { "$@"; }
fi

exports() {
  echo "export HALLGATE_TEST_MARIADB=mysql://hallgate:$PASSWORD@127.0.0.1:$PORT/hallgate"
  echo "export HALLGATE_TEST_MARIADB_CA=$DIR/tls/ca.pem"
}

. "$(dirname "$0")/test-certs.sh"

client() { mariadb --no-defaults --socket="$DIR/mysqld.sock" -uroot "$@"; }

case "$cmd" in
  start)
    if [ -f "$DIR/mysqld.pid" ] && kill -0 "$(cat "$DIR/mysqld.pid")" 2>/dev/null; then
      exports
      exit 0
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown "$RUNAS" "$DIR"
    make_certs
    as_user mariadb-install-db --no-defaults --datadir="$DIR/data" --user="$RUNAS" \
      --auth-root-authentication-method=socket --skip-test-db >"$DIR/install.log" 2>&1
    as_user "$SERVER" --no-defaults --datadir="$DIR/data" --socket="$DIR/mysqld.sock" \
      --pid-file="$DIR/mysqld.pid" --port="$PORT" --bind-address=127.0.0.1 \
      --log-error="$DIR/server.log" --innodb-buffer-pool-size=128M \
      --innodb-flush-log-at-trx-commit=2 --max-connections=300 \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
      --sql-mode=STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION \
      --ssl-cert="$DIR/tls/server.pem" --ssl-key="$DIR/tls/server.key" \
      --ssl-ca="$DIR/tls/ca.pem" >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
      [ -S "$DIR/mysqld.sock" ] && client -e 'SELECT 1' >/dev/null 2>&1 && break
      sleep 0.2
    done
    if ! client -e 'SELECT 1' >/dev/null 2>&1; then
      echo "MariaDB did not start; see $DIR/server.log" >&2
      tail -n 20 "$DIR/server.log" >&2 || true
      exit 1
    fi
    client -e "CREATE USER 'hallgate'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
      GRANT ALL PRIVILEGES ON *.* TO 'hallgate'@'127.0.0.1';
      CREATE USER 'hallgate_tls'@'127.0.0.1' IDENTIFIED BY '$PASSWORD' REQUIRE SSL;
      GRANT ALL PRIVILEGES ON *.* TO 'hallgate_tls'@'127.0.0.1';
      CREATE DATABASE hallgate CHARACTER SET utf8mb4;"
    exports
    ;;
  stop)
    if [ -f "$DIR/mysqld.pid" ]; then
      pid=$(cat "$DIR/mysqld.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$DIR"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
