# Sourced by bench/http.sh and bench/rolie.sh: sacmrun and nginx measured with wrk in turns.
# The caller sets: bench (its name, for messages), conns, rounds, duration, path (the URL path
# both serve), raw (file for the per-run lines), sacm_port, nginx_port, sacm_pid, nginx_pid, and
# optionally wrk_header (one "Name: value" header for every request).

# wrk prints "Requests/sec: N" and, on trouble, "Non-2xx or 3xx responses" / "Socket errors".
measure() { # who port seconds
    res=$(wrk -t1 -c"$conns" -d"$3"s ${wrk_header:+-H} ${wrk_header:+"$wrk_header"} \
        "https://127.0.0.1:$2$path" 2>&1) || { echo "$res" >&2; return 1; }
    rps=$(echo "$res" | awk '/^Requests\/sec:/ { print $2 }')
    lat=$(echo "$res" | awk '$1 == "Latency" { print $2 }')
    errs=$(echo "$res" | awk '/Non-2xx|Socket errors/ { e = e $0 "; " } END { print e }')
    [ -n "$rps" ] || { echo "$bench.sh: wrk printed no rate for $1:" >&2; echo "$res" >&2; return 1; }
    if [ -n "$errs" ]; then echo "$bench.sh: $1: $errs" >&2; return 1; fi
    echo "$1 $rps $lat"
}

# A 1 s warm-up each, then the rounds; which server goes first alternates. Sets load_before and
# load_after.
run_rounds() {
    load_before=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
    measure sacmrun "$sacm_port" 1 >/dev/null
    measure nginx "$nginx_port" 1 >/dev/null
    : >"$raw"
    r=1
    while [ "$r" -le "$rounds" ]; do
        if [ $((r % 2)) -eq 1 ]; then
            measure sacmrun "$sacm_port" "$duration" >>"$raw"
            measure nginx "$nginx_port" "$duration" >>"$raw"
        else
            measure nginx "$nginx_port" "$duration" >>"$raw"
            measure sacmrun "$sacm_port" "$duration" >>"$raw"
        fi
        printf '  round %d/%d done\n' "$r" "$rounds"
        r=$((r + 1))
    done
    load_after=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
}

# Peak resident memory of a process in MB, or "?".
hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }

median() { # who
    awk -v w="$1" '$1 == w { print $2 }' "$raw" | sort -n |
        awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# Sets sacm_rss, nginx_rss (its worker), s_rps, n_rps (medians), s_all, n_all (every round),
# ratio (nginx's median requests/s over sacmrun's: lower is better) and round_ratios.
summarize() {
    sacm_rss=$(hwm "$sacm_pid")
    worker=$(cat "/proc/$nginx_pid/task/$nginx_pid/children" 2>/dev/null | awk '{ print $1 }')
    nginx_rss=$( [ -n "$worker" ] && hwm "$worker" || echo "?")
    s_rps=$(median sacmrun)
    n_rps=$(median nginx)
    s_all=$(awk '$1 == "sacmrun" { printf "%s%.0f", s, $2; s = " " }' "$raw")
    n_all=$(awk '$1 == "nginx" { printf "%s%.0f", s, $2; s = " " }' "$raw")
    ratio=$(awk -v s="$s_rps" -v n="$n_rps" 'BEGIN { printf "%.2f", n / s }')
    # the ratio within each round (its two lines), to show how much the machine's noise moves it
    round_ratios=$(awk '{ v[$1] = $2 } NR % 2 == 0 { printf "%s%.2f", sep, v["nginx"] / v["sacmrun"]; sep = " " }' "$raw")
}
