#!/bin/sh
# Bench `pubsub`: one publisher and one subscriber, ITEMS items of about 200 bytes on a transient
# node (persist_items = false) through one private Prosody, with 1 and 16 publishes in flight,
# done by three clients that each run both accounts in one process:
#   sacmrun   bench/pubsub.lua, a playbook using sacm.xmpp and sacm.xmpp.pubsub
#   c         bench/pubsub_ref.c, plain libstrophe on its own select() loop (built here)
#   slixmpp   bench/pubsub_slixmpp.py, with /usr/bin/python3
# bench/pubsub_run.lua starts the server (spec/support/prosody.lua: loopback only, own directory,
# stopped at the end) and runs the clients in turn, rotating their order each round. Prints a
# table, writes bench/out/pubsub.md and ends with
#   RATIO pubsub-vs-c <sacmrun items/s / C items/s>
#   RATIO pubsub-vs-slixmpp <sacmrun items/s / slixmpp items/s>
#   RATIO pubsub-cpu-vs-c <sacmrun CPU per item / C CPU per item> (lower is better)
# (higher is better; each is the smaller of the window-1 and window-16 ratios).
#
#   bench/pubsub.sh                        3 rounds of 10,000 items per client and window
#   ROUNDS=1 ITEMS=2000 bench/pubsub.sh    quicker, noisier
set -eu

cd "$(dirname "$0")/.."
export ROUNDS="${ROUNDS:-3}" ITEMS="${ITEMS:-10000}" WINDOWS="1 16"
export PYTHON="${PYTHON:-/usr/bin/python3}"
aim_c=0.95      # sacmrun items/s at least 95% of the C client's (issue 15)
aim_sli=2.5     # and 2.5x slixmpp's
aim_cpu=1.4     # sacmrun CPU per item at most 1.4x the C client's (issue 15)

out=bench/out
mkdir -p "$out"
if [ ! -x ./sacmrun ]; then
    echo "pubsub.sh: ./sacmrun is missing; run 'make' first" >&2
    exit 1
fi
for need in prosody prosodyctl openssl "$PYTHON"; do
    command -v "$need" >/dev/null 2>&1 || { echo "pubsub.sh: $need is missing (tools/debian-packages.txt)" >&2; exit 1; }
done
"$PYTHON" -c 'import slixmpp' 2>/dev/null || { echo "pubsub.sh: python3-slixmpp is missing" >&2; exit 1; }
ref=$out/pubsub_ref
if [ ! -x "$ref" ] || [ -n "$(find bench/pubsub_ref.c -newer "$ref")" ]; then
    # shellcheck disable=SC2046 # pkg-config's words are meant to split
    ${CC:-cc} -std=c11 -O2 -Wall -Wextra -o "$ref" bench/pubsub_ref.c $(pkg-config --cflags --libs libstrophe)
fi

raw=$out/pubsub.raw
load_before=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)
./sacmrun bench/pubsub_run.lua "$raw" "$ref"
load_after=$(cut -d " " -f 1-3 /proc/loadavg 2>/dev/null || echo unknown)

# Per client and window: the median over rounds of each metric, as "key value" lines.
summary=$out/pubsub.summary
awk -v aim_c="$aim_c" -v aim_sli="$aim_sli" -v aim_cpu="$aim_cpu" -v items="$ITEMS" '
    function median(list,    n, i, j, t, a) {
        n = split(substr(list, 2), a, " ")
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        delete v
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        k = v["impl"] "_w" v["window"]
        seen[k] = 1; windows[v["window"]] = 1
        for (m in v) if (m != "impl" && m != "window" && m != "round" && m != "order") list[k, m] = list[k, m] " " v[m]
    }
    END {
        split("items_per_s p50_ms p99_ms cpu_s maxrss_kib connect_s server_cpu_s", metrics, " ")
        for (k in seen) for (i in metrics) {
            med[k, metrics[i]] = median(list[k, metrics[i]])
            printf "%s_%s %s\n", k, metrics[i], med[k, metrics[i]]
        }
        worst_c = worst_sli = 1e9; worst_cpu = 0
        for (w in windows) {
            s = "sacmrun_w" w; c = "c_w" w; p = "slixmpp_w" w
            rc = med[s, "items_per_s"] / med[c, "items_per_s"]
            rp = med[s, "items_per_s"] / med[p, "items_per_s"]
            rcpu = med[s, "cpu_s"] / med[c, "cpu_s"]
            printf "ratio_c_w%s %.2f\nratio_sli_w%s %.2f\nratio_cpu_w%s %.2f\n", w, rc, w, rp, w, rcpu
            for (who in seen) if (index(who, "_w" w) == length(who) - length("_w" w) + 1)
                printf "%s_us_per_item %.0f\n%s_server_us_per_item %.0f\n", who, med[who, "cpu_s"] / items * 1e6, \
                    who, med[who, "server_cpu_s"] / items * 1e6
            if (rc < worst_c) worst_c = rc
            if (rp < worst_sli) worst_sli = rp
            if (rcpu > worst_cpu) worst_cpu = rcpu
        }
        printf "ratio_c %.2f\nratio_sli %.2f\nratio_cpu %.2f\n", worst_c, worst_sli, worst_cpu
        # judged as printed (0.90 passes), in parentheses: a bare > in printf is a redirection
        printf "aim_c %s\n", ((sprintf("%.2f", worst_c) + 0 >= aim_c) ? "PASS" : "MISS")
        printf "aim_sli %s\n", ((sprintf("%.2f", worst_sli) + 0 >= aim_sli) ? "PASS" : "MISS")
        printf "aim_cpu %s\n", ((sprintf("%.2f", worst_cpu) + 0 <= aim_cpu) ? "PASS" : "MISS")
    }' "$raw" >"$summary"
get() { awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print; found = 1 } END { exit !found }' "$summary"; }
for who in sacmrun c slixmpp; do
    for w in 1 16; do
        get "${who}_w${w}_items_per_s" >/dev/null || { echo "pubsub.sh: no result for $who, window $w" >&2; exit 1; }
    done
done

name() { case $1 in sacmrun) echo "sacmrun (bench/pubsub.lua)" ;; c) echo "C libstrophe (bench/pubsub_ref.c)" ;;
    slixmpp) echo "slixmpp (bench/pubsub_slixmpp.py)" ;; esac; }
rows() { # the table rows, markdown
    for w in 1 16; do
        for who in sacmrun c slixmpp; do
            k=${who}_w$w
            printf '| %s | %s | %s | %s | %s | %s | %s | %.1f | %s | %s |\n' "$(name "$who")" "$w" \
                "$(get "${k}_items_per_s")" "$(get "${k}_p50_ms")" "$(get "${k}_p99_ms")" "$(get "${k}_cpu_s")" \
                "$(get "${k}_us_per_item")" "$(echo "$(get "${k}_maxrss_kib")" | awk '{ print $1 / 1024 }')" \
                "$(get "${k}_connect_s")" "$(get "${k}_server_us_per_item")"
        done
    done
}
header='| client | in flight | items/s | p50 ms | p99 ms | client CPU s | CPU µs/item | peak RSS MB | connect+login s | Prosody CPU µs/item |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |'
ratio_c=$(get ratio_c) ratio_sli=$(get ratio_sli) ratio_cpu=$(get ratio_cpu)
rounds_lines=$(sed 's/^/    /' "$raw")
# not `prosody --version`: it can hang for minutes (it starts the server's whole environment)
versions="$(./sacmrun -v 2>/dev/null); libstrophe $(pkg-config --modversion libstrophe); slixmpp $("$PYTHON" -c 'import slixmpp; print(slixmpp.__version__)' 2>/dev/null); Prosody $(dpkg-query -W -f '${Version}' prosody 2>/dev/null || echo '(version unknown)')"

# Other work on the machine before the run (the run itself loads it with Prosody and a client):
# say so, since it moves every absolute number (the clients take turns, so the ratios less).
busy=$(echo "$load_before" | awk -v cores="$(nproc)" '$1 + 0 >= cores / 4 {
    printf " The machine had other work when the run began (1-minute load %s on %d cores): absolute numbers are lower than on a quiet machine; the clients took turns, so the ratios hold up better.", $1, cores }')

echo
echo "$header"
rows
echo
echo "sacmrun / C items/s:       window 1 $(get ratio_c_w1), window 16 $(get ratio_c_w16)   (aim >= $aim_c) $(get aim_c)"
echo "sacmrun / slixmpp items/s: window 1 $(get ratio_sli_w1), window 16 $(get ratio_sli_w16)   (aim >= $aim_sli) $(get aim_sli)"
echo "sacmrun / C CPU per item:  window 1 $(get ratio_cpu_w1), window 16 $(get ratio_cpu_w16)   (aim <= $aim_cpu) $(get aim_cpu)"
echo "load average: $load_before before, $load_after after ($(nproc) cores)"

cat >"$out/pubsub.md" <<EOF
## pubsub

