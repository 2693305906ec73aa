#!/bin/sh
# Bench `hostile_forms`: how long a collector role's command handler takes to refuse hostile
# forms (5,000 fields, a 200 KB value, 3,000 values, nested junk, out-of-range numbers: the cases
# spec/grid_commands_spec.lua asserts the errors of), next to the same handler opening a session,
# on a private Prosody (bench/hostile_forms.lua). docs/protocol.md promises an answer within
# 100 ms. Writes bench/out/hostile_forms.md and ends with
#   RESULT hostile-form-p99-ms <the 99th percentile of every refusal>
#   RATIO hostile-form-vs-open <the slowest case's median / opening a session's median>
# (lower is better).
#
#   bench/hostile_forms.sh              20 rounds of every case
#   ROUNDS=5 bench/hostile_forms.sh     quicker
set -eu

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-20}
aim_ms=100
out=bench/out
mkdir -p "$out"
if [ ! -x ./sacmrun ]; then
    echo "hostile_forms.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi

load_before=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
raw=$out/hostile_forms.raw
echo "hostile_forms: $rounds rounds"
./sacmrun bench/hostile_forms.lua "$rounds" >"$raw"
grep '^case ' "$raw"
load_after=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)

get() { awk -v k="$1" '$1 == k { sub(/^[^\t ]+[\t ]/, ""); print; found = 1 } END { exit !found }' "$raw"; }
open_ms=$(get open_median_ms) median_ms=$(get hostile_median_ms) p99_ms=$(get hostile_p99_ms)
max_ms=$(get hostile_max_ms) slowest=$(get slowest_case) slowest_ms=$(get slowest_case_median_ms)
ratio=$(get ratio) samples=$(get samples)
verdict=$(awk -v v="$p99_ms" -v a="$aim_ms" 'BEGIN { print (v + 0 < a) ? "PASS" : "MISS" }')

{
    cat <<EOF
## hostile_forms

How long a collector role takes to refuse hostile command forms, measured inside its command
handler from receiving the stanza to answering it (\`./sacmrun bench/hostile_forms.lua $rounds\`:
a private Prosody, a repository, an orchestrator and a collector role in one process; the
server's relaying of a 200 KB stanza is not counted, it is not the role's to bound). Each round
submits every case once, in a turning order, and opens one session of the same command, the
reference: the same handler answering a benign request.

| case | median ms | slowest ms |
| --- | ---: | ---: |
EOF
    awk '$1 == "case" { name = $2; for (i = 3; $i != "median"; i++) name = name " " $i;
        printf "| %s | %s | %s |\n", name, $(i + 1), $(i + 4) }' "$raw"
    cat <<EOF

Opening a session: median $open_ms ms. Every refusal ($samples): median $median_ms ms, 99th
percentile $p99_ms ms, slowest $max_ms ms. The slowest case is "$slowest" (median $slowest_ms ms).

**RESULT hostile-form-p99-ms $p99_ms** (docs/protocol.md promises under $aim_ms ms: $verdict)

**RATIO hostile-form-vs-open $ratio** (the slowest case's median over opening a session's;
lower is better)

Load average (1, 5, 15 min) was $load_before before and $load_after after, on $(nproc) cores.
EOF
} >"$out/hostile_forms.md"
echo "wrote $out/hostile_forms.md"
echo "RESULT hostile-form-p99-ms $p99_ms"
echo "RATIO hostile-form-vs-open $ratio"
