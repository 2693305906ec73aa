#!/bin/sh
# Bench `connect`: what one XMPP login costs (TCP, STARTTLS verified against the grid's CA file,
# SASL SCRAM, bind) to a private Prosody, sacm.xmpp next to a plain libstrophe client
# (bench/connect_ref.c, built here), N logins in a row each, taking turns (bench/connect.lua).
# Writes bench/out/connect.md and ends with
#   RATIO connect-cpu-vs-c <sacmrun CPU per login / the C client's> (lower is better)
#
#   bench/connect.sh                    3 rounds of 20 logins per client
#   ROUNDS=1 LOGINS=5 bench/connect.sh  quicker
set -eu

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
logins=${LOGINS:-20}
out=bench/out
mkdir -p "$out"
if [ ! -x ./sacmrun ]; then
    echo "connect.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi
ref=$out/connect_ref
if [ ! -x "$ref" ] || [ -n "$(find bench/connect_ref.c -newer "$ref")" ]; then
    # shellcheck disable=SC2046 # pkg-config's words are meant to split
    ${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$ref" bench/connect_ref.c $(pkg-config --cflags --libs libstrophe)
fi

load_before=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
raw=$out/connect.raw
echo "connect: $rounds rounds of $logins logins per client"
./sacmrun bench/connect.lua "$ref" "$logins" "$rounds" >"$raw"
grep '^impl=' "$raw"
load_after=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)

get() { awk -v k="$1" '$1 == k { print $2; found = 1 } END { exit !found }' "$raw"; }
s_cpu=$(get sacmrun_cpu_ms) s_wall=$(get sacmrun_wall_ms) c_cpu=$(get c_cpu_ms) c_wall=$(get c_wall_ms)
ratio=$(get ratio) wall_ratio=$(get wall_ratio)

cat >"$out/connect.md" <<EOF
## connect

What one XMPP login costs: TCP to a private Prosody on loopback, STARTTLS with the server's
certificate verified against the grid's CA file, SASL SCRAM-SHA-1, resource binding, from the
connect call to the connected event. \`sacm.xmpp.connect\` in \`./sacmrun bench/connect.lua\` next to
\`bench/connect_ref.c\`, a plain libstrophe client with the same CA file on its own select() loop;
$logins logins in a row per client and round, $rounds rounds, taking turns. Medians of the rounds'
medians:

| client | CPU per login, ms | wall per login, ms |
| --- | ---: | ---: |
| sacmrun | $s_cpu | $s_wall |
| C libstrophe | $c_cpu | $c_wall |

**RATIO connect-cpu-vs-c $ratio** (sacmrun CPU per login / the C client's; lower is better;
wall: $wall_ratio)

Most of the C client's time is OpenSSL parsing the system's CA bundle (Debian's
ca-certificates, about 140 certificates): libstrophe 0.12 loads it into every connection's
SSL_CTX before the CA file it was given, and trusts both. sacmrun keeps a connection that names
a cafile or capath to those anchors (runtime/xmpp_trust.c), which is what its documentation
promises and, here, the difference.

Load average (1, 5, 15 min) was $load_before before and $load_after after, on $(nproc) cores.
EOF
echo "wrote $out/connect.md"
echo "RATIO connect-cpu-vs-c $ratio"
