#!/usr/bin/env bash
# The skein app image (alias skein-busybox): busybox, its httpd on :80, DHCP.
# Usage: build.sh ROOTFS RECIPE_DIR CACHE_DIR; run as root.
set -euo pipefail
R=$1 D=$2
echo "step: busybox rootfs"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,var/run,www}
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list-full); do
  [ "$a" = bin/busybox ] && continue
  mkdir -p "$R/$(dirname "$a")"
  ln -sf /bin/busybox "$R/$a"
done
cp -a "$D/rootfs/." "$R/"
chmod 0755 "$R/etc/init.d/rcS" "$R/etc/init.d/net" "$R/etc/udhcpc.script"
