#!/usr/bin/env bash
# Stage 2 of the skein-service image: runs on the host against a debootstrapped
# rootfs. Usage: customize.sh ROOTFS RECIPE_DIR
set -euo pipefail
R=$1 D=$2

install -m 0644 "$D/interfaces" "$R/etc/network/interfaces"

# Roles enable what they need: nothing of these runs (or is socket-activated)
# at boot. Fail the build if any of their units is still enabled afterwards.
units=$(cd "$R/lib/systemd/system" && ls | grep -E '^(nginx|haproxy|keepalived|mariadb|mysql|postgresql)[^/]*\.(service|socket)$' | grep -v '@\.' || true)
chroot "$R" systemctl disable $units >/dev/null 2>&1 || true
left=$(find "$R/etc/systemd/system" -path '*.wants/*' | grep -E '/(nginx|haproxy|keepalived|mariadb|mysql|postgresql)' || true)
[ -z "$left" ] || { echo "customize: still enabled: $left" >&2; exit 1; }
# Units that only make noise (or fail) inside a container.
chroot "$R" systemctl mask e2scrub_reap.service e2scrub_all.timer fstrim.timer \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer systemd-pstore.service \
  getty@tty1.service >/dev/null 2>&1

# Per-container identity: machine-id generated at first boot, hostname and
# /etc/hosts from the image templates, resolv.conf from dhclient.
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R/etc/hostname" "$R/etc/resolv.conf"
printf '127.0.0.1\tlocalhost\n' >"$R/etc/hosts"

# Smaller image.
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/var/log/*.log \
  "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/locale/* "$R"/usr/share/i18n \
  "$R"/tmp/* "$R"/var/tmp/*
