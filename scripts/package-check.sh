#!/usr/bin/env bash
# The Debian package, as CI checks it: build it with cargo-deb (installed when missing),
# unpack it into a scratch root, and check its layout, its conffile, that the binary
# in it runs and accepts the config it ships, and that systemd accepts its unit.
#
#   bash scripts/package-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi
cargo deb --locked --quiet --output target/debian/hallgate.deb
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x target/debian/hallgate.deb "$root"
unit=$(find "$root" -name hallgate.service -path '*systemd/system*' | head -n 1)
for f in usr/bin/hallgate etc/hallgate/hallgate.toml \
         usr/share/hallgate/mappings/nat/application.toml \
         usr/share/doc/hallgate/README.md usr/share/doc/hallgate/docs/deploy.md; do
  [ -e "$root/$f" ] || { echo "package-check: $f is missing from the .deb" >&2; exit 1; }
done
[ -n "$unit" ] || { echo "package-check: no systemd unit in the .deb" >&2; exit 1; }
dpkg-deb -I target/debian/hallgate.deb conffiles | grep -qx /etc/hallgate/hallgate.toml \
  || { echo "package-check: /etc/hallgate/hallgate.toml is not a conffile" >&2; exit 1; }
dpkg-deb -I target/debian/hallgate.deb postinst | grep -q "adduser --system" \
  || { echo "package-check: postinst does not make the hallgate user" >&2; exit 1; }
"$root/usr/bin/hallgate" --version
# The shipped config is valid as it is (its store folder is made by postinst).
sed "s#/var/lib/hallgate#$root/var/lib/hallgate#g" "$root/etc/hallgate/hallgate.toml" > "$root/check.toml"
mkdir -p "$root/var/lib/hallgate/keys"
"$root/usr/bin/hallgate" --config "$root/check.toml" check
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify checks that ExecStart exists: point the unit at the unpacked binary.
  mkdir -p "$root/verify"
  sed "s#/usr/bin/hallgate#$root/usr/bin/hallgate#g" "$unit" > "$root/verify/hallgate.service"
  if ! systemd-analyze verify "$root/verify/hallgate.service" > "$root/verify.log" 2>&1 \
     || [ -s "$root/verify.log" ]; then
    cat "$root/verify.log" >&2
    echo "package-check: systemd-analyze verify complained about the unit" >&2
    exit 1
  fi
else
  echo "package-check: systemd-analyze not installed; the unit was not verified" >&2
fi
echo "package-check: ok ($(du -h target/debian/hallgate.deb | cut -f1))"
