# Sourced by the throwaway test servers (pg-test-server.sh, mariadb-test-server.sh):
# make_certs writes $DIR/tls/{ca.pem,server.pem,server.key}, owned by $RUNAS.
# A CA and a server certificate for 127.0.0.1 (EC P-256), the key readable by the
# server's account only.
make_certs() {
  local t="$DIR/tls"
  mkdir -p "$t"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=hallgate test CA" -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > "$t/server.ext"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 30 -extfile "$t/server.ext" -out "$t/server.pem" 2>/dev/null
  chmod 600 "$t/server.key" "$t/ca.key"
  [ "$(id -u)" = 0 ] && chown -R "$RUNAS" "$t"
  return 0
}
