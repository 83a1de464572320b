#!/usr/bin/env bash
# The demo on the machines bed (go tool task demo:machines makes the bed
# first): a skein server on the host's LAN address, the agents of m1-m3 (each
# machine its own Incus and network stack, skein from its package under
# systemd), then what needs real separate servers: containers reaching each
# other across machines, a database on m3 used from m1 with its DSN, and a
# floating IP shared by m1 and m2 that moves when m1's keepalived is killed.
# Removes what it made when it ends, and stops the agents and the server.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin/skein
PROJECT=skein-m
LAN_IP=10.77.200.1
PORT=4322
VIP=10.77.200.60
DEMO=$(mktemp -d /var/tmp/skein-demo-machines.XXXXXX)
export SKEIN_NATS=tls://$LAN_IP:$PORT SKEIN_CREDS=$DEMO/data/auth/admin.creds SKEIN_TLS_CA=$DEMO/data/tls/ca.pem

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
die() { echo "demo: ERROR: $*" >&2; exit 1; }
# inm runs a command in machine $1 (its host, not a container of it).
inm() { local m=$1; shift; incus exec "$m" --project "$PROJECT" -- "$@"; }
# until_ok waits up to $1 seconds for the command after it to succeed.
until_ok() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}
# now_ms is the time in milliseconds, for the failover's figure.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

