#!/bin/sh
# Runs sacmrun's benchmarks and writes their results down in docs/performance.md.
#
#   bench/run.sh            every bench/*.sh but this one, then rewrites docs/performance.md
#   bench/run.sh startup    only the named ones; prints their results, leaves the docs alone
#
# `make bench` builds ./sacmrun and calls this. Each benchmark measures sacmrun against a
# reference in the same run, writes bench/out/<name>.md (one markdown section) and prints
# `RATIO <name> <value>` as its last line. bench/out/ is scratch space (not in git).
set -eu

cd "$(dirname "$0")/.."
out=bench/out
doc=docs/performance.md
mkdir -p "$out"

# The measuring tool every benchmark uses, built once here and handed down as $RUNSTAT.
RUNSTAT=$out/runstat
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -o "$RUNSTAT" bench/runstat.c
export RUNSTAT

if [ ! -x ./sacmrun ]; then
    echo "run.sh: ./sacmrun is missing; run 'make' (or 'make bench') first" >&2
    exit 1
fi

# Which benchmarks: the names given, or every bench/*.sh except this file.
all=1
names=""
if [ "$#" -gt 0 ]; then
    all=0
    for name in "$@"; do
        name=${name%.sh}
        name=${name#bench/}
        if [ "$name" = run ] || [ ! -f "bench/$name.sh" ]; then
            echo "run.sh: no benchmark bench/$name.sh" >&2
            exit 1
        fi
        names="$names $name"
    done
else
    for script in bench/*.sh; do
        [ -f "$script" ] || continue
        name=$(basename "$script" .sh)
        [ "$name" = run ] && continue
        names="$names $name"
    done
fi
if [ -z "$names" ]; then
    echo "run.sh: no benchmarks in bench/" >&2
    exit 1
fi

ratios=$out/ratios.txt
: >"$ratios"
failed=""
for name in $names; do
    echo "=== $name"
    rm -f "$out/$name.md"
    log=$out/$name.log
    # The benchmark's output goes to the terminal and to its log; its status is kept in a file
    # because a pipeline's status is the last command's (tee's).
    rcfile=$out/$name.rc
    {
        rc=0
        if [ -x "bench/$name.sh" ]; then
            "./bench/$name.sh" || rc=$?
        else
            sh "bench/$name.sh" || rc=$?
        fi
        echo "$rc" >"$rcfile"
    } 2>&1 | tee "$log"
    rc=$(cat "$rcfile")
    ratio=$(grep '^RATIO ' "$log" || true)   # a benchmark may print several
    if [ "$rc" -ne 0 ]; then
        echo "run.sh: $name failed (exit $rc); see $log" >&2
        failed="$failed $name"
    elif [ -z "$ratio" ]; then
        echo "run.sh: $name printed no RATIO line; see $log" >&2
        failed="$failed $name"
    elif [ ! -s "$out/$name.md" ]; then
        echo "run.sh: $name wrote no $out/$name.md" >&2
        failed="$failed $name"
    else
        echo "$ratio" >>"$ratios"
        # measurements that are not ratios (a latency, say) go in the summary too
        grep '^RESULT ' "$log" >>"$ratios" || true
    fi
    rm -f "$rcfile"
    echo
done

if [ -n "$failed" ]; then
    echo "run.sh: failed:$failed; $doc left as it was" >&2
    cat "$ratios"
    exit 1
fi

if [ "$all" -eq 1 ]; then
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo "no commit yet")
    if [ -n "$(git status --porcelain -- runtime lua 2>/dev/null || true)" ]; then
        commit="$commit, with uncommitted changes in runtime/ or lua/"
    fi
    tmp=$doc.tmp
    {
        cat <<EOF
# Performance

This file is written by \`bench/run.sh\`; edit the benchmarks in bench/, not this file.

Each benchmark in bench/ measures sacmrun next to a reference measured in the same run on the same
machine (plain \`lua5.4\`, for instance), so the result is a ratio that means something on any
machine, while the absolute numbers are only this machine's. Times are wall-clock times of whole
processes, taken by \`bench/runstat.c\` (fork, exec, wait4; warm-up runs discarded); memory is
peak resident set size (\`ru_maxrss\`).

## How to run

\`\`\`
make bench                  # builds ./sacmrun, runs every benchmark, rewrites this file
bench/run.sh startup        # one benchmark; prints its results, leaves this file alone
bench/startup.sh            # the same, without the wrapper
\`\`\`

Each benchmark prints a table for people and, as its last lines, \`RATIO <name> <value>\` for
scripts. Its markdown section is kept in \`bench/out/<name>.md\`.

## Reading the ratios

A ratio is sacmrun's measurement divided by the reference's, 1.0 meaning as good as the reference.
For times and sizes (startup) lower is better; for rates (pubsub items per second, evaluate's rule
evaluations per second) higher is better. Each section says what its ratio divides, which direction
is better and which aims it is held to; a missed aim is reported, not treated as a failure.

## Machine

- CPU: ${cpu:-unknown}, $(nproc) cores online
- kernel: $(uname -srm)
- date: $(date -u '+%Y-%m-%d %H:%M UTC')
- build: $(./sacmrun -v 2>/dev/null || echo "sacmrun, version unknown"), source $commit

## Summary

EOF
        sed 's/^/    /' "$ratios"
        # measured by hand (instruction counts): kept in bench/, carried into every rewrite
        if [ -f bench/costs.md ]; then
            echo
            cat bench/costs.md
        fi
        for name in $names; do
            echo
            cat "$out/$name.md"
        done
    } >"$tmp"
    mv "$tmp" "$doc"
    echo "wrote $doc"
else
    echo "ran only:$names; $doc left as it was (run bench/run.sh with no names to rewrite it)"
fi
cat "$ratios"
