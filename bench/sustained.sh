#!/bin/sh
# Bench `sustained`: continuous monitoring. N consecutive assessments (default 200) of two
# endpoints, one of them with a synthetic 1 MB packages posture, through a real grid on a private
# Prosody and then on a private ejabberd, both started from examples/servers/ (bench/sustained.lua).
# The reference is the grid's own start: the XMPP server's CPU per assessment over the last 20
# assessments divided by the first 20. Writes bench/out/sustained.md and ends with
# `RATIO sustained-prosody <last20/first20>` and `RATIO sustained-ejabberd <...>` (lower is better,
# 1.0 = flat; the aim is at most 1.25).
#
#   bench/sustained.sh              200 assessments per server
#   ASSESSMENTS=40 bench/sustained.sh   quicker, for trying it out
set -eu

cd "$(dirname "$0")/.."
n=${ASSESSMENTS:-200}
aim=1.25
out=bench/out
mkdir -p "$out"
if [ ! -x ./sacmrun ]; then
    echo "sustained.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi

load_before=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
for server in prosody ejabberd; do
    echo "sustained: $n assessments on $server"
    ./sacmrun bench/sustained.lua "$server" "$n" >"$out/sustained-$server.raw"
    tail -n 8 "$out/sustained-$server.raw"
done
load_after=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)

get() { awk -v k="$1" '$1 == k { print $2; found = 1 } END { exit !found }' "$out/sustained-$2.raw"; }
row() {
    w=$(get window "$1")
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(get "first${w}_cpu_ms" "$1")" "$(get "last${w}_cpu_ms" "$1")" \
        "$(get ratio "$1")" "$(get first_wall_ms "$1")" "$(get last_wall_ms "$1")" "$(get results "$1")"
}
verdict() { awk -v r="$(get ratio "$1")" -v a="$aim" 'BEGIN { print (r + 0 <= a) ? "PASS" : "MISS" }'; }
p_ratio=$(get ratio prosody)
e_ratio=$(get ratio ejabberd)
w=$(get window prosody)

cat >"$out/sustained.md" <<EOF
## sustained

Continuous monitoring: $n consecutive assessments (\`bench/sustained.lua\`), each collecting two
endpoints (this host with every applicable kind, and a second collector whose packages posture is
a synthetic 1 MB dpkg status file) and evaluating them with policies/. The repository, the
evaluator and both collectors are separate sacmrun processes started from grid config files; the
XMPP server is a private Prosody or ejabberd started from examples/servers/. The measure is the
server process's CPU time (utime + stime from /proc, 10 ms ticks) around each assessment. The
reference is the same grid at its start: the mean of the last $w assessments divided by the mean
of the first $w. Before protocol 1 (posture inside persisted pubsub items) Prosody's CPU per
assessment grew tenfold within a dozen assessments; now notifications are small and the nodes
transient, so nothing the server does depends on the grid's history.

| server | CPU ms/assessment, first $w | last $w | last/first | wall ms, first $w | last $w | results |
|---|---|---|---|---|---|---|
$(row prosody)
$(row ejabberd)

Load average $load_before before, $load_after after ($(nproc) cores).

**RATIO sustained-prosody $p_ratio** and **RATIO sustained-ejabberd $e_ratio** (server CPU per
assessment, last $w / first $w; lower is better, 1.0 = flat; aim at most $aim: prosody
$(verdict prosody), ejabberd $(verdict ejabberd)).
EOF

echo "RATIO sustained-prosody $p_ratio"
echo "RATIO sustained-ejabberd $e_ratio"
