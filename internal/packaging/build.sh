#!/usr/bin/env bash
# Build skein's Debian package, as an operator installs it: the binary in
# /usr/bin, systemd units for the server and the agent (each started by
# `systemctl enable --now` once its settings file exists).
# Usage: build.sh OUTDIR   (run from the repository's root)
set -euo pipefail
OUT=${1:?usage: build.sh OUTDIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is missing: apt-get install dpkg" >&2; exit 3; }
# A Debian version: the last tag's, else 0.0.0, with the commit for builds between tags.
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
version="0.0.0+git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || date +%Y%m%d%H%M%S).$commit"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/tmpfiles.d" "$root/etc/skein" "$root/var/lib/skein"
# Uncommitted changes: the version names the build's content too, so that
# every build installs over the last.
if git status --porcelain 2>/dev/null | grep -q .; then
  CGO_ENABLED=0 go build -trimpath -o "$root/usr/bin/skein" ./cmd/skein
  version="$version.dirty$(sha256sum "$root/usr/bin/skein" | cut -c1-8)"
fi
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$root/usr/bin/skein" ./cmd/skein
install -m 0644 "$HERE/skein-server.service" "$HERE/skein-agent.service" "$root/lib/systemd/system/"
install -m 0644 "$HERE/skein.tmpfiles" "$root/usr/lib/tmpfiles.d/skein.conf"
install -m 0755 "$HERE/postinst" "$HERE/prerm" "$root/DEBIAN/"
chmod 0700 "$root/var/lib/skein"
cat >"$root/DEBIAN/control" <<CONTROL
Package: skein
Version: $version
Architecture: amd64
Maintainer: skein developers <dev@skein.invalid>
Depends: systemd
Recommends: incus
Section: admin
Priority: optional
Description: cluster manager for containers on a handful of servers
 skein runs the managed services of a container cluster on your own servers:
 containers (Incus), service discovery (Consul), load balancers, web servers,
 databases, floating IPs and a job scheduler, over a NATS JetStream bus.
CONTROL
mkdir -p "$OUT"
deb="$OUT/skein_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
ln -sf "$(basename "$deb")" "$OUT/skein_amd64.deb"
echo "$deb"
