#!/bin/sh
# Bench `slowloris`: does sacmrun's HTTPS server keep serving while slow clients hold connections?
# CONNS TLS connections (300) each send a request line and then one header byte a second, never
# finishing, and open again whenever the server closes them (bench/slowloris_clients.py attack),
# for DURATION seconds (60), against a ROLIE provider with the server's default limits (256
# connections, 64 per address, default deadlines; bench/slowloris_server.lua). Meanwhile an
# ordinary client makes a request every 0.5 s on a new connection, from the same address. Writes
# bench/out/slowloris.md and ends with
# `RATIO slowloris-answered <answered/made>`: the share of ordinary requests answered 200 within
# 1 s (higher is better; 1.0 = all; the goal is >= 0.95).
#
#   bench/slowloris.sh
#   DURATION=20 CONNS=500 bench/slowloris.sh
#
# Loopback only, ports below 32768; every process is stopped by pid when the benchmark ends
# (also on failure or Ctrl-C).
set -eu

cd "$(dirname "$0")/.."
duration=${DURATION:-60}
conns=${CONNS:-300}
interval=0.5
limit=1
out=bench/out
mkdir -p "$out"
for tool in python3 openssl curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "slowloris.sh: $tool is missing" >&2; exit 1; }
done
[ -x ./sacmrun ] || { echo "slowloris.sh: ./sacmrun is missing; run 'make' first" >&2; exit 1; }

tmp=$(mktemp -d /tmp/sacmrun-bench-slowloris-XXXXXXXXXX)
sacm_pid=""
attack_pid=""
cleanup() {
    set +e # processes ended by our SIGTERM report 143: not a failure
    [ -n "$attack_pid" ] && kill "$attack_pid" 2>/dev/null && wait "$attack_pid" 2>/dev/null
    [ -n "$sacm_pid" ] && kill "$sacm_pid" 2>/dev/null && wait "$sacm_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap 'rc=$?; cleanup; exit $rc' EXIT
trap 'exit 130' INT TERM

bench=slowloris
. bench/lib/servers.sh
self_signed_cert

port=$(free_port)

./sacmrun bench/slowloris_server.lua "$tmp/cert.pem" "$tmp/key.pem" "$tmp/grid.db" "$port" \
    >"$tmp/sacmrun.port" 2>"$tmp/sacmrun.err" &
sacm_pid=$!
auth=$(printf 'bench:bench-pw' | base64)
path=/rolie/private/results
i=0
until curl -skf --max-time 2 -H "Authorization: Basic $auth" -o /dev/null "https://127.0.0.1:$port$path" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 200 ] || ! kill -0 "$sacm_pid" 2>/dev/null; then
        echo "slowloris.sh: the sacmrun provider did not come up:" >&2
        cat "$tmp/sacmrun.err" >&2
        exit 1
    fi
    sleep 0.05
done

# The attack runs a little longer than the probe, so the probe never sees it end.
python3 bench/slowloris_clients.py attack "$port" "$conns" "$((duration + 5))" >"$tmp/attack.out" 2>&1 &
attack_pid=$!
i=0
until grep -q '^ready' "$tmp/attack.out" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -ge 600 ] || ! kill -0 "$attack_pid" 2>/dev/null; then
        echo "slowloris.sh: the slow clients did not get their connections open:" >&2
        cat "$tmp/attack.out" >&2
        exit 1
    fi
    sleep 0.05
done
echo "slowloris: $conns slow TLS connections for ${duration}s; an ordinary request every ${interval}s (answered = 200 within ${limit}s)"
probe=$(python3 bench/slowloris_clients.py probe "$port" "$duration" "$interval" "$limit" "$auth" "$path")
# the counters as the probe ended (they only grow), and the most connections open at once
stats=$(grep '^stats ' "$tmp/sacmrun.err" | tail -n 1 | sed 's/^stats //; s/ active=[0-9]*//')
peak=$(sed -n 's/^stats .*active=\([0-9]*\).*/\1/p' "$tmp/sacmrun.err" | sort -n | tail -n 1)
kill "$attack_pid" 2>/dev/null || true
wait "$attack_pid" 2>/dev/null || true
attack_pid=""
rss=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$sacm_pid/status" 2>/dev/null || echo "?")

made=$(echo "$probe" | sed -n 's/.*made=\([0-9]*\).*/\1/p')
answered=$(echo "$probe" | sed -n 's/.*answered=\([0-9]*\).*/\1/p')
median=$(echo "$probe" | sed -n 's/.*median=\([0-9.]*\).*/\1/p')
max=$(echo "$probe" | sed -n 's/.*max=\([0-9.]*\).*/\1/p')
[ -n "$made" ] && [ "$made" -gt 0 ] || { echo "slowloris.sh: the probe made no requests: $probe" >&2; exit 1; }
ratio=$(awk -v a="$answered" -v m="$made" 'BEGIN { printf "%.3f", a / m }')
version=$(./sacmrun -v 2>/dev/null || echo "sacmrun (version unknown)")

echo
printf '%-28s %s\n' "ordinary requests made" "$made"
printf '%-28s %s\n' "answered 200 within ${limit}s" "$answered"
printf '%-28s %s s / %s s\n' "latency median / max" "$median" "$max"
printf '%-28s %s\n' "server counters at the end" "$stats"
printf '%-28s %s\n' "most connections open" "$peak"
printf '%-28s %s MB\n' "server peak RSS" "$rss"
echo

cat >"$out/slowloris.md" <<MD
## slowloris

Whether sacmrun's HTTPS server keeps serving while slow clients hold connections:
$conns TLS connections each send a request line and then one header byte a second, never
finishing, and open again as soon as the server closes them (\`bench/slowloris_clients.py
attack\`), for $duration s, against a ROLIE provider (\`bench/slowloris_server.lua\`) with the
server's default limits: 256 connections, 64 per address, a 5 s handshake and 10 s headers
deadline. Meanwhile an ordinary client, from the same address, makes a request for a feed page
every $interval s on a new TLS connection; it counts as answered when a 200 arrives within
$limit s. The server sheds the connection that has waited longest without a request to make
room, rather than refusing newcomers (docs/api/http.md, Slow clients).

| ordinary requests | answered within $limit s | latency median | latency max | server peak RSS MB |
| ---: | ---: | ---: | ---: | ---: |
| $made | $answered | $median s | $max s | $rss |

Server counters at the end: $stats; at most $peak connections were open at once.

**RATIO slowloris-answered $ratio** (answered / made: here higher is better, 1.0 means every
ordinary request was answered in time; the goal is at least 0.95). Versions: $version.
MD

echo "RATIO slowloris-answered $ratio"
