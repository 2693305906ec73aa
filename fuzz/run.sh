#!/bin/sh
# fuzz/run.sh SECONDS TARGET...: runs each libFuzzer target (build/fuzz/TARGET) for SECONDS on
# its working corpus build/fuzz/corpus/TARGET, which starts as a copy of the seeds in
# spec/fixtures/fuzz/TARGET/ and keeps what the runs add (the seeds in the tree are never
# written). A crash, leak, sanitizer report or timeout is a finding: the input is saved as
# build/fuzz/findings/TARGET/crash-* (or leak-, timeout-, oom-) and the script fails after the
# remaining targets ran. Each run starts with an empty findings directory. Prints libFuzzer's final numbers per target; the full log is
# build/fuzz/TARGET.log.
set -u
seconds=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
status=0
for target in "$@"; do
    bin="$here/build/fuzz/$target"
    seeds="$here/spec/fixtures/fuzz/$target"
    corpus="$here/build/fuzz/corpus/$target"
    findings="$here/build/fuzz/findings/$target"
    log="$here/build/fuzz/$target.log"
    rm -rf "$findings" # a run's findings are its own: keep one you want before running again
    mkdir -p "$corpus" "$findings"
    cp -p "$seeds"/* "$corpus"/ 2>/dev/null || true
    dict=""
    if [ -f "$here/fuzz/$target.dict" ]; then dict="-dict=$here/fuzz/$target.dict"; fi
    # -timeout: one input taking 10 s is a stall, a finding; -rss_limit_mb: so is 2 GB of memory
    # (the XML parser's bound is 8 x the input, and inputs are at most -max_len).
    # -detect_leaks=0: no leak check after each input that leaves more allocated than it freed,
    # which every input of a Lua state does (its garbage waits for the collector): that check
    # scans the whole heap and costs 95% of the time. LeakSanitizer still checks at exit, when
    # C memory that nothing points to any more is reported as a leak and fails the run.
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    LSAN_OPTIONS="suppressions=$here/spec/lsan.supp" \
        "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -detect_leaks=0 -artifact_prefix="$findings/" $dict "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    # the last status line: "#N  DONE  cov: C ft: F corp: K/SIZE ..." (or the line before a crash)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.*corp: \([^ ]*\).*/\1/p')
    found=$(ls "$findings" | wc -l)
    printf 'fuzz %-14s %ss execs=%s exec/s=%s cov=%s ft=%s corpus=%s findings=%s\n' \
        "$target" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found"
    if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
        echo "fuzz $target: FINDING (exit $rc); inputs in $findings, log in $log:" >&2
        grep -E 'ERROR|fuzz: |SUMMARY|runtime error' "$log" | head -n 20 >&2
        status=1
    fi
done
exit $status
