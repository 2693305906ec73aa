#!/bin/sh
# Bench `evaluate`: rule evaluations per second through the policy engine (sandbox, instruction
# budget, memory cap, read-only posture) next to the same starter checks called as plain Lua
# functions, in one sacmrun process taking turns; and the hot-reload latency from writing a policy
# file to the first evaluation under its new version. Writes bench/out/evaluate.md and ends with
# `RATIO evaluate-sandbox <sandboxed rate / plain rate>` (higher is better here: 1.0 = free).
#
#   bench/evaluate.sh                           5 rounds of 2 s per way, 20 reloads
#   ROUNDS=3 SECONDS_PER_ROUND=0.5 RELOADS=5 bench/evaluate.sh   quicker, noisier
set -eu

cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
seconds=${SECONDS_PER_ROUND:-2}
reloads=${RELOADS:-20}
aim_ratio=0.7      # the sandbox costs at most 30 %
aim_reload_ms=300  # an edited policy is active within 300 ms

out=bench/out
mkdir -p "$out"
if [ ! -x ./sacmrun ]; then
    echo "evaluate.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi

load_before=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
raw=$out/evaluate.raw
echo "evaluate: $rounds rounds of ${seconds}s per way, $reloads reloads"
./sacmrun bench/evaluate.lua "$rounds" "$seconds" "$reloads" | tee "$raw"
load_after=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)

get() { awk -v k="$1" '$1 == k { sub(/^[^\t ]+[\t ]/, ""); print; found = 1 } END { exit !found }' "$raw"; }
rules=$(get rules) ratio=$(get ratio) ratio_fresh=$(get ratio_fresh) prepare_ms=$(get prepare_ms)
prepared=$(get prepared_rate) fresh=$(get fresh_rate) plain=$(get plain_rate)
prepared_rounds=$(get prepared_rounds) fresh_rounds=$(get fresh_rounds) plain_rounds=$(get plain_rounds)
reload_median=$(get reload_median_ms) reload_max=$(get reload_max_ms) debounce=$(get reload_debounce_ms)
ratio_aim=$(awk -v r="$ratio" -v a="$aim_ratio" 'BEGIN { print (r + 0 >= a) ? "PASS" : "MISS" }')
reload_aim=$(awk -v r="$reload_max" -v a="$aim_reload_ms" 'BEGIN { print (r + 0 < a) ? "PASS" : "MISS" }')
version=$(./sacmrun -v 2>/dev/null || echo "sacmrun (version unknown)")

echo
echo "rule evaluations/s: prepared posture $prepared, fresh posture $fresh, plain functions $plain"
echo "sandboxed / plain = $ratio (aim: at least $aim_ratio)  $ratio_aim; with a fresh posture each time: $ratio_fresh"
echo "hot reload: median $reload_median ms, max $reload_max ms (aim: under $aim_reload_ms ms)  $reload_aim"
echo "load average: $load_before before, $load_after after ($(nproc) cores)"

cat >"$out/evaluate.md" <<EOF2
## evaluate

How fast the policy engine evaluates rules with its protections on, next to the same checks
without them, in one \`./sacmrun bench/evaluate.lua\` process. The $rules rules are the starter
set in policies/; the posture is a synthetic one the size of a Debian server's (1500 packages,
40 accounts, 25 listening sockets, 60 monitored files, 13 sysctl keys, 94 sshd settings), the same
object for every call. Three ways take turns for ${seconds} s each per round, $rounds rounds,
the order changing from round to round:

- **prepared**: \`engine:evaluate(prepared)\` where \`prepared = policy.prepare(posture)\` was made
  once: each rule runs in the sandbox's coroutine with its instruction budget (a count hook),
  memory cap and read-only posture, and its result is validated;
- **fresh**: \`engine:evaluate(posture)\` on the plain posture, so every evaluation also builds
  the read-only views of the whole posture (what \`policy.prepare\` does, here $prepare_ms ms);
- **plain**: the same policy files loaded with plain \`load\` (helpers over \`_G\`), each check
  called directly on the posture, its result put in the same result table.

| way | rule evaluations/s (median of rounds) | rounds |
| --- | ---: | --- |
| prepared (sandbox + budgets) | $prepared | $prepared_rounds |
| fresh (+ read-only views each time) | $fresh | $fresh_rounds |
| plain functions | $plain | $plain_rounds |

**RATIO evaluate-sandbox $ratio** (prepared rate / plain rate; higher is better, 1.0 = the
sandbox is free). With the posture made read-only on every evaluation the ratio is $ratio_fresh:
building the views costs about $prepare_ms ms for this posture, once per posture, which an
evaluator pays once per posture it receives however many rules it runs.

Where the time goes: the instruction budget is a count hook, and while a Lua 5.4 coroutine has
one every VM instruction goes through the hook check (\`luaG_traceexec\`), which makes
loop-heavy checks up to about 1.7x slower. A CPU-time timer whose signal sets the hook only when
the budget is spent (as lua.c's SIGINT handler does) ran them at full speed (0.85-0.91 here),
but a CPU-time budget is not the same on every build and machine: a policy file whose top level
fit its budget on the normal build failed to load under ASan, and the per-file and
per-evaluation totals need what each run really used. The budget stays a count of
instructions, the same everywhere. The rest is fixed cost per rule: resuming the sandbox's coroutine, the memory cap, swapping the
string metatable for the charged pattern functions, reads through the read-only posture's
proxies, and the bookkeeping around it (checking the required kinds, validating result and
evidence). Rules whose posture the synthetic one lacks (groups, pam, ...) are \`notchecked\`
on both paths without running.

Hot reload: $reloads times, a policy file is rewritten with \`fs.write\` (atomic: temporary file,
fsync, rename) and the time is taken from the start of the write to the end of the first
evaluation whose results carry the new version. The watcher's debounce is $debounce ms of it.

**RESULT hot-reload-ms $reload_max** (the slowest of the $reloads; median $reload_median ms).

| aim | measured | result |
| --- | --- | --- |
| sandbox costs at most 30 % (ratio >= $aim_ratio) | $ratio | $ratio_aim |
| an edit is active within $aim_reload_ms ms | $reload_max ms | $reload_aim |

Load average (1, 5, 15 min) was $load_before before and $load_after after, on $(nproc) cores.
Version: $version.
EOF2
echo "wrote $out/evaluate.md"
echo "RESULT hot-reload-ms $reload_max"
echo "RATIO evaluate-sandbox $ratio"
