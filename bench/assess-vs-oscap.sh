#!/bin/sh
# Bench `assess-vs-oscap`: this host assessed by sacmrun with the baseline rules that map to SSG
# OVAL definitions (the pairs spec/agreement_spec.lua compares) and by `oscap xccdf eval` with
# the matching SSG rules, in the same run, taking turns (runstat's `---`). Both write their
# results (XCCDF). oscap reads SSG's Debian 11 data stream with its platform check adapted to this
# Debian (sacm.collect.oscap.adapt, made once before timing); profile "(all)" with one --rule per
# SSG rule. Prints a table, writes bench/out/assess-vs-oscap.md and ends with
# `RATIO assess-vs-oscap <sacmrun median / oscap median>` (lower is better).
#
#   bench/assess-vs-oscap.sh            5 runs of each (about 2 minutes here)
#   RUNS=2 bench/assess-vs-oscap.sh     quicker, noisier
set -eu

cd "$(dirname "$0")/.."
runs=${RUNS:-5}
warmup=${WARMUP:-1}
out=bench/out
work=$out/assess-vs-oscap
mkdir -p "$work"
if [ -z "${RUNSTAT:-}" ]; then
    RUNSTAT=$out/runstat
    ${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$RUNSTAT" bench/runstat.c
fi
[ -x ./sacmrun ] || { echo "assess-vs-oscap.sh: ./sacmrun is missing; run 'make' first" >&2; exit 1; }
command -v oscap >/dev/null || { echo "assess-vs-oscap.sh: oscap is missing (openscap-scanner)" >&2; exit 1; }
[ -f /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml ] ||
    { echo "assess-vs-oscap.sh: SSG's Debian content is missing (ssg-debian)" >&2; exit 1; }

counts=$(./sacmrun bench/assess_vs_oscap.lua prepare "$work")
rules=""
while read -r r; do rules="$rules --rule $r"; done <"$work/rules.txt"
# oscap exits 2 when a rule fails, which runstat would take for a failed run: 0 and 2 are fine
cat >"$work/oscap.sh" <<SCRIPT
#!/bin/sh
oscap xccdf eval --profile '(all)' $rules --results "$work/oscap.xml" "$work/ds.xml" >/dev/null 2>&1
rc=\$?
[ "\$rc" -eq 0 ] || [ "\$rc" -eq 2 ]
SCRIPT
chmod +x "$work/oscap.sh"

load_before=$(cut -d " " -f 1-3 /proc/loadavg)
echo "assess-vs-oscap: $counts; $runs runs of each, taking turns (after $warmup warm-up)"
lines=$("$RUNSTAT" -n "$runs" -w "$warmup" -- ./sacmrun bench/assess_vs_oscap.lua assess "$work/sacmrun.xml" \
    --- "$work/oscap.sh")
load_after=$(cut -d " " -f 1-3 /proc/loadavg)
s=$(echo "$lines" | sed -n 1p)
o=$(echo "$lines" | sed -n 2p)
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
s_med=$(field "$s" wall_median_ms); o_med=$(field "$o" wall_median_ms)
s_cpu=$(field "$s" cpu_mean_ms); o_cpu=$(field "$o" cpu_mean_ms)
s_rss=$(field "$s" maxrss_kib); o_rss=$(field "$o" maxrss_kib)
s_n=$(grep -c '<rule-result' "$work/sacmrun.xml" || true)
# oscap lists the rules it did not select too, as notselected
o_all=$(grep -c '<rule-result' "$work/oscap.xml" || true)
o_skipped=$(grep -c '<result>notselected</result>' "$work/oscap.xml" || true)
o_n=$((o_all - o_skipped))
ratio=$(awk -v a="$s_med" -v b="$o_med" 'BEGIN { printf "%.3f", a / b }')
rss_ratio=$(awk -v a="$s_rss" -v b="$o_rss" 'BEGIN { printf "%.3f", a / b }')

table=$(cat <<TABLE
| | wall median (ms) | CPU mean (ms) | peak RSS (KiB) | rule-results written |
|---|---:|---:|---:|---:|
| sacmrun (collect + judge + XCCDF) | $s_med | $s_cpu | $s_rss | $s_n |
| oscap xccdf eval | $o_med | $o_cpu | $o_rss | $o_n |
| sacmrun / oscap | $ratio | | $rss_ratio | |
TABLE
)
echo "$table"
{
    echo "## assess-vs-oscap"
    echo
    echo "This host assessed by sacmrun with the baseline rules mapped to SSG OVAL definitions ($counts)"
    echo "and by \`oscap xccdf eval\` with those SSG rules (SSG 0.1.65 Debian 11 data stream, platform"
    echo "check adapted to this Debian; profile \"(all)\" with one \`--rule\` each), $runs runs of each taking"
    echo "turns. sacmrun judges every rule of the policies holding the mapped rules (its XCCDF has more"
    echo "rule-results); oscap skips the rules its platforms make notapplicable (in a container: every"
    echo "rule with SSG's \"machine\" platform, such as the sysctl ones) without probing. Load average"
    echo "before: $load_before, after: $load_after (2 cores shared with other work)."
    echo
    echo "$table"
    echo
    echo "RATIO assess-vs-oscap $ratio (sacmrun wall median / oscap wall median; lower is better)"
} >"$out/assess-vs-oscap.md"
echo "RATIO assess-vs-oscap $ratio"
