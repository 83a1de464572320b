#!/usr/bin/env bash
# Prepare this machine as skein's test bed: Incus (no systemd needed), three
# NAT-free bridges under 10.77.0.0/16, three projects, two local images.
# Idempotent; run as root. A second run on a prepared machine takes seconds.
#
#   tests/testbed/testbed.sh                  set up (and smoke-test busybox)
#   tests/testbed/testbed.sh --verify-service also boot-test skein-service
#
# Env: SKEIN_TESTBED_SMOKE=0 skips the busybox smoke test.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOCK=/var/lib/incus/unix.socket
CACHE=/var/cache/skein
INCUSD_LOG=/var/log/incus-skein.log
SUPERNET=10.77.0.0/16
POOL=skein
SERVERS=(1 2 3 4 5)
VERIFY_SERVICE=0
for a in "$@"; do
  case $a in
    --verify-service) VERIFY_SERVICE=1 ;;
    *) echo "usage: $0 [--verify-service]" >&2; exit 2 ;;
  esac
done

now_us() { echo "${EPOCHREALTIME/./}"; }
elapsed() { local d=$(($(now_us) - $1)); printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000)); }
T0=$(now_us)
log() { echo "testbed: [$(elapsed "$T0")s] $*"; }
die() { echo "testbed: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
# one run at a time (several engineers / CI jobs may call this)
mkdir -p /run/lock
exec 9>/run/lock/skein-testbed.lock
flock 9
export DEBIAN_FRONTEND=noninteractive
# The CLI and the daemon must both use the default socket /var/lib/incus/unix.socket.
export INCUS_DIR=/var/lib/incus
unset INCUS_SOCKET INCUS_CONF || true

# ---------------------------------------------------------------- packages
MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
[ -n "$MIRROR" ] || die "no URIs: line in /etc/apt/sources.list.d/debian.sources"
SRC_FILE=/etc/apt/sources.list.d/skein-testbed.sources
PIN_FILE=/etc/apt/preferences.d/skein-bullseye

ensure_packages() {
  local want_src want_pin changed=0
  want_src="# written by skein tests/testbed/testbed.sh
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $MIRROR
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  want_pin="# written by skein tests/testbed/testbed.sh: bullseye only for consul
Package: *
Pin: release n=bullseye
Pin-Priority: 100"
  if [ "$(cat "$SRC_FILE" 2>/dev/null)" != "$want_src" ]; then
    printf '%s\n' "$want_src" >"$SRC_FILE"; changed=1
  fi
  if [ "$(cat "$PIN_FILE" 2>/dev/null)" != "$want_pin" ]; then
    printf '%s\n' "$want_pin" >"$PIN_FILE"; changed=1
  fi

  # commands (or files) that must be present; skip apt entirely when they are
  local missing=() c
  for c in incus consul debootstrap dig jq curl ip nft iptables-legacy nsenter zstd sha256sum setsid keepalived prometheus chromium \
           /usr/libexec/incus/incusd /bin/busybox /usr/sbin/dnsmasq; do
    if [[ $c == /* ]]; then [ -x "$c" ] || missing+=("$c")
    else command -v "$c" >/dev/null 2>&1 || missing+=("$c"); fi
  done
  # /bin/busybox must be the static one (busybox-static), it is copied into images
  if [ -x /bin/busybox ] && ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    missing+=(busybox-static)
  fi
  if [ ${#missing[@]} -eq 0 ]; then
    log "packages: all present"
    return
  fi
  log "packages: missing ${missing[*]}; installing"
  if [ $changed = 1 ] || \
     ! compgen -G '/var/lib/apt/lists/*_bookworm-backports_main_*Packages*' >/dev/null || \
     ! compgen -G '/var/lib/apt/lists/*_bullseye_main_*Packages*' >/dev/null; then
    log "apt-get update"
    apt-get update -qq
  fi
  # stale package lists (a file moved on the mirror): update once and retry
  apt-get install -y -qq --no-install-recommends \
      debootstrap busybox-static dnsmasq-base iproute2 curl dnsutils jq nftables \
      zstd procps util-linux ca-certificates keepalived prometheus chromium iptables >/dev/null \
    || { apt-get update -qq; apt-get install -y -qq --no-install-recommends \
      debootstrap busybox-static dnsmasq-base iproute2 curl dnsutils jq nftables \
      zstd procps util-linux ca-certificates keepalived prometheus chromium iptables >/dev/null; }
  # incus (its own dependencies include qemu; only containers are used here)
  apt-get install -y -qq -t bookworm-backports incus >/dev/null
  apt-get install -y -qq consul >/dev/null   # only bullseye has it (pin 100)
  # the tests run their own Prometheus: the package's service is not wanted
  systemctl disable --now prometheus >/dev/null 2>&1 || true
  for c in incus consul debootstrap dig jq prometheus chromium /usr/libexec/incus/incusd /bin/busybox; do
    [[ $c == /* ]] && { [ -x "$c" ] || die "$c still missing after install"; continue; }
    command -v "$c" >/dev/null || die "$c still missing after install"
  done
  log "packages: installed"
}

# ---------------------------------------------------------------- incusd
api() { # api METHOD PATH [JSON]: Incus REST call over the unix socket, prints body
  local m=$1 p=$2
  if [ $# -ge 3 ]; then
    curl -sS --max-time 120 --unix-socket "$SOCK" -X "$m" -H 'Content-Type: application/json' \
      -d "$3" "http://incus$p"
  else
    curl -sS --max-time 120 --unix-socket "$SOCK" -X "$m" "http://incus$p"
  fi
}
api_wait() { # api_wait METHOD PATH JSON: async call, waits on the operation, fails on error
  local r op
  r=$(api "$@")
  if [ "$(jq -r .type <<<"$r")" = error ]; then echo "$r" >&2; return 1; fi
  op=$(jq -r .operation <<<"$r")
  r=$(api GET "$op/wait?timeout=120")
  if [ "$(jq -r .metadata.status <<<"$r")" != Success ]; then echo "$r" >&2; return 1; fi
}
incus_up() { curl -sf --max-time 3 --unix-socket "$SOCK" http://incus/1.0 >/dev/null 2>&1; }

ensure_incusd() {
  if incus_up; then log "incusd: serving on $SOCK"; return; fi
  # The daemon itself, not its helpers: "[lxc monitor] ..." and "incusd fork*"
  # processes also have the command name incusd and outlive a killed daemon.
  if ! pgrep -f '^/usr/libexec/incus/incusd( +-.*)?$' >/dev/null; then
    log "incusd: starting (log $INCUSD_LOG)"
    mkdir -p /var/lib/incus /var/log
    # INCUS_SKIP_INSTANCE_TYPES: no daily download of instance types from the
    # internet (there is none here, and no traffic may leave the machine).
    # Every inherited descriptor above 2 is closed first: a daemon that kept
    # one would hold whatever it is (a flock of the e2e lock, say) for ever.
    (
      for fd in $(ls "/proc/$BASHPID/fd"); do
        [ "$fd" -gt 2 ] && eval "exec $fd>&-"
      done 2>/dev/null
      INCUS_SKIP_INSTANCE_TYPES=true exec setsid nohup /usr/libexec/incus/incusd --group root --logfile "$INCUSD_LOG" \
        </dev/null >>"$INCUSD_LOG" 2>&1
    ) &
  else
    log "incusd: process present, waiting for it"
  fi
  incus admin waitready --timeout 60 2>/dev/null || die "incusd not ready; see $INCUSD_LOG"
  incus_up || die "incusd ready but $SOCK does not answer"
  log "incusd: serving on $SOCK"
}

# ---------------------------------------------------------------- host network
ensure_host_net() {
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || sysctl -qw net.ipv4.ip_forward=1
  ip route replace blackhole "$SUPERNET"
  # Forwarding is on so test subnets reach each other through the host; make
  # sure nothing from them is forwarded anywhere else (no NAT, no leaks).
  local want
  want="table inet skein_testbed {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr $SUPERNET ip daddr != $SUPERNET drop
		ip daddr $SUPERNET ip saddr != $SUPERNET drop
	}
}"
  if ! nft list table inet skein_testbed 2>/dev/null | grep -q "ip saddr $SUPERNET ip daddr != $SUPERNET drop"; then
    nft delete table inet skein_testbed 2>/dev/null || true
    nft -f - <<<"$want"
  fi
  log "host: ip_forward=1, blackhole $SUPERNET, forward filter confined to $SUPERNET"
}

# ---------------------------------------------------------------- incus objects
ensure_incus_objects() {
  local n
  # no image auto-update (images are local; nothing to fetch)
  [ "$(incus config get images.auto_update_interval)" = 0 ] || incus config set images.auto_update_interval=0
  incus storage show "$POOL" >/dev/null 2>&1 || { incus storage create "$POOL" dir >/dev/null; log "created storage pool $POOL"; }
  incus profile device get default root pool >/dev/null 2>&1 || \
    { incus profile device add default root disk path=/ pool="$POOL" >/dev/null; log "default profile: root disk on $POOL"; }
  for n in "${SERVERS[@]}"; do
    # skein's agent forwards the consul domain by rewriting this file and sending
    # dnsmasq SIGHUP: changing raw.dnsmasq instead restarts dnsmasq, and Incus
    # was seen to stall instance starts on that bridge for ~90 s afterwards.
    local servers="/etc/skein/dns/skeinbr$n.servers" raw
    mkdir -p /etc/skein/dns && chmod 0755 /etc/skein /etc/skein/dns
    [ -f "$servers" ] || : >"$servers"
    chmod 0644 "$servers"
    raw=$(printf 'no-resolv\nservers-file=%s' "$servers")
    if ! incus network show "skeinbr$n" >/dev/null 2>&1; then
      incus network create "skeinbr$n" --type=bridge \
        ipv4.address="10.77.$n.1/24" ipv4.nat=false ipv6.address=none \
        ipv4.dhcp.ranges="10.77.$n.50-10.77.$n.250" dns.domain="s$n.skein" \
        raw.dnsmasq="$raw" >/dev/null
      log "created network skeinbr$n (10.77.$n.1/24)"
    elif [ "$(incus network get "skeinbr$n" raw.dnsmasq)" != "$raw" ]; then
      incus network set "skeinbr$n" raw.dnsmasq="$raw"
      log "network skeinbr$n: consul forwarding through $servers"
    fi
    if ! incus project show "skein-s$n" >/dev/null 2>&1; then
      incus project create "skein-s$n" -c features.images=false -c features.profiles=false \
        -c features.networks=false -c features.storage.volumes=false >/dev/null
      log "created project skein-s$n"
    fi
  done
  log "incus: pool $POOL, networks skeinbr{1..5}, projects skein-s{1..5} present"
}

# ---------------------------------------------------------------- servers' LAN
# Servers with a LAN of their own, for floating IPs: network namespaces
# skein-ns1..3 (servers) and skein-nsc (a client) on the bridge skeinlan,
# 10.77.100.0/24 (inside the blackholed supernet, no NAT); the host is
# 10.77.100.1 on it, where a test's bus listens. ns N is 10.77.100.1N, the
# client 10.77.100.20.
LAN=skeinlan
ensure_lan() {
  if ! ip link show "$LAN" >/dev/null 2>&1; then
    ip link add "$LAN" type bridge
    ip addr add 10.77.100.1/24 dev "$LAN"
  fi
  ip link set "$LAN" up
  local n ns host addr
  for n in 1 2 3 c; do
    ns="skein-ns$n"; host="vlan$n"
    if [ "$n" = c ]; then addr=10.77.100.20/24; else addr="10.77.100.1$n/24"; fi
    ip netns list | grep -qw "$ns" || ip netns add "$ns"
    if ! ip link show "$host" >/dev/null 2>&1; then
      ip link add "$host" type veth peer name eth0 netns "$ns"
      ip link set "$host" master "$LAN"
    fi
    ip link set "$host" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" -4 addr show dev eth0 | grep -q "${addr%/*}/" || ip -n "$ns" addr add "$addr" dev eth0
    # the servers reach the containers' networks through the host (checks of
    # the services a floating IP follows run from the server's namespace)
    [ "$n" = c ] || ip -n "$ns" route replace "$SUPERNET" via 10.77.100.1 dev eth0
  done
  log "lan: $LAN 10.77.100.1/24, namespaces skein-ns1..3 (10.77.100.11-13) and skein-nsc (10.77.100.20)"
}

# ---------------------------------------------------------------- images
# The images are the product's: skein images build (recipes in internal/images).
SKEIN=${SKEIN_BIN:-$HERE/../../bin/skein}
ensure_images() {
  local name
  [ -x "$SKEIN" ] || die "no skein binary at $SKEIN: run go tool task build (or set SKEIN_BIN)"
  for name in app service; do
    "$SKEIN" images build "$name" --mirror "$MIRROR" 2>&1 | sed 's/^/testbed: /' || die "skein images build $name failed"
  done
  # tarballs of the test bed's own recipes (before they moved into skein)
  find "$CACHE" -maxdepth 1 -name 'skein-*.rootfs.tar.zst' -delete 2>/dev/null || true
}

# ---------------------------------------------------------------- smoke tests
# create_instance PROJECT NAME IMAGE BRIDGE [STATIC_IP]: what skein does on create
create_instance() {
  local nic
  nic=$(jq -nc --arg br "$4" --arg ip "${5:-}" \
    '{type:"nic", network:$br, name:"eth0"} + (if $ip=="" then {} else {"ipv4.address":$ip} end)')
  api_wait POST "/1.0/instances?project=$1" "$(jq -nc --arg n "$2" --arg img "$3" --argjson nic "$nic" --arg pool "$POOL" '{
    name:$n, type:"container", profiles:[], start:true,
    source:{type:"image", alias:$img},
    devices:{root:{type:"disk", path:"/", pool:$pool}, eth0:$nic}}')"
}
instance_ipv4() { # instance_ipv4 PROJECT NAME -> global IPv4 of eth0 or nothing
  api GET "/1.0/instances/$2/state?project=$1" |
    jq -r '.metadata.network.eth0.addresses[]? | select(.family=="inet" and .scope=="global") | .address' | head -1
}
wait_ipv4() { # wait_ipv4 PROJECT NAME TIMEOUT_S
  local i ip
  for ((i = 0; i < $3 * 10; i++)); do
    ip=$(instance_ipv4 "$1" "$2"); [ -n "$ip" ] && { echo "$ip"; return 0; }
    sleep 0.1
  done
  return 1
}

smoke_busybox() {
  local p=skein-s1 n=testbed-smoke ip t t1 body
  api_wait DELETE "/1.0/instances/$n?project=$p" 2>/dev/null || true
  t=$(now_us)
  create_instance "$p" "$n" skein-busybox skeinbr1 10.77.1.49 || die "smoke: create in $p failed"
  t1=$(elapsed "$t")
  ip=$(wait_ipv4 "$p" "$n" 20) || die "smoke: no IPv4 on $n"
  [ "$ip" = 10.77.1.49 ] || die "smoke: got $ip, want static 10.77.1.49"
  body=$(curl -sf --max-time 5 "http://$ip/") || die "smoke: httpd on $ip not answering"
  grep -q "$n" <<<"$body" || die "smoke: index.html lacks hostname: $body"
  log "smoke: busybox in $p via REST (profiles:[]): create+start ${t1}s, IPv4 $ip after $(elapsed "$t")s, httpd ok"
  t=$(now_us)
  api_wait PUT "/1.0/instances/$n/state?project=$p" '{"action":"stop","timeout":30}' || die "smoke: clean stop failed"
  log "smoke: clean stop in $(elapsed "$t")s"
  api_wait DELETE "/1.0/instances/$n?project=$p" || die "smoke: delete failed"
}

verify_service() {
  local p=skein-s2 n=testbed-service ip t st
  api_wait DELETE "/1.0/instances/$n?project=$p" 2>/dev/null || true
  t=$(now_us)
  create_instance "$p" "$n" skein-service skeinbr2 10.77.2.49 || die "service: create failed"
  log "service: create+start $(elapsed "$t")s"
  ip=$(wait_ipv4 "$p" "$n" 60) || die "service: no IPv4"
  log "service: IPv4 $ip after $(elapsed "$t")s"
  st=$(timeout 90 incus exec --project "$p" "$n" -- systemctl is-system-running --wait || true)
  log "service: systemd '$st' after $(elapsed "$t")s"
  if [ "$st" != running ]; then
    incus exec --project "$p" "$n" -- systemctl --failed --no-legend >&2 || true
    die "service: systemd not running"
  fi
  [ "$(incus exec --project "$p" "$n" -- hostname)" = "$n" ] || die "service: hostname wrong"
  t=$(now_us)
  api_wait PUT "/1.0/instances/$n/state?project=$p" '{"action":"stop","timeout":30}' || die "service: clean stop failed"
  log "service: clean stop in $(elapsed "$t")s"
  api_wait DELETE "/1.0/instances/$n?project=$p" || die "service: delete failed"
}

# ---------------------------------------------------------------- main
ensure_packages
ensure_host_net
ensure_incusd
ensure_incus_objects
ensure_lan
ensure_images
[ "${SKEIN_TESTBED_SMOKE:-1}" = 0 ] || smoke_busybox
[ "$VERIFY_SERVICE" = 0 ] || verify_service
log "ready (total $(elapsed "$T0")s)"
