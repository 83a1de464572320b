#!/usr/bin/env bash
# The machines bed: three "machines" m1-m3, each an Incus system container
# (nesting on, /dev/net/tun passed in) running its own Incus daemon under
# systemd, on a LAN of their own (skeinmlan, 10.77.200.0/24, no NAT, no DHCP;
# the host is 10.77.200.1 and has no route to anything behind a machine), with
# skein installed from its Debian package. Idempotent; run as root after
# tests/testbed/testbed.sh (go tool task testbed:machines does both).
#
#   tests/testbed/machines.sh [up]   make or repair the bed, (re)install skein
#   tests/testbed/machines.sh down   delete the machines, their LAN and project
#
# Machine N is mN at 10.77.200.1N, its LAN link on the host skeinmN (cut it
# with `ip link set skeinmN down`); the skein agent's unit waits for
# /etc/skein/agent.env (README "Adding a server").
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=/var/cache/skein
PROJECT=skein-m
LAN=skeinmlan
LAN_NET=10.77.200
POOL=skein
IMAGE=skein-machine
MACHINES=(1 2 3)
DEB=${SKEIN_DEB:-$ROOT/bin/skein_amd64.deb}

now_us() { echo "${EPOCHREALTIME/./}"; }
elapsed() { local d=$(($(now_us) - $1)); printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000)); }
T0=$(now_us)
log() { echo "machines: [$(elapsed "$T0")s] $*"; }
die() { echo "machines: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p /run/lock
exec 8>/run/lock/skein-machines.lock
flock 8
export INCUS_DIR=/var/lib/incus
incus info >/dev/null 2>&1 || die "Incus is not running: run tests/testbed/testbed.sh first"
inm() { local n=$1; shift; incus exec "m$n" --project "$PROJECT" -- "$@"; }

down() {
  local n
  for n in "${MACHINES[@]}"; do
    incus delete -f "m$n" --project "$PROJECT" >/dev/null 2>&1 && log "deleted m$n" || true
  done
  incus project delete "$PROJECT" >/dev/null 2>&1 || true
  incus network delete "$LAN" >/dev/null 2>&1 || true
  log "down"
}

# ---------------------------------------------------------------- the image
ensure_image() {
  local mirror key have t rootfs work
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  [ -n "$mirror" ] || die "no URIs: line in /etc/apt/sources.list.d/debian.sources"
  key=$(cat "$HERE"/machine/* <(echo "$mirror") | sha256sum | cut -c1-16)
  have=$(incus image get-property "$IMAGE" skein.recipe 2>/dev/null || true)
  RECIPE=$key
  if [ "$have" = "$key" ]; then log "image $IMAGE: recipe $key"; return; fi
  t=$(now_us)
  work=$(mktemp -d /var/tmp/skein-machine.XXXXXX)
  rootfs="$work/rootfs"
  log "image $IMAGE: building (debootstrap bookworm, incus from bookworm-backports)"
  bash "$HERE/machine/build.sh" "$rootfs" "$HERE/machine" "$CACHE" "$mirror" || { rm -rf "$work"; die "building the machine image failed"; }
  printf 'architecture: x86_64\ncreation_date: %s\nproperties:\n  description: skein test machine (Debian bookworm, Incus)\n  os: debian\n  release: bookworm\n  skein.recipe: "%s"\n' \
    "$(date +%s)" "$key" >"$work/metadata.yaml"
  tar -C "$work" -cf "$work/meta.tar" metadata.yaml
  tar -C "$rootfs" --numeric-owner -cf - . | zstd -q -T0 -3 -o "$work/rootfs.tar.zst"
  incus image delete "$IMAGE" >/dev/null 2>&1 || true
  incus image import "$work/meta.tar" "$work/rootfs.tar.zst" --alias "$IMAGE" >/dev/null
  incus image set-property "$IMAGE" skein.recipe "$key"
  rm -rf "$work"
  log "image $IMAGE: built and imported in $(elapsed "$t")s (recipe $key)"
}

# ---------------------------------------------------------------- the LAN
ensure_lan() {
  if ! incus network show "$LAN" >/dev/null 2>&1; then
    incus network create "$LAN" --type=bridge ipv4.address="$LAN_NET.1/24" ipv4.nat=false \
      ipv4.dhcp=false ipv6.address=none >/dev/null
    log "created the LAN $LAN ($LAN_NET.1/24, no NAT, no DHCP)"
  fi
  if ! incus project show "$PROJECT" >/dev/null 2>&1; then
    incus project create "$PROJECT" -c features.images=false -c features.profiles=false \
      -c features.networks=false -c features.storage.volumes=false >/dev/null
    log "created project $PROJECT"
  fi
}

# ---------------------------------------------------------------- machines
ensure_machine() {
  local n=$1 m="m$1" t st tmp
  t=$(now_us)
  # A machine made from an older image is made again: a machine is its image.
  if incus info "$m" --project "$PROJECT" >/dev/null 2>&1 &&
     [ "$(incus config get "$m" user.skein.recipe --project "$PROJECT")" != "$RECIPE" ]; then
    incus delete -f "$m" --project "$PROJECT" >/dev/null
    log "$m: deleted (made from an older image)"
  fi
  if ! incus info "$m" --project "$PROJECT" >/dev/null 2>&1; then
    incus init "$IMAGE" "$m" --project "$PROJECT" --no-profiles --storage "$POOL" \
      -c security.nesting=true -c boot.autostart=false -c user.skein.recipe="$RECIPE" >/dev/null 2>&1
    incus config device add "$m" eth0 nic network="$LAN" name=eth0 host_name="skeinm$n" --project "$PROJECT" >/dev/null
    incus config device add "$m" tun unix-char source=/dev/net/tun path=/dev/net/tun --project "$PROJECT" >/dev/null
    tmp=$(mktemp)
    printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n  address %s.1%s/24\n' "$LAN_NET" "$n" >"$tmp"
    incus file push "$tmp" "$m/etc/network/interfaces" --project "$PROJECT" >/dev/null
    echo "$m" >"$tmp"
    incus file push "$tmp" "$m/etc/hostname" --project "$PROJECT" >/dev/null
    rm -f "$tmp"
    log "$m: created"
  fi
  [ "$(incus list "$m" --project "$PROJECT" -f csv -c s)" = RUNNING ] || incus start "$m" --project "$PROJECT"
  local deadline=$((SECONDS + 120))
  st=
  while [ -z "$st" ] && [ $SECONDS -lt $deadline ]; do
    # systemd's bus is there a moment after the container starts
    st=$(timeout 120 incus exec "$m" --project "$PROJECT" -- systemctl is-system-running --wait 2>/dev/null || true)
    [ -n "$st" ] || sleep 0.2
  done
  if [ "$st" != running ]; then
    inm "$n" systemctl --failed --no-legend >&2 || true
    die "$m: systemd is '$st'"
  fi
  inm "$n" incus admin waitready --timeout 60 >/dev/null || die "$m: its Incus is not ready"
  log "$m: running, systemd and its own Incus up ($(elapsed "$t")s)"
}

install_skein() {
  local n=$1 m="m$1" want have
  want=$(dpkg-deb -f "$DEB" Version)
  have=$(inm "$n" dpkg-query -W -f='${Version}' skein 2>/dev/null || true)
  if [ "$want" = "$have" ]; then log "$m: skein $have installed"; return; fi
  incus file push "$DEB" "$m/var/tmp/skein.deb" --project "$PROJECT" >/dev/null
  inm "$n" dpkg -i /var/tmp/skein.deb >/dev/null || die "$m: dpkg -i skein failed"
  inm "$n" rm -f /var/tmp/skein.deb
  log "$m: skein $want installed from its package"
}

case "${1:-up}" in
  down) down; exit 0 ;;
  up) ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
[ -f "$DEB" ] || die "no package at $DEB: run go tool task package"
ensure_image
ensure_lan
for n in "${MACHINES[@]}"; do ensure_machine "$n"; done
for n in "${MACHINES[@]}"; do install_skein "$n"; done
log "ready: m1-m3 at $LAN_NET.11-13 on $LAN (total $(elapsed "$T0")s)"
