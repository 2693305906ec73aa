# Sourced by the HTTP benchmarks (bench/http.sh, rolie.sh, http_client.sh, slowloris.sh): what
# they all set up the same way. The caller sets `bench` (its name, for messages) and `tmp` (its
# private directory, removed by its own cleanup).

# One self-signed P-256 certificate for 127.0.0.1 and localhost: $tmp/cert.pem, $tmp/key.pem.
self_signed_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
}

port_in_use() {
    grep -q "$(printf ':%04X ' "$1")" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Prints a free port: random in 20000-32767 (below Linux's ephemeral range), not in use.
free_port() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        p=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 12768))
        if ! port_in_use "$p"; then echo "$p"; return 0; fi
    done
    echo "$bench.sh: no free port in 20000-32767 after 10 tries" >&2
    return 1
}

# start_nginx PORT [SERVER_LINES]: nginx run privately (its config, prefix and pid file in $tmp,
# `daemon off`, one worker, keep-alive without a request limit) serving $tmp/www over TLS with
# the certificate above on 127.0.0.1:PORT; SERVER_LINES go into its server block. Sets
# nginx_pid; the caller stops it by that pid.
start_nginx() {
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    mkdir -p "$tmp/logs"
    cat >"$tmp/nginx.conf" <<CONF
# written by bench/$bench.sh
daemon off;
master_process on;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/client_body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 30s;
    server {
        listen 127.0.0.1:$1 ssl;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $tmp/www;
        ${2:-}
    }
}
CONF
    "$NGINX" -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/logs/error.log" >"$tmp/nginx.out" 2>&1 &
    nginx_pid=$!
}
