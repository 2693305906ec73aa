#!/bin/sh
# Bench `rolie`: requests per second for one page of a ROLIE feed served by sacmrun (the private
# results collection of a repository of COUNT results: Basic auth, then the page as kept by the
# feed cache, which holds it until the store changes) next to nginx serving the same
# bytes as a static file, measured with wrk in the same run. Both over TLS on loopback, one
# process each (nginx: one worker), keep-alive; they take turns and which goes first alternates.
# The page is one from the middle of the feed (?before=COUNT/2), so the cursor has to seek.
# Writes bench/out/rolie.md and ends with
# `RATIO rolie-vs-nginx <nginx requests/s / sacmrun requests/s>` (lower is better; 1.0 = as fast).
#
#   bench/rolie.sh                                  5 rounds of 5 s per server, 10 connections
#   ROUNDS=3 DURATION=10 CONNS=50 COUNT=100000 bench/rolie.sh
#
# nginx runs privately (its own config and prefix in a temporary directory, a loopback port,
# `daemon off`) and is stopped by pid when the benchmark ends, also on failure or Ctrl-C.
set -eu

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
duration=${DURATION:-5}
conns=${CONNS:-10}
count=${COUNT:-20000}
out=bench/out
mkdir -p "$out"
for tool in wrk nginx openssl curl; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "rolie.sh: $tool is missing (Debian packages wrk, nginx-light, openssl, curl)" >&2
        exit 1
    fi
done
[ -x ./sacmrun ] || { echo "rolie.sh: ./sacmrun is missing; run 'make' first" >&2; exit 1; }

