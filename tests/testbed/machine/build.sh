#!/usr/bin/env bash
# The machine image of the machines bed (alias skein-machine): Debian bookworm
# with systemd and Incus (bookworm-backports), as an operator's server would
# have before skein is installed on it.
# Usage: build.sh ROOTFS RECIPE_DIR CACHE_DIR MIRROR; run as root.
set -euo pipefail
R=$1 D=$2 CACHE=$3 MIRROR=$4
PKGS=systemd-sysv,dbus,iproute2,ifupdown,ca-certificates,procps,nftables,curl,jq,iputils-ping,kmod,zstd,less,keepalived
mkdir -p "$R" "$CACHE/debs"
debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$PKGS" bookworm "$R" "$MIRROR" \
  >"$CACHE/machine-debootstrap.log" 2>&1 || { tail -30 "$CACHE/machine-debootstrap.log" >&2; exit 1; }
printf 'deb %s bookworm main\ndeb %s bookworm-backports main\n' "$MIRROR" "$MIRROR" >"$R/etc/apt/sources.list"
cp /etc/resolv.conf "$R/etc/resolv.conf"
for m in proc sys dev; do mount --bind "/$m" "$R/$m"; done
trap 'for m in dev sys proc; do umount "$R/$m" 2>/dev/null || true; done' EXIT
chroot "$R" sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
  apt-get install -y -qq --no-install-recommends -t bookworm-backports incus-base incus-client dnsmasq-base squashfs-tools >/dev/null &&
  apt-get clean' >>"$CACHE/machine-debootstrap.log" 2>&1 || { tail -30 "$CACHE/machine-debootstrap.log" >&2; exit 1; }
for m in dev sys proc; do umount "$R/$m"; done
trap - EXIT
bash "$D/customize.sh" "$R" "$D"
