#!/usr/bin/env bash
# The demo: a skein server and agents s1-s3 on the test bed, then the seed's
# example as far as skein builds it today. Leaves the cluster running.
#   bash tests/demo.sh        run (again: restarts the cluster, keeps nothing)
#   bash tests/demo.sh stop   stop the demo cluster and delete its containers
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=/var/lib/skein-demo
BIN=$ROOT/bin/skein
PORT=4222
export SKEIN_NATS=nats://127.0.0.1:$PORT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

stop_all() {
  for f in "$DEMO"/agent-*.pid "$DEMO"/server.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  bash tests/testbed/reset.sh >/dev/null
}

if [ "${1:-}" = stop ]; then stop_all; echo "demo stopped"; exit 0; fi

mkdir -p "$DEMO/logs"
stop_all
rm -rf "$DEMO/data"

say "starting skein server on 127.0.0.1:$PORT (data $DEMO/data); its live dashboard on http://127.0.0.1:8474/ (ssh -L 8474:127.0.0.1:8474 to see it from afar)"
setsid "$BIN" server --data "$DEMO/data" --listen "127.0.0.1:$PORT" >"$DEMO/logs/server.log" 2>&1 < /dev/null &
echo $! >"$DEMO/server.pid"
# The bus refuses anonymous clients: the CLI uses the admin's credentials the
# server writes, each agent credentials of its own (skein creds).
export SKEIN_CREDS=$DEMO/data/auth/admin.creds
for _ in $(seq 1 100); do [ -s "$SKEIN_CREDS" ] && break; sleep 0.1; done
for i in 1 2 3; do
  "$BIN" creds agent "s$i" --data "$DEMO/data" -o "$DEMO/creds" >/dev/null
  setsid "$BIN" agent --name "s$i" --network "skeinbr$i" --incus-project "skein-s$i" --pool skein --state "$DEMO/agent-s$i" \
    --creds "$DEMO/creds/agent-s$i.creds" >"$DEMO/logs/agent-s$i.log" 2>&1 < /dev/null &
  echo $! >"$DEMO/agent-s$i.pid"
done
for _ in $(seq 1 100); do
  n=$("$BIN" servers -o json 2>/dev/null | grep -c '"status": "up"' || true)
  [ "$n" = 3 ] && break
  sleep 0.2
done

say "three servers, each with its own container subnet"
run "$BIN" servers

say "a round trip to each agent"
for s in s1 s2 s3; do run "$BIN" ping "$s"; done

say "five containers c1..c5 across s1..s3 (the seed's example cluster)"
run "$BIN" launch skein-busybox c1 -s s1
run "$BIN" launch skein-busybox c2 -s s1 --ip 10.77.1.20
run "$BIN" launch skein-busybox c3 -s s2
run "$BIN" launch skein-busybox c4 -s s2
run "$BIN" launch skein-busybox c5 -s s3
run "$BIN" list

say "each answers HTTP on port 80 with its name"
"$BIN" list -o json | grep '"ipv4"' | sed 's/.*"ipv4": "\(.*\)".*/\1/' | while read -r ip; do
  printf '  http://%s/ -> %s\n' "$ip" "$(curl -s --max-time 3 "http://$ip/")"
done

say "a container stopped and started behind skein's back, with the incus CLI"
run incus stop c3 --project skein-s2
run incus start c3 --project skein-s2
for _ in $(seq 1 50); do "$BIN" list -s s2 | grep -q 'c3.*Running.*10\.' && break; sleep 0.2; done
run "$BIN" list -s s2

say "what the cluster told its subscribers"
run "$BIN" events --type 'container.*'

say "service discovery: a Consul endpoint on s1, wordpress published by c1 and c2"
run "$BIN" addep s1 10.77.1.10
run "$BIN" addservice c1 wordpress 80
run "$BIN" addservice c2 wordpress 80
run "$BIN" addcheck c2 web tcp 80 --interval 2s
for _ in $(seq 1 50); do [ "$(dig +short @10.77.1.10 -p 8600 wordpress.service.consul | wc -l)" = 2 ] && break; sleep 0.2; done
run "$BIN" services
echo "  from inside c5 on s3:"
incus exec c5 --project skein-s3 -- nslookup wordpress.service.consul | sed 's/^/    /'
run incus stop c1 --project skein-s1
sleep 1
echo "  after c1 stopped, wordpress.service.consul -> $(dig +short @10.77.1.10 -p 8600 wordpress.service.consul | tr '\n' ' ')"
run incus start c1 --project skein-s1

say "a haproxy load balancer on s1 in front of c3, c4, c5, published on host port 8080"
run "$BIN" addlb haproxy s1 -n ha1
ips=$("$BIN" list -o json | tr -d ' \n' | grep -o '"name":"c[345]","server":"s[0-9]","status":"Running","ipv4":"[0-9.]*"' | sed 's/.*"name":"\(c[345]\)".*"ipv4":"\([0-9.]*\)"/\1:\2:80/')
run "$BIN" addbackends ha1 $ips
run "$BIN" pub s1:ha1 80 --host-port 8080
for _ in $(seq 1 50); do curl -s --max-time 1 http://127.0.0.1:8080/ >/dev/null && break; sleep 0.2; done
echo "  six requests to http://127.0.0.1:8080/ -> $(for i in 1 2 3 4 5 6; do curl -s --max-time 2 http://127.0.0.1:8080/ | tr -d '\n'; echo -n ' '; done)"
run "$BIN" listlbs