tmp=$(mktemp -d /tmp/sacmrun-bench-rolie-XXXXXXXXXX)
sacm_pid=""
nginx_pid=""
cleanup() {
    set +e # servers ended by our SIGTERM report 143: not a failure
    [ -n "$sacm_pid" ] && kill "$sacm_pid" 2>/dev/null && wait "$sacm_pid" 2>/dev/null
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap 'rc=$?; cleanup; exit $rc' EXIT
trap 'exit 130' INT TERM

bench=rolie
. bench/lib/servers.sh
self_signed_cert
mkdir -p "$tmp/www" "$tmp/logs"
chmod 0755 "$tmp" "$tmp/www" # nginx's worker runs as nobody when started as root

nginx_port=$(free_port)

echo "rolie: loading $count results into a repository"
./sacmrun bench/rolie_server.lua "$tmp/cert.pem" "$tmp/key.pem" "$tmp/grid.db" "$count" \
    >"$tmp/sacmrun.port" 2>"$tmp/sacmrun.err" &
sacm_pid=$!
i=0
while [ ! -s "$tmp/sacmrun.port" ] && [ "$i" -lt 1200 ]; do
    kill -0 "$sacm_pid" 2>/dev/null || break
    sleep 0.05; i=$((i + 1))
done
sacm_port=$(head -n 1 "$tmp/sacmrun.port" 2>/dev/null || true)
page="/rolie/private/results?before=$((count / 2))"
auth="Authorization: Basic $(printf 'bench:bench-pw' | base64)"
if [ -z "$sacm_port" ] || ! curl -skf --max-time 5 -H "$auth" -o "$tmp/www/feed.xml" \
        "https://127.0.0.1:$sacm_port$page"; then
    echo "rolie.sh: the sacmrun provider did not come up:" >&2
    cat "$tmp/sacmrun.err" >&2
    exit 1
fi
chmod 0644 "$tmp/www/feed.xml"

start_nginx "$nginx_port" \
    'location = /rolie/private/results { default_type "application/atom+xml;type=feed"; try_files /feed.xml =404; }'
i=0
until curl -sk --max-time 2 -o "$tmp/nginx.xml" "https://127.0.0.1:$nginx_port$page" 2>/dev/null &&
        cmp -s "$tmp/nginx.xml" "$tmp/www/feed.xml"; do
    i=$((i + 1))
    if [ "$i" -ge 100 ]; then
        echo "rolie.sh: nginx did not come up with the same bytes:" >&2
        tail -n 5 "$tmp/nginx.out" "$tmp/logs/error.log" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 0.05
done
bytes=$(wc -c <"$tmp/www/feed.xml")
entries=$(grep -o '<entry>' "$tmp/www/feed.xml" | wc -l)

echo "rolie: a $bytes-byte page of $entries entries, $rounds rounds of ${duration}s per server, wrk -t1 -c$conns"
bench=rolie path=$page raw=$out/rolie.raw wrk_header=$auth
. bench/lib/wrk_pair.sh
run_rounds
summarize
version=$(./sacmrun -v 2>/dev/null || echo "sacmrun (version unknown)")
nginx_version=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')

echo
printf '%-36s %14s %24s %12s\n' "server" "median req/s" "rounds" "peak RSS MB"
printf '%-36s %14.0f %24s %12s\n' "sacmrun (ROLIE feed from SQLite)" "$s_rps" "$s_all" "$sacm_rss"
printf '%-36s %14.0f %24s %12s\n' "nginx (same bytes, static file)" "$n_rps" "$n_all" "$nginx_rss"
echo

cat >"$out/rolie.md" <<MD
## rolie

Requests per second for one page of a ROLIE feed: sacmrun's provider (\`bench/rolie_server.lua\`:
\`rolie.serve\` over a repository of $count evaluation results, page size 50, HTTP Basic with a
PBKDF2 password whose check is cached) against nginx ($nginx_version, one worker) serving the
same $bytes bytes ($entries entries) as a static file, both over TLS on loopback, measured by
\`wrk -t1 -c$conns -d${duration}s\` with the same Authorization header, in the same run. The page
is \`?before=$((count / 2))\`, from the middle of the feed. Every sacmrun request authenticates;
nothing is written during the run, so after the first request the page (body, ETag, dates) comes
from the feed cache (\`sacm.rolie.cache\`), which keeps it until the store's change counter moves.
What a miss costs (the cursor query, the Atom document assembled, hashed for its ETag) is in
docs/performance.md's notes.

$rounds rounds of ${duration} s per server after a 1 s warm-up each, taking turns. Requests/s are
the median over the rounds; peak RSS is \`VmHWM\` of the serving process (nginx: its worker).

| server | median requests/s | each round | peak RSS MB |
| --- | ---: | --- | ---: |
| sacmrun (ROLIE feed from SQLite) | $(printf '%.0f' "$s_rps") | $s_all | $sacm_rss |
| nginx (static file, 1 worker) | $(printf '%.0f' "$n_rps") | $n_all | $nginx_rss |

**RATIO rolie-vs-nginx $ratio** (nginx's requests/s divided by sacmrun's: lower is better, 1.0
would be as fast as serving a file). Each round: $round_ratios. Load average was $load_before
before and $load_after after, on $(nproc) cores shared by wrk and the server. Versions: $version.

Where a request's cost sits, in instructions counted by callgrind (load-independent; the
\`rolie_cost\` section and bench/rolie_cost.sh): a cached 67 KB page costs 0.59M instructions
against 0.43M for the same bytes as a constant body from a Lua handler; before the feed cache every
request cost 4.5M (the SHA-256 for the ETag a third of it, 50 rows turned into Lua tables, the
document assembled). Of a cached 200, about 0.17M is OpenSSL encrypting the bytes (the same for
nginx), the response is copied into OpenSSL's records and once into the buffer libuv writes, and
the Lua handler (path split, Basic credentials looked up in the check cache, the store's version
read with \`PRAGMA data_version\`, a header table) is the rest. A miss (after any write) still
costs the full 4.5M once per page and view. Wall-clock runs before the allocator's thresholds were
fixed (runtime/main.c) swung between 2,300 and 7,400 requests/s from round to round: glibc gave the
heap top back to the kernel after each response and faulted it in again for the next (1,432 brk
calls in 3 s against 13 now).
MD

echo "round ratios: $round_ratios"
echo "RATIO rolie-vs-nginx $ratio"
