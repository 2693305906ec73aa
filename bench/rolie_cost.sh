#!/bin/sh
# Bench `rolie_cost`: instructions per ROLIE feed page request, counted by callgrind (so the
# number does not move with the machine's load), next to sacmrun's HTTPS server answering the
# same bytes as a constant body (bench/http_server.lua) over the same TLS path. Each server runs
# under callgrind with counting switched on once it is up (the ROLIE one after loading 2000
# results), answers N and, in a second run, 20 requests of one URL on one keep-alive curl
# connection; (count(N) - count(20)) / (N - 20) is one request's cost. Writes
# bench/out/rolie_cost.md and ends with `RATIO rolie-cost-vs-constant <page / constant body>`
# (lower is better; 1.0 = a cached page costs no more than a fixed body of its size).
#
#   bench/rolie_cost.sh            N = 220
#   N=420 bench/rolie_cost.sh
set -eu
cd "$(dirname "$0")/.."
n=${N:-220}
out=bench/out
mkdir -p "$out"
[ "$n" -gt 20 ] || { echo "rolie_cost.sh: N must be more than 20" >&2; exit 2; }
for tool in valgrind callgrind_control curl openssl; do
    command -v "$tool" >/dev/null 2>&1 ||
        { echo "rolie_cost.sh: $tool is missing (Debian packages valgrind, curl, openssl)" >&2; exit 1; }
done
[ -x ./sacmrun ] || { echo "rolie_cost.sh: ./sacmrun is missing; run 'make' first" >&2; exit 1; }
tmp=$(mktemp -d /tmp/sacmrun-bench-rolie-cost-XXXXXXXXXX)
pid=""
cleanup() {
    set +e # the servers end by our SIGTERM
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap 'rc=$?; cleanup; exit $rc' EXIT
trap 'exit 130' INT TERM
bench=rolie_cost
. bench/lib/servers.sh
self_signed_cert
auth="Authorization: Basic $(printf 'bench:bench-pw' | base64)"

# count REQUESTS PATH SCRIPT ARGS... -> instructions from the server being up until it stopped
count() {
    requests=$1 path=$2
    shift 2
    rm -f "$tmp/grid.db"* "$tmp/port"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.out" \
        ./sacmrun "$@" >"$tmp/port" 2>"$tmp/err" &
    pid=$!
    i=0
    while [ ! -s "$tmp/port" ]; do
        kill -0 "$pid" 2>/dev/null && [ "$i" -lt 3000 ] ||
            { echo "rolie_cost.sh: $1 did not come up:" >&2; cat "$tmp/err" >&2; exit 1; }
        sleep 0.05; i=$((i + 1))
    done
    url="https://127.0.0.1:$(head -n 1 "$tmp/port")$path"
    callgrind_control -i on "$pid" >/dev/null 2>&1
    args=""; j=0
    while [ "$j" -lt "$requests" ]; do args="$args -o $tmp/body $url"; j=$((j + 1)); done
    # shellcheck disable=SC2086 # one URL per word
    curl -skf -H "$auth" $args
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    awk '/^(summary|totals):/ { print $2; exit }' "$tmp/cg.out"
}
per_request() { # path script args...
    big=$(count "$n" "$@")
    small=$(count 20 "$@")
    echo $(( (big - small) / (n - 20) ))
}

page=/rolie/private/results?before=1000
rolie=$(per_request "$page" bench/rolie_server.lua "$tmp/cert.pem" "$tmp/key.pem" "$tmp/grid.db" 2000)
cp "$tmp/body" "$tmp/page.xml"
size=$(wc -c <"$tmp/page.xml")
constant=$(per_request /x bench/http_server.lua "$tmp/cert.pem" "$tmp/key.pem" "$tmp/page.xml")
cmp -s "$tmp/body" "$tmp/page.xml" || { echo "rolie_cost.sh: the constant server did not answer the page's bytes" >&2; exit 1; }
ratio=$(awk -v a="$rolie" -v b="$constant" 'BEGIN { printf "%.2f", a / b }')
version=$(./sacmrun -v 2>/dev/null || echo "sacmrun (version unknown)")

printf '%-44s %14s\n' "request" "instructions"
printf '%-44s %14s\n' "ROLIE feed page, from the feed cache" "$rolie"
printf '%-44s %14s\n' "the same bytes as a constant body" "$constant"

cat >"$out/rolie_cost.md" <<MD
## rolie_cost

Instructions per request (callgrind; the same for the same binary and input whatever else the
machine runs) of one ROLIE feed page of $size bytes (50 entries, \`?before=1000\` of a repository
of 2000 results, HTTP Basic, the page from the feed cache) next to sacmrun's HTTPS server
answering the same bytes as a constant body from a Lua handler (\`bench/http_server.lua\`), both
over TLS on one keep-alive curl connection: a run of $n requests minus a run of 20, divided by
$((n - 20)), so start-up, loading and the handshake cancel out.

| request | instructions |
| --- | ---: |
| ROLIE feed page, from the feed cache | $rolie |
| the same bytes as a constant body | $constant |

**RATIO rolie-cost-vs-constant $ratio** (the page's instructions divided by the constant
body's; lower is better, 1.0 = the feed adds nothing to serving its bytes). Versions: $version.
MD
echo "RATIO rolie-cost-vs-constant $ratio"