say "a web server on s2 publishing apps by URL: c3 by container name, wordpress by its Consul name, c4 over HTTPS"
run "$BIN" addws s2 -n web1
run "$BIN" pubapp web1 myapp.org c3:80
run "$BIN" pubapp web1 mywordpress.org wordpress.service.consul:80
run "$BIN" pubapp web1 secure.org c4:80 -s
run "$BIN" pub s2:web1 80 --host-port 8081
run "$BIN" pub s2:web1 443 --host-port 8443
"$BIN" wsca web1 > "$DEMO/web1-ca.pem"
for _ in $(seq 1 50); do curl -s --max-time 1 --resolve myapp.org:8081:127.0.0.1 http://myapp.org:8081/ >/dev/null && break; sleep 0.2; done
echo "  http://myapp.org:8081/       -> $(curl -s --max-time 2 --resolve myapp.org:8081:127.0.0.1 http://myapp.org:8081/)"
echo "  http://mywordpress.org:8081/ -> $(curl -s --max-time 2 --resolve mywordpress.org:8081:127.0.0.1 http://mywordpress.org:8081/)"
echo "  https://secure.org:8443/     -> $(curl -s --max-time 2 --cacert "$DEMO/web1-ca.pem" --resolve secure.org:8443:127.0.0.1 https://secure.org:8443/) (verified with skein wsca web1)"
echo "  http://secure.org:8081/      -> $(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' --max-time 2 --resolve secure.org:8081:127.0.0.1 http://secure.org:8081/)"
run "$BIN" listws

say "databases: MariaDB on s1 with a user and its database, used with its DSN from a container on s3"
printf '%s\n' 'Demo-wp-pass-9' | run "$BIN" adddb mysql s1 wordpress wordpress -n mysql-1 -a 10.77.0.0/16 -p -
run "$BIN" dbinfo mysql-1 wordpress
run "$BIN" launch skein-service dbclient -s s3
dsn=$("$BIN" dbinfo mysql-1 wordpress --dsn)
# mysql://USER:PASSWORD@HOST:PORT/DB, into the client's option file (no password on a command line)
cnf=$(printf '%s' "$dsn" | sed -E 's#^mysql://([^:]+):([^@]+)@([^:]+):([0-9]+)/(.*)$#[client]\nuser=\1\npassword=\2\nhost=\3\nport=\4\ndatabase=\5#')
printf '%b\n' "$cnf" | incus exec dbclient --project skein-s3 -- sh -c 'cat > /root/.my.cnf && chmod 600 /root/.my.cnf'
for _ in $(seq 1 50); do incus exec dbclient --project skein-s3 -- mariadb -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
run incus exec dbclient --project skein-s3 -- mariadb --table -e "CREATE TABLE posts (id INT PRIMARY KEY, title TEXT); INSERT INTO posts VALUES (1, 'hello from s3'); SELECT * FROM posts"
run "$BIN" backupdb mysql-1 wordpress
run "$BIN" listdbs

say "the job scheduler: six instances of the app, at most two per server, behind a load balancer; then a rolling upgrade"
run "$BIN" addlb haproxy s3 -n jobs-lb
run "$BIN" addjob skein-busybox 6 -r 2 --name web --service web --port 80 --lb jobs-lb --plan
run "$BIN" addjob skein-busybox 6 -r 2 --name web --service web --port 80 --lb jobs-lb
run "$BIN" listjobs
run "$BIN" upgradejob web -i 2
run "$BIN" listjobs

say "bad input is refused with the fix"
run "$BIN" pubapp web1 'a.com; location / {}' c3:80 || true
run "$BIN" launch skein-busybox c6 -s s2 --ip 10.77.1.30 || true
run "$BIN" launch skein-busybox c1 -s s3 || true
run "$BIN" addjob skein-busybox 7 -r 2 --name web2 || true

cat <<MSG

The demo cluster is still running:
  bin/skein servers | list | events --follow       (SKEIN_NATS=$SKEIN_NATS SKEIN_CREDS=$SKEIN_CREDS)
  logs in $DEMO/logs/
  nats subject for events: skein.event.<server>.<type>
  Consul UI: http://10.77.1.10:8500/ui
  load balancer ha1: http://127.0.0.1:8080/
  web server web1: curl --resolve myapp.org:8081:127.0.0.1 http://myapp.org:8081/
  job web: bin/skein listjobs; bin/skein upgradejob web -i 5
  database mysql-1: bin/skein dbinfo mysql-1 wordpress --dsn; bin/skein backups
  floating IPs need servers with a LAN of their own: go tool task demo:machines
  stop it with: bash tests/demo.sh stop
MSG