SERVER=
cleanup() {
  local rc=$?
  set +e
  say "cleaning up what the demo made"
  if [ -n "$SERVER" ]; then
    run "$BIN" delvip vip1
    run "$BIN" deldbinstance db3 --purge
    for c in dbclient c1 c2 c3; do run "$BIN" delete "$c"; done
  fi
  for m in m1 m2 m3; do
    inm "$m" systemctl disable --now skein-agent >/dev/null 2>&1
    inm "$m" rm -f /etc/skein/agent.env
  done
  echo "agents m1-m3 stopped"
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; echo "server stopped"; fi
  rm -rf "$DEMO"
  exit $rc
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "run as root"
for m in m1 m2 m3; do
  [ "$(incus list "$m" --project "$PROJECT" -f csv -c s)" = RUNNING ] || die "$m is not running: go tool task testbed:machines"
done

say "the bus on the host's LAN address $LAN_IP:$PORT (TLS beyond loopback; data $DEMO/data)"
"$BIN" server --data "$DEMO/data" --listen "$LAN_IP:$PORT" --http 127.0.0.1:8475 >"$DEMO/server.log" 2>&1 </dev/null &
SERVER=$!
until_ok 20 test -s "$SKEIN_CREDS" -a -s "$SKEIN_TLS_CA" || { cat "$DEMO/server.log"; die "the server did not start"; }

say "each machine joins as README \"Adding a server\" says: its creds copied, /etc/skein/agent.env, systemctl enable --now"
for n in 1 2 3; do
  m=m$n
  "$BIN" creds agent "$m" --data "$DEMO/data" -o "$DEMO/creds-$m" >/dev/null
  inm "$m" install -d -m 0700 /var/lib/skein/creds
  for f in "agent-$m.creds" ca.pem; do
    incus file push "$DEMO/creds-$m/$f" "$m/var/lib/skein/creds/$f" --project "$PROJECT" --mode 0600 >/dev/null
  done
  printf 'SKEIN_AGENT_ARGS="--name %s --prepare --subnet 10.77.20%s.0/24 --nats %s --creds /var/lib/skein/creds/agent-%s.creds --tls-ca /var/lib/skein/creds/ca.pem"\n' \
    "$m" "$n" "$SKEIN_NATS" "$m" >"$DEMO/agent-$m.env"
  incus file push "$DEMO/agent-$m.env" "$m/etc/skein/agent.env" --project "$PROJECT" >/dev/null
  echo "$m: $(cat "$DEMO/agent-$m.env")"
  inm "$m" systemctl enable skein-agent >/dev/null 2>&1
  inm "$m" systemctl restart skein-agent
done
# The images come from the bus to machines that never built them.
run "$BIN" images push app
run "$BIN" images push service
all_up() { [ "$("$BIN" servers -o json | grep -c '"status": "up"')" = 3 ]; }
until_ok 300 all_up || { "$BIN" servers; die "the machines are not up"; }
run "$BIN" servers

say "containers on three machines reach each other across them (routes kept by skein, --mesh routed)"
run "$BIN" launch skein-busybox c1 -s m1
run "$BIN" launch skein-busybox c2 -s m2
run "$BIN" launch skein-busybox c3 -s m3
run "$BIN" list
ip_of() { "$BIN" list -o json | tr -d ' \n' | grep -o "\"name\":\"$1\",[^}]*\"ipv4\":\"[0-9.]*\"" | sed 's/.*"ipv4":"\([0-9.]*\)"/\1/'; }
declare -A IPS
for c in c1 c2 c3; do IPS[$c]=$(ip_of "$c"); done
for from in 1 2 3; do
  for to in 1 2 3; do
    [ "$from" != "$to" ] || continue
    until_ok 10 inm "m$from" incus exec "c$from" -- timeout 3 wget -q -O - "http://${IPS[c$to]}/" || true
    printf '  c%s on m%s -> http://%s/ (c%s on m%s) -> %s\n' "$from" "$from" "${IPS[c$to]}" "$to" "$to" \
      "$(inm "m$from" incus exec "c$from" -- timeout 3 wget -q -O - "http://${IPS[c$to]}/" 2>&1 || echo failed)"
  done
done
echo "  from the host (not on any container subnet): $(curl -s -m 2 "http://${IPS[c1]}/" || echo 'no way to c1, as it should be')"
run incus exec m1 --project "$PROJECT" -- ip route show proto 77
run "$BIN" net
run "$BIN" net check

say "a MariaDB instance on m3, used with its DSN from a container on m1"
printf '%s\n' 'Demo-machines-pw-4' | run "$BIN" adddb mysql m3 app appdb -n db3 -a 10.77.201.0/24 -p -
run "$BIN" dbinfo db3 appdb
run "$BIN" launch skein-service dbclient -s m1
dsn=$("$BIN" dbinfo db3 appdb --dsn)
echo "  DSN: $(printf '%s' "$dsn" | sed -E 's#://([^:]+):[^@]+@#://\1:****@#')"
# mysql://USER:PASSWORD@HOST:PORT/DB, into the client's option file (no password on a command line)
printf '%s' "$dsn" | sed -E 's#^mysql://([^:]+):([^@]+)@([^:]+):([0-9]+)/(.*)$#[client]\nuser=\1\npassword=\2\nhost=\3\nport=\4\ndatabase=\5\n#' |
  inm m1 incus exec dbclient -- sh -c 'umask 077; cat > /root/.my.cnf'
until_ok 30 inm m1 incus exec dbclient -- mariadb -e 'SELECT 1' || die "the database on m3 does not answer dbclient on m1"
run incus exec m1 --project "$PROJECT" -- incus exec dbclient -- mariadb --table -e "CREATE TABLE notes (id INT PRIMARY KEY, said TEXT); INSERT INTO notes VALUES (1, 'written from m1 into m3'); SELECT * FROM notes, (SELECT @@hostname AS served_by) h"
run "$BIN" listdbs

say "a floating IP $VIP shared by m1 and m2 on their LAN; kill -9 of m1's keepalived moves it to m2"
run "$BIN" addvip m1 m2 "$VIP" -n vip1
holds() { inm "$1" ip -4 -o addr show | grep -q " $VIP/"; }
holder_is() { "$BIN" listvips | grep -q "^vip1 .* $1 "; }
until_ok 20 holds m1 || die "m1 does not hold $VIP"
until_ok 10 holder_is m1 || true
run "$BIN" listvips
# m3, a third machine on the LAN, asks for it: its ARP entry says who answered.
run incus exec m3 --project "$PROJECT" -- ping -c 1 -W 1 "$VIP"
mac() { inm "$1" cat /sys/class/net/eth0/address; }
seen_at() { inm m3 ip neigh show "$VIP" | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}'; }
echo "  m3 reaches $VIP at $(seen_at): m1's eth0 is $(mac m1), m2's $(mac m2)"
run incus exec m1 --project "$PROJECT" -- pkill -9 -x keepalived
t0=$(now_ms)
until_ok 10 holds m2 || die "m2 did not take $VIP"
echo "  m2 holds $VIP $(($(now_ms) - t0)) ms after the kill"
until_ok 5 inm m3 ping -c 1 -W 1 "$VIP" || die "$VIP does not answer m3 after the failover"
run incus exec m3 --project "$PROJECT" -- ping -c 1 -W 1 "$VIP"
echo "  m3 reaches $VIP at $(seen_at): m2's eth0 is $(mac m2)"
until_ok 15 holder_is m2 || true
run "$BIN" listvips
# m1's agent starts its keepalived again; m2 keeps the IP (no preemption).
until_ok 15 inm m1 pgrep -x keepalived || true
on=$(for m in m1 m2; do holds "$m" && echo "$m"; done | paste -sd, -)
echo "  m1's keepalived is back (pids $(inm m1 pgrep -x keepalived | paste -sd, -)); $VIP is on $on"
