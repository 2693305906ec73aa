#!/bin/sh
# Bench `http_client`: requests per second of sacmrun's HTTPS client (http.request, sequential
# GETs from one task) with keep-alive, the default, and with keep_alive = false (a new TCP
# connection and TLS handshake per request), against sacmrun's own HTTPS server in another
# process (bench/http_server.lua) on loopback. The two modes take turns round by round, which
# goes first alternates. Prints a table, writes bench/out/http_client.md and ends with
# `RATIO http-client-keepalive <requests/s with keep-alive / requests/s without>` (higher is
# better: how much a kept connection saves).
#
#   bench/http_client.sh                     5 rounds of 500 requests per mode (a few seconds)
#   ROUNDS=9 REQUESTS=2000 bench/http_client.sh
set -eu

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
requests=${REQUESTS:-500}
out=bench/out
mkdir -p "$out"
if ! command -v openssl >/dev/null 2>&1; then
    echo "http_client.sh: openssl is missing (Debian package openssl)" >&2
    exit 1
fi
if [ ! -x ./sacmrun ]; then
    echo "http_client.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi

tmp=$(mktemp -d /tmp/sacmrun-bench-httpc-XXXXXXXXXX)
sacm_pid=""
cleanup() {
    set +e # the server ends by our SIGTERM (143): not a failure of the benchmark
    [ -n "$sacm_pid" ] && kill "$sacm_pid" 2>/dev/null && wait "$sacm_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap 'rc=$?; cleanup; exit $rc' EXIT
trap 'exit 130' INT TERM

bench=http_client
. bench/lib/servers.sh
# A self-signed P-256 certificate for 127.0.0.1, which the client verifies as its own CA file.
self_signed_cert
printf 'hello, world\n' >"$tmp/body"

./sacmrun bench/http_server.lua "$tmp/cert.pem" "$tmp/key.pem" "$tmp/body" >"$tmp/port" 2>"$tmp/server.err" &
sacm_pid=$!
i=0
while [ ! -s "$tmp/port" ] && [ "$i" -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
port=$(head -n 1 "$tmp/port" 2>/dev/null || true)
if [ -z "$port" ]; then
    echo "http_client.sh: the sacmrun server did not come up:" >&2
    cat "$tmp/server.err" >&2
    exit 1
fi

echo "http_client: $rounds rounds of $requests sequential GETs per mode, taking turns (after a warm-up)"
load_before=$(cut -d " " -f 1-3 /proc/loadavg)
if ! ./sacmrun bench/http_client.lua "https://127.0.0.1:$port/x" "$tmp/cert.pem" "$rounds" "$requests" \
    >"$tmp/client.out" 2>"$tmp/client.err"; then
    echo "http_client.sh: the client failed:" >&2
    cat "$tmp/client.err" "$tmp/client.out" >&2
    exit 1
fi
load_after=$(cut -d " " -f 1-3 /proc/loadavg)

median() { # mode: the median requests/s of its rounds
    awk -v m="$1" '$1 == "ROUND" && $3 == m { print $4 }' "$tmp/client.out" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
all() { # mode: each round's requests/s, in order
    awk -v m="$1" '$1 == "ROUND" && $3 == m { printf "%s%.0f", sep, $4; sep = " " }' "$tmp/client.out"
}
k_rps=$(median keepalive)
c_rps=$(median close)
ratio=$(awk -v k="$k_rps" -v c="$c_rps" 'BEGIN { printf "%.2f", k / c }')
pool=$(grep '^POOL ' "$tmp/client.out" | cut -d " " -f 2-)
version=$(./sacmrun -v 2>/dev/null || echo "sacmrun (version unknown)")
openssl_version=$(openssl version | cut -d " " -f 1-2)

echo
printf '%-40s %14s   %s\n' "client" "median req/s" "rounds"
printf '%-40s %14.0f   %s\n' "http.request, keep-alive (default)" "$k_rps" "$(all keepalive)"
printf '%-40s %14.0f   %s\n' "http.request, keep_alive = false" "$c_rps" "$(all close)"
echo "pool counters over the measured rounds: $pool"
echo

cat >"$out/http_client.md" <<MD
## http_client

Requests per second of sacmrun's HTTPS client, \`http.request\` from one task, one GET after
the other to \`https://127.0.0.1:PORT/x\` (13-byte body) served by \`bench/http_server.lua\` in
another sacmrun process, the certificate verified against a CA file each time. With keep-alive
(the default) the requests share one connection; with \`keep_alive = false\` each pays for a
TCP connection and a TLS handshake (P-256, $openssl_version), on both sides.

$rounds rounds of $requests requests per mode after a warm-up of each; the modes take turns and
which goes first alternates; every keep-alive round starts without a kept connection. The
median requests/s over the rounds:

| client | median requests/s | each round |
| --- | ---: | --- |
| \`http.request\`, keep-alive | $(printf '%.0f' "$k_rps") | $(all keepalive) |
| \`http.request\`, \`keep_alive = false\` | $(printf '%.0f' "$c_rps") | $(all close) |

**RATIO http-client-keepalive $ratio** (requests/s with keep-alive divided by requests/s
without: higher is better, 1.0 would mean a kept connection saves nothing). Pool counters over
the measured rounds: $pool. Load average (1, 5, 15 min) was $load_before before and $load_after
after, on $(nproc) cores, which client and server share. Versions: $version.
MD

echo "RATIO http-client-keepalive $ratio"
