// Package nginx renders what every nginx skein runs shares: its main
// configuration file. Sites are rendered by the capability that owns them.
package nginx

import "fmt"

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
