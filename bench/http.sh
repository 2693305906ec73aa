#!/bin/sh
# Bench `http`: requests per second of sacmrun's HTTPS server (sacm.http with a handler that
# returns a fixed body) next to nginx serving the same bytes as a static file, measured with wrk
# in the same run. Both serve over TLS on loopback from one process (nginx: one worker), with
# keep-alive; they take turns round by round, and which goes first alternates. Prints a table,
# writes bench/out/http.md and ends with
# `RATIO http-vs-nginx <nginx requests/s / sacmrun requests/s>` (lower is better; 1.0 = as fast).
#
#   bench/http.sh                                   5 rounds of 5 s per server, 10 connections
#                                                   (about a minute)
#   ROUNDS=5 DURATION=10 CONNS=50 bench/http.sh
#
# nginx runs privately: its own config, prefix and pid file in a temporary directory, a loopback
# port, `daemon off`, stopped by pid when the benchmark ends (also on failure or Ctrl-C).
set -eu

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
duration=${DURATION:-5}
conns=${CONNS:-10}
out=bench/out
mkdir -p "$out"
for tool in wrk nginx openssl curl; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "http.sh: $tool is missing (Debian packages wrk, nginx-light, openssl, curl)" >&2
        exit 1
    fi
done
if [ ! -x ./sacmrun ]; then
    echo "http.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi

tmp=$(mktemp -d /tmp/sacmrun-bench-http-XXXXXXXXXX)
sacm_pid=""
nginx_pid=""
cleanup() {
    set +e # a server that ended by our SIGTERM reports 143: not a failure of the benchmark
    [ -n "$sacm_pid" ] && kill "$sacm_pid" 2>/dev/null && wait "$sacm_pid" 2>/dev/null
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap 'rc=$?; cleanup; exit $rc' EXIT
trap 'exit 130' INT TERM

bench=http
. bench/lib/servers.sh
# One self-signed P-256 certificate for both (wrk does not verify; the spec does that).
self_signed_cert
mkdir -p "$tmp/www" "$tmp/logs"
printf 'hello, world\n' >"$tmp/www/x"
# Run as root, nginx's worker drops to nobody: it must be able to read the file it serves (the
# key stays 0600; the master reads it before dropping privileges).
chmod 0755 "$tmp" "$tmp/www"
chmod 0644 "$tmp/www/x"

nginx_port=$(free_port)
start_nginx "$nginx_port"

./sacmrun bench/http_server.lua "$tmp/cert.pem" "$tmp/key.pem" "$tmp/www/x" >"$tmp/sacmrun.port" 2>"$tmp/sacmrun.err" &
sacm_pid=$!

# Both must answer the same bytes before anything is measured.
wait_up() { # url
    i=0
    while [ "$i" -lt 100 ]; do
        if body=$(curl -sk --max-time 2 "$1" 2>/dev/null) && [ "$body" = "hello, world" ]; then return 0; fi
        sleep 0.05
        i=$((i + 1))
    done
    return 1
}
i=0
while [ ! -s "$tmp/sacmrun.port" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
sacm_port=$(head -n 1 "$tmp/sacmrun.port" 2>/dev/null || true)
if [ -z "$sacm_port" ] || ! wait_up "https://127.0.0.1:$sacm_port/x"; then
    echo "http.sh: the sacmrun server did not come up:" >&2
    cat "$tmp/sacmrun.err" >&2
    exit 1
fi
if ! wait_up "https://127.0.0.1:$nginx_port/x"; then
    echo "http.sh: nginx did not come up:" >&2
    tail -n 5 "$tmp/nginx.out" "$tmp/logs/error.log" >&2 2>/dev/null || true
    exit 1
fi

echo "http: $rounds rounds of ${duration}s per server, wrk -t1 -c$conns, taking turns (after a 1 s warm-up each)"
path=/x raw=$out/http.raw
. bench/lib/wrk_pair.sh
run_rounds
summarize
version=$(./sacmrun -v 2>/dev/null || echo "sacmrun (version unknown)")
nginx_version=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
openssl_version=$(openssl version | cut -d " " -f 1-2)

echo
printf '%-34s %14s %14s %12s\n' "server" "median req/s" "rounds" "peak RSS MB"
printf '%-34s %14.0f %14s %12s\n' "sacmrun (sacm.http, Lua handler)" "$s_rps" "$s_all" "$sacm_rss"
printf '%-34s %14.0f %14s %12s\n' "nginx (static file, 1 worker)" "$n_rps" "$n_all" "$nginx_rss"
echo

cat >"$out/http.md" <<MD
## http

Requests per second of sacmrun's HTTPS server against nginx, both over TLS on loopback, measured
by \`wrk -t1 -c$conns -d${duration}s https://127.0.0.1:PORT/x\` in the same run. sacmrun runs
\`bench/http_server.lua\`: \`sacm.http.listen\` with a Lua handler that returns the 13-byte body
\`hello, world\\n\` with a Content-Type; every request is parsed by http-parser, becomes a Lua
table, runs its handler as a task and gets a response head built in Lua. nginx ($nginx_version,
one worker process, access log off, keep-alive without a request limit) serves the same bytes
from a static file. One self-signed P-256 certificate for both; $openssl_version. wrk keeps its
connections open, so this measures requests, not TLS handshakes.

$rounds rounds of ${duration} s per server after a 1 s warm-up each; the two take turns and which
goes first alternates. Requests/s are the median over the rounds; peak RSS is \`VmHWM\` of the
serving process (nginx: its worker) at the end.

| server | median requests/s | each round | peak RSS MB |
| --- | ---: | --- | ---: |
| sacmrun (\`sacm.http\`, Lua handler) | $(printf '%.0f' "$s_rps") | $s_all | $sacm_rss |
| nginx (static file, 1 worker) | $(printf '%.0f' "$n_rps") | $n_all | $nginx_rss |

**RATIO http-vs-nginx $ratio** (nginx's requests/s divided by sacmrun's, so that, as everywhere
in this file, lower is better and 1.0 means as fast as the reference). The ratio of each round:
$round_ratios. Load average (1, 5, 15 min) was $load_before before and $load_after after, on
$(nproc) cores; wrk and the server share them, so on a busy machine the rounds differ a lot:
compare ratios from runs on a quiet one. Versions: $version.
MD

echo "round ratios: $round_ratios"
echo "RATIO http-vs-nginx $ratio"
