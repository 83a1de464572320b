#!/usr/bin/env bash
# Settings of the machine image that nested Incus needs on this kind of host.
set -euo pipefail
R=$1 D=$2
# lxcfs needs FUSE, which a container lacks; incus.service requires the unit.
mkdir -p "$R/etc/systemd/system/lxcfs.service.d"
printf '[Unit]\nConditionVirtualization=\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=\nExecStart=/bin/true\nExecStopPost=\nExecReload=\n' \
  >"$R/etc/systemd/system/lxcfs.service.d/skein.conf"
# The host's cpu and cpuacct hierarchies cannot be delegated: show nested
# liblxc only the hierarchies really mounted (skein-cgfix), in a mount
# namespace of Incus's own (systemd keeps its view of /sys/fs/cgroup).
install -m 0755 "$D/skein-cgfix" "$R/usr/local/sbin/skein-cgfix"
mkdir -p "$R/etc/systemd/system/incus.service.d"
printf '[Service]\nPrivateMounts=yes\nExecStart=\nExecStart=/usr/local/sbin/skein-cgfix /usr/libexec/incus/startup\n' >"$R/etc/systemd/system/incus.service.d/skein.conf"
# Nested containers map their ids inside the machine's own 10^9.
echo root:1000000:999000000 >"$R/etc/subuid"
echo root:1000000:999000000 >"$R/etc/subgid"
# No instance types from the internet (there is none, and no traffic may leave).
echo INCUS_SKIP_INSTANCE_TYPES=true >>"$R/etc/default/incus"
# Start Incus at boot, not on the first connection: the agent waits for it.
ln -sf /lib/systemd/system/incus.service "$R/etc/systemd/system/multi-user.target.wants/incus.service"
rm -f "$R/etc/systemd/system/sockets.target.wants/incus-user.socket"
# keepalived runs under skein's agent (floating IPs), not as the package's service.
rm -f "$R/etc/systemd/system/multi-user.target.wants/keepalived.service"
# Forwarding between the machine's container subnet and its peers' (routed mode).
echo 'net.ipv4.ip_forward = 1' >"$R/etc/sysctl.d/60-skein.conf"
echo 'nameserver 127.0.0.1' >"$R/etc/resolv.conf"
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