One publisher and one subscriber account, $ITEMS items of about 200 bytes each published to a
transient node (\`persist_items = false\`) of a private Prosody's pubsub component, with 1 and with
16 publishes in flight (the next publish goes out when a publish result comes back). Three
clients do the same work, each with both accounts in one process over verified TLS (SCRAM,
stream management on): a sacmrun playbook using sacm.xmpp and sacm.xmpp.pubsub (\`bench/pubsub.lua\`),
a plain C libstrophe client on libstrophe's own loop (\`bench/pubsub_ref.c\`), and slixmpp
(\`bench/pubsub_slixmpp.py\`). Made by \`bench/pubsub.sh\` (\`make bench\`): one Prosody for the whole run
(\`bench/pubsub_run.lua\` starts it as the test suite does, on 127.0.0.1), $ROUNDS rounds, the
clients' order rotating from round to round; each number is the median over the rounds.

items/s is $ITEMS over the time from the first publish until the last notification arrived;
latency is from just before a publish was made until its notification was read (same process,
same monotonic clock); client CPU is user + system time of the client process over that span
(both connections); peak RSS is the process's \`ru_maxrss\` / VmHWM at the end; connect+login is
both connections from the first connect until both sessions were bound. Prosody's CPU per item,
read from /proc around each run, is the work every client waits for.

$header
$(rows)

**RATIO pubsub-vs-c $ratio_c** (sacmrun items/s divided by the C client's, the smaller of the two
windows; **higher is better**, 1.0 = as fast as plain libstrophe).
**RATIO pubsub-vs-slixmpp $ratio_sli** (sacmrun items/s divided by slixmpp's, likewise; higher is better).
**RATIO pubsub-cpu-vs-c $ratio_cpu** (sacmrun client CPU per item divided by the C client's, the
larger of the two windows; **lower is better**).

| aim | window 1 | window 16 | result |
| --- | ---: | ---: | --- |
| sacmrun items/s >= ${aim_c}x the C client's | $(get ratio_c_w1) | $(get ratio_c_w16) | $(get aim_c) |
| sacmrun items/s >= ${aim_sli}x slixmpp's | $(get ratio_sli_w1) | $(get ratio_sli_w16) | $(get aim_sli) |
| sacmrun CPU per item <= ${aim_cpu}x the C client's | $(get ratio_cpu_w1) | $(get ratio_cpu_w16) | $(get aim_cpu) |

Every run (the client's own line, then the round, its place in the round and Prosody's CPU):

$rounds_lines

Load average (1, 5, 15 min) was $load_before before and $load_after after, on $(nproc) cores.$busy
Versions: $versions.

Where the client's cost per item sits, in instructions counted by callgrind (a run of 1200 items
minus one of 200, so login cancels out: \`PUBSUB_CLIENTS=sacmrun PUBSUB_WRAP="valgrind
--tool=callgrind" ITEMS=... WINDOWS=1 ROUNDS=1 ./sacmrun bench/pubsub_run.lua OUT
bench/out/pubsub_ref\`): window 1, sacmrun 459k (498k before issue 15's pubsub work), the C client
248k; window 16, 400k (444k) and 196k. The libstrophe, expat and OpenSSL work is the same in both
(each spends about 72k in libstrophe's xmpp_stanza_to_text, for instance). The extra is the
Lua VM on the publish/notify path (about 150k: the interpreter loop 46k, table reads and writes
25k, the C API 19k, new strings 11k, calls 10k, the collector 7k) running about 1,200 VM
instructions per item: the task scheduler about 350 (a suspend, wake and resume for the publisher
and for the reader of the events), sacm.xmpp.pubsub about 340 (building the publish, reading the
result and the notification, dispatching it to the stream), the connection's request and receive
path about 270, sacm.xml 120 and the benchmark's own loop 90. Then libc beyond malloc (18k more
than the C client, 6k of it the RECV/SENT lines libstrophe formats for the log handler, which
records why connections fail, before the handler drops them), malloc/free 46k against 40k (the
Lua state's small blocks come from free lists by size class, runtime/memlimit.c), and runtime C
about 25k (the XML serializer 10k, the free lists 8.5k, the stanza conversion). Syscalls (not changed by
that work): about 16 per item against the C client's 11, most of the difference the pump's quiet rounds (5.7 pselect per
item against 1.8): each wakeup runs libstrophe until four rounds in a row read no stanza, because
a TLS record begun in one round may still hold 12 KB inside OpenSSL with the socket empty, and
libstrophe does not say whether OpenSSL holds bytes. The CPU-time ratio in the table is larger
than the instruction ratio (window 1 1.85, window 16 2.04) mostly in user time: measured by hand
with /usr/bin/time over 10,000 items at window 1, sacmrun spent 1.5-1.9 s user and 0.6-1.0 s
system, the C client 0.6-0.8 s and 0.5-0.8 s, so each of the interpreter's instructions costs more
time (memory stalls, branch misses) than libstrophe's. The quiet rounds cost system time only: a
build that stops after one quiet round (not correct for large stanzas) spent the same
instructions and about 0.1-0.2 s less system time per 10,000 items.
EOF
echo "wrote $out/pubsub.md"
echo "RATIO pubsub-vs-c $ratio_c"
echo "RATIO pubsub-vs-slixmpp $ratio_sli"
echo "RATIO pubsub-cpu-vs-c $ratio_cpu"
