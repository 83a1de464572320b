// Package nginx renders what every nginx skein runs shares: its main
// configuration file. Sites are rendered by the capability that owns them.
package nginx

import "fmt"

// nginx takes a reload asynchronously: until its old workers stop accepting,
// a new request may still be answered by the old configuration. Before and
// Settle (for svc.Component) make a reload return once the new workers have
// taken over: the workers before the reload are noted, and Settle waits (at
// most 3 s) until every worker is a new one (the old ones renamed themselves
// "is shutting down" and accept no more).
const (
	// Before lists the worker processes before a reload.
	Before = `pgrep -d' ' -f 'nginx: worker process$' || true`
	// Settle waits until they are all replaced.
	Settle = `i=0; while [ $i -lt 150 ]; do cur=$(pgrep -f 'nginx: worker process$'); ok=1; [ -n "$cur" ] || ok=0; for p in $skein_before; do echo "$cur" | grep -qx "$p" && ok=0; done; [ $ok = 1 ] && break; sleep 0.02; i=$((i+1)); done`
)

// MainPath is nginx's main configuration file in a service container.
const MainPath = "/etc/nginx/nginx.conf"

// Main renders nginx's main configuration: Debian's, with workers worker
// processes (0: one per CPU). owner names what it is for in the header
// comment ("load balancer ha1"); it comes from validated names only.
func Main(owner string, workers int) string {
	w := "auto"
	if workers > 0 {
		w = fmt.Sprint(workers)
	}
	return fmt.Sprintf(`# Written by skein for %s; skein rewrites it.
user www-data;
worker_processes %s;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
include /etc/nginx/modules-enabled/*.conf;

events {
    worker_connections 768;
}

http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log /var/log/nginx/access.log;
    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}
`, owner, w)
}
