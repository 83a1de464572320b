#!/usr/bin/env bash
# The skein service image (alias skein-service): Debian bookworm with systemd,
# nginx, haproxy, keepalived, MariaDB, PostgreSQL and Consul, every role
# disabled until skein enables it.
# Usage: build.sh ROOTFS RECIPE_DIR CACHE_DIR; env MIRROR; run as root.
set -euo pipefail
R=$1 D=$2 CACHE=$3
PKGS=systemd-sysv,nginx-light,haproxy,keepalived,iproute2,ifupdown,isc-dhcp-client,ca-certificates,procps,mariadb-server,postgresql,openssl,curl,dnsutils
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 3; }
command -v zstd >/dev/null || { echo "zstd is missing: apt-get install zstd" >&2; exit 3; }
[ -x /usr/bin/consul ] || { echo "consul is missing on this machine (the image takes its binary): install Debian's consul package" >&2; exit 3; }
mkdir -p "$R" "$CACHE/debs"
# Stage 1: debootstrap, cached by (package list, mirror).
key=$(echo "bookworm minbase $PKGS $MIRROR" | sha256sum | cut -c1-16)
base="$CACHE/skein-service-debootstrap-$key.tar.zst"
if [ ! -s "$base" ]; then
  echo "step: debootstrap bookworm from $MIRROR (about 2-3 minutes)"
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$PKGS" \
    bookworm "$R" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -30 "$CACHE/debootstrap.log" >&2; exit 1; }
  tar -C "$R" --numeric-owner -cf - . | zstd -q -T0 -3 -o "$base.tmp"
  mv "$base.tmp" "$base"
else
  echo "step: debootstrap base from the cache"
  zstd -q -dc "$base" | tar -C "$R" --numeric-owner -xf -
fi
# Stage 2: customise.
echo "step: consul and the roles' settings"
install -m 0755 /usr/bin/consul "$R/usr/bin/consul"
bash "$D/customize.sh" "$R" "$D"
