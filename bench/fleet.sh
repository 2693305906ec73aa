#!/bin/sh
# Bench `fleet`: 1,000 simulated endpoints (bench/fleet_sim.lua: the real collector role, fixture
# posture) assessed once through a real grid on a private ejabberd, in four configurations
# (bench/fleet.lua): SQLite, one node, one evaluator (the reference); three evaluators sharing
# the fleet; the repository on PostgreSQL; a two-node ejabberd cluster. Writes bench/out/fleet.md
# and ends with
#   RATIO fleet-evaluators-3v1 <wall with 3 evaluators / wall with 1>   (lower is better)
#   RATIO fleet-pg-vs-sqlite <repository rows/s on PostgreSQL / on SQLite>   (higher is better)
#
#   bench/fleet.sh                 1,000 endpoints
#   ENDPOINTS=200 bench/fleet.sh   quicker, for trying it out
set -eu

cd "$(dirname "$0")/.."
n=${ENDPOINTS:-1000}
out=bench/out
mkdir -p "$out"
if [ ! -x ./sacmrun ]; then
    echo "fleet.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi

load_before=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
start=$(date +%s)
./sacmrun bench/fleet.lua "$n" >"$out/fleet.raw"
took=$(( $(date +%s) - start ))
load_after=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
cat "$out/fleet.raw"

get() { awk -v c="$1" -v k="$2" '$1 == "CONFIG" && $2 == c { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$out/fleet.raw"; }
row() {
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(get "$1" backend)" "$(get "$1" nodes)" \
        "$(get "$1" evaluators)" "$(get "$1" wall)" "$(get "$1" p50)" "$(get "$1" p99)" "$(get "$1" cpu_ms)" \
        "$(get "$1" rows_per_s)"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
evals=$(ratio "$(get sqlite-1node-3eval wall)" "$(get sqlite-1node-1eval wall)")
pgsq=$(ratio "$(get pg-1node-1eval rows_per_s)" "$(get sqlite-1node-1eval rows_per_s)")

cat >"$out/fleet.md" <<EOF
## fleet

$n simulated endpoints (\`bench/fleet_sim.lua\`, 250 collector identities per process, each the
real collector role with its own account, endpoint id and fixture sshd posture) assessed once:
every endpoint collects (scheduled posture), uploads to the repository, announces it, and is
judged by one evaluator of the shard group with the ssh policy (21 rules). The XMPP server is a
private ejabberd 23.01 from examples/servers/ejabberd.yml, one node or the two-node cluster of
spec/support/ejabberd_cluster.lua; the repository runs in the benchmark's process on SQLite or
on a private PostgreSQL 15; the evaluators are examples/grid/evaluator.lua processes. *wall*:
from the round's start to the last result set stored; *p50/p99*: per endpoint, from the round's
start to its result set stored; *server CPU*: ejabberd's utime + stime (all nodes) per
endpoint; *rows/s*: repository rows written in the round (posture, posture attributes, results,
result sets) over the span from the first posture stored to the last result set.

| configuration | store | nodes | evaluators | wall s | p50 s | p99 s | server CPU ms/endpoint | rows/s |
|---|---|---|---|---|---|---|---|---|
$(row sqlite-1node-1eval)
$(row sqlite-1node-3eval)
$(row pg-1node-1eval)
$(row sqlite-2node-1eval)

Every process (the server nodes, up to three evaluators, $(( (n + 249) / 250 )) simulator processes, the
repository, PostgreSQL) shares this machine's $(nproc) cores; load average $load_before at the
start and $load_after at the end ($took s in all). Wall times are therefore an upper bound of
what the same grid does on separate machines, and the 3-vs-1 ratio says how much of the
evaluators' work left the critical path on *this* machine, not what three machines give.

**RATIO fleet-evaluators-3v1 $evals** (wall with three evaluators / wall with one; lower is
better; 0.33 would be perfect division with a core per evaluator).
**RATIO fleet-pg-vs-sqlite $pgsq** (repository rows/s on PostgreSQL / on SQLite, one evaluator;
higher is better; the rate is the round's pace in both (collection, uploads, judging), so this
says whether the PostgreSQL store slows the grid down, not the stores' own peak rates: see
bench/pg_insert.lua). docs/scale.md reads these numbers.
EOF

echo "RATIO fleet-evaluators-3v1 $evals"
echo "RATIO fleet-pg-vs-sqlite $pgsq"
