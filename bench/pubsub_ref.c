/* pubsub_ref: the pure C reference client of the `pubsub` benchmark (bench/pubsub.sh).
 *
 *   pubsub_ref host port domain pubsub_jid ca_file pub_jid pub_pw sub_jid sub_pw node N W
 *
 * One process, one libstrophe context, two connections (a publisher and a subscriber account),
 * driven by libstrophe's own select() loop (xmpp_run), as a plain C client would be. TLS is
 * required and verified against ca_file; the name checked is the JIDs' domain (host is only
 * where to connect: a numeric address). Both sockets get TCP_NODELAY, as sacmrun's do.
 *
 * Once both sessions are bound: the publisher creates `node` at pubsub_jid as a transient node
 * (pubsub#persist_items=0, pubsub#max_items=10), the subscriber subscribes its full JID, then
 * the publisher publishes N items, keeping W publishes in flight (the next goes out when a
 * publish result arrives). Each item has the id i<seq> and the payload
 *   <bench xmlns='urn:sacmrun:bench:pubsub' seq='SEQ' t='T'>PADDING</bench>
 * (about 200 bytes) where T is CLOCK_MONOTONIC in nanoseconds when the publish was queued.
 * The subscriber takes the latency of each notification from T: same process, same clock.
 * It stops when all N notifications arrived and all N publishes were acknowledged (or at the
 * deadline), deletes the node, closes both streams and prints one line:
 *
 *   impl=c window=W items=N items_per_s= p50_ms= p99_ms= cpu_s= maxrss_kib= connect_s=
 *
 * items_per_s is N over the time from the first publish to the last notification; cpu_s is the
 * process's user+system time over the same span (getrusage); maxrss_kib is ru_maxrss at the
 * end; connect_s the time from the start of both connects until both sessions were bound.
 * Exit status 0 only if every item was published and notified exactly once; otherwise the
 * reason goes to stderr and the status is 1 (2 for bad usage).
 *
 * Environment: PUBSUB_DEADLINE seconds for the whole run (default 300). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <strophe.h>

#define NS_PUBSUB "http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_OWNER "http://jabber.org/protocol/pubsub#owner"
#define NS_PUBSUB_EVENT "http://jabber.org/protocol/pubsub#event"
#define NS_BENCH "urn:sacmrun:bench:pubsub"
/* 128 bytes: with the element around it the payload is about 200 bytes */
#define PADDING                                                                                    \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"                             \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

enum phase { CONNECTING, CREATING, SUBSCRIBING, PUBLISHING, DELETING, CLOSING, DONE };

static struct {
    xmpp_ctx_t *ctx;
    xmpp_conn_t *pub, *sub;
    const char *pubsub_jid, *node;
    long n, window;
    enum phase phase;
    int bound, disconnected;
    long sent, acked, received, duplicates;
    unsigned char *seen;
    double *latency_ms;
    double t_connect, t_bound, t_first, t_last, deadline;
    struct rusage ru_first, ru_last;
    char failure[512];
} b;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double ru_cpu(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 + (double)ru->ru_stime.tv_sec +
           (double)ru->ru_stime.tv_usec / 1e6;
}

/* Records the first failure and winds everything down. */
static void fail(const char *fmt, ...)
{
    if (b.failure[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b.failure, sizeof b.failure, fmt, ap);
        va_end(ap);
    }
    b.phase = DONE;
    xmpp_stop(b.ctx);
}

static int set_nodelay(xmpp_conn_t *conn, void *sockp)
{
    (void)conn;
    int fd = *(int *)sockp, one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

/* The condition of an error reply, for the message. */
static const char *error_condition(xmpp_stanza_t *stanza)
{
    xmpp_stanza_t *error = xmpp_stanza_get_child_by_name(stanza, "error");
    xmpp_stanza_t *c = error ? xmpp_stanza_get_children(error) : NULL;
    for (; c; c = xmpp_stanza_get_next(c))
        if (xmpp_stanza_is_tag(c))
            return xmpp_stanza_get_name(c);
    return "unknown";
}

static void send_publish(void)
{
    long seq = ++b.sent;
    xmpp_send_raw_string(b.pub,
                         "<iq type='set' to='%s' id='p%ld'><pubsub xmlns='" NS_PUBSUB "'><publish node='%s'>"
                         "<item id='i%ld'><bench xmlns='" NS_BENCH "' seq='%ld' t='%lld'>" PADDING
                         "</bench></item></publish></pubsub></iq>",
                         b.pubsub_jid, seq, b.node, seq, seq, now_ns());
}

static void finish_measuring(void)
{
    b.t_last = now_s();
    getrusage(RUSAGE_SELF, &b.ru_last);
    b.phase = DELETING;
    xmpp_send_raw_string(b.pub,
                         "<iq type='set' to='%s' id='delete'><pubsub xmlns='" NS_PUBSUB_OWNER "'>"
                         "<delete node='%s'/></pubsub></iq>",
                         b.pubsub_jid, b.node);
}

static int iq_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    (void)userdata;
    const char *type = xmpp_stanza_get_type(stanza);
    const char *id = xmpp_stanza_get_id(stanza);
    if (type == NULL || id == NULL || (strcmp(type, "result") != 0 && strcmp(type, "error") != 0))
        return 1;
    int ok = strcmp(type, "result") == 0;
    if (conn == b.pub && id[0] == 'p') {
        if (!ok) {
            fail("publish %s refused: %s", id, error_condition(stanza));
            return 1;
        }
        b.acked++;
        if (b.sent < b.n)
            send_publish();
        else if (b.acked == b.n && b.received >= b.n && b.phase == PUBLISHING)
            finish_measuring();
    } else if (conn == b.pub && strcmp(id, "create") == 0) {
        if (!ok) {
            fail("creating node %s refused: %s", b.node, error_condition(stanza));
            return 1;
        }
        b.phase = SUBSCRIBING;
        xmpp_send_raw_string(b.sub,
                             "<iq type='set' to='%s' id='subscribe'><pubsub xmlns='" NS_PUBSUB "'>"
                             "<subscribe node='%s' jid='%s'/></pubsub></iq>",
                             b.pubsub_jid, b.node, xmpp_conn_get_bound_jid(b.sub));
    } else if (conn == b.sub && strcmp(id, "subscribe") == 0) {
        if (!ok) {
            fail("subscribing to node %s refused: %s", b.node, error_condition(stanza));
            return 1;
        }
        b.phase = PUBLISHING;
        getrusage(RUSAGE_SELF, &b.ru_first);
        b.t_first = now_s();
        for (long i = 0; i < b.window && b.sent < b.n; i++)
            send_publish();
    } else if (conn == b.pub && strcmp(id, "delete") == 0) {
        /* measuring is over; a refused delete only leaves a node behind */
        if (!ok)
            fprintf(stderr, "pubsub_ref: deleting node %s refused: %s\n", b.node, error_condition(stanza));
        b.phase = CLOSING;
        xmpp_disconnect(b.pub);
        xmpp_disconnect(b.sub);
    }
    return 1;
}

static int message_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    (void)conn;
    (void)userdata;
    long long arrived = now_ns();
    const char *from = xmpp_stanza_get_from(stanza);
    if (from == NULL || strcmp(from, b.pubsub_jid) != 0)
        return 1;
    xmpp_stanza_t *event = xmpp_stanza_get_child_by_name_and_ns(stanza, "event", NS_PUBSUB_EVENT);
    xmpp_stanza_t *items = event ? xmpp_stanza_get_child_by_name(event, "items") : NULL;
    if (items == NULL)
        return 1; /* the delete notification at the end, for one */
    for (xmpp_stanza_t *item = xmpp_stanza_get_children(items); item; item = xmpp_stanza_get_next(item)) {
        if (!xmpp_stanza_is_tag(item) || strcmp(xmpp_stanza_get_name(item), "item") != 0)
            continue;
        xmpp_stanza_t *bench = xmpp_stanza_get_child_by_name_and_ns(item, "bench", NS_BENCH);
        const char *seq_text = bench ? xmpp_stanza_get_attribute(bench, "seq") : NULL;
        const char *t_text = bench ? xmpp_stanza_get_attribute(bench, "t") : NULL;
        if (seq_text == NULL || t_text == NULL) {
            fail("a notification without a bench payload");
            return 1;
        }
        long seq = strtol(seq_text, NULL, 10);
        if (seq < 1 || seq > b.n) {
            fail("a notification for item %s, not one of 1..%ld", seq_text, b.n);
            return 1;
        }
        if (b.seen[seq - 1]) {
            b.duplicates++;
            continue;
        }
        b.seen[seq - 1] = 1;
        b.latency_ms[seq - 1] = (double)(arrived - strtoll(t_text, NULL, 10)) / 1e6;
        b.received++;
    }
    if (b.received >= b.n && b.acked == b.n && b.phase == PUBLISHING)
        finish_measuring();
    return 1;
}

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t event, int error, xmpp_stream_error_t *stream_error,
                         void *userdata)
{
    (void)userdata;
    const char *who = conn == b.pub ? "publisher" : "subscriber";
    if (event == XMPP_CONN_RAW_CONNECT)
        return;
    if (event == XMPP_CONN_CONNECT) {
        if (++b.bound == 2) {
            b.t_bound = now_s();
            b.phase = CREATING;
            xmpp_send_raw_string(b.pub,
                                 "<iq type='set' to='%s' id='create'><pubsub xmlns='" NS_PUBSUB "'>"
                                 "<create node='%s'/><configure><x xmlns='jabber:x:data' type='submit'>"
                                 "<field var='FORM_TYPE' type='hidden'>"
                                 "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
                                 "<field var='pubsub#persist_items'><value>0</value></field>"
                                 "<field var='pubsub#max_items'><value>10</value></field>"
                                 "</x></configure></pubsub></iq>",
                                 b.pubsub_jid, b.node);
        }
        return;
    }
    b.disconnected++;
    if (b.phase != CLOSING) {
        fail("the %s was disconnected (%s%s%s)", who, error ? strerror(error) : "no socket error",
             stream_error ? ", stream error " : "",
             stream_error && stream_error->text ? stream_error->text : (stream_error ? "without text" : ""));
        return;
    }
    if (b.disconnected == 2) {
        b.phase = DONE;
        xmpp_stop(b.ctx);
    }
}

static int deadline_handler(xmpp_ctx_t *ctx, void *userdata)
{
    (void)ctx;
    (void)userdata;
    if (now_s() > b.deadline) {
        fail("deadline passed: %ld of %ld notifications, %ld of %ld publishes acknowledged", b.received, b.n,
             b.acked, b.n);
        return 0;
    }
    return 1;
}

static int compare_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return (a > c) - (a < c);
}

static double percentile(const double *sorted, long n, double p)
{
    long i = (long)(p * (double)n + 0.999999) - 1; /* nearest rank */
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return sorted[i];
}

static long parse_long(const char *what, const char *text, long min)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > 100000000) {
        fprintf(stderr, "pubsub_ref: %s must be a whole number >= %ld, not '%s'\n", what, min, text);
        exit(2);
    }
    return v;
}

static xmpp_conn_t *new_conn(const char *jid, const char *password, const char *ca_file)
{
    xmpp_conn_t *conn = xmpp_conn_new(b.ctx);
    xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_MANDATORY_TLS);
    xmpp_conn_set_jid(conn, jid);
    xmpp_conn_set_pass(conn, password);
    xmpp_conn_set_cafile(conn, ca_file);
    xmpp_conn_set_sockopt_callback(conn, set_nodelay);
    xmpp_handler_add(conn, iq_handler, NULL, "iq", NULL, NULL);
    return conn;
}

int main(int argc, char **argv)
{
    if (argc != 13) {
        fprintf(stderr, "usage: pubsub_ref host port domain pubsub_jid ca_file pub_jid pub_pw sub_jid sub_pw "
                        "node N W\n");
        return 2;
    }
    /* libstrophe writes with plain send(): a server that already closed the socket (at the end
     * of the run) would kill us with SIGPIPE instead of an error. sacmrun ignores it too. */
    signal(SIGPIPE, SIG_IGN);
    const char *host = argv[1], *ca_file = argv[5];
    long port = parse_long("port", argv[2], 1);
    b.pubsub_jid = argv[4];
    b.node = argv[10];
    b.n = parse_long("N", argv[11], 1);
    b.window = parse_long("W", argv[12], 1);
    const char *deadline_env = getenv("PUBSUB_DEADLINE");
    b.seen = calloc((size_t)b.n, 1);
    b.latency_ms = calloc((size_t)b.n, sizeof *b.latency_ms);
    if (b.seen == NULL || b.latency_ms == NULL) {
        fprintf(stderr, "pubsub_ref: out of memory\n");
        return 1;
    }

    xmpp_initialize();
    b.ctx = xmpp_ctx_new(NULL, NULL);
    b.pub = new_conn(argv[6], argv[7], ca_file);
    b.sub = new_conn(argv[8], argv[9], ca_file);
    xmpp_handler_add(b.sub, message_handler, NULL, "message", NULL, NULL);

    b.t_connect = now_s();
    b.deadline = b.t_connect + (deadline_env ? strtod(deadline_env, NULL) : 300.0);
    xmpp_global_timed_handler_add(b.ctx, deadline_handler, 100, NULL);
    if (xmpp_connect_client(b.pub, host, (unsigned short)port, conn_handler, NULL) != XMPP_EOK ||
        xmpp_connect_client(b.sub, host, (unsigned short)port, conn_handler, NULL) != XMPP_EOK) {
        fprintf(stderr, "pubsub_ref: cannot connect to %s port %ld\n", host, port);
        return 1;
    }
    xmpp_run(b.ctx);

    int status = 0;
    if (b.failure[0]) {
        fprintf(stderr, "pubsub_ref: %s\n", b.failure);
        status = 1;
    } else if (b.received != b.n || b.acked != b.n || b.duplicates) {
        fprintf(stderr, "pubsub_ref: %ld of %ld notifications, %ld acknowledged, %ld duplicates\n", b.received,
                b.n, b.acked, b.duplicates);
        status = 1;
    } else {
        struct rusage ru_end;
        getrusage(RUSAGE_SELF, &ru_end);
        qsort(b.latency_ms, (size_t)b.n, sizeof *b.latency_ms, compare_double);
        double span = b.t_last - b.t_first;
        printf("impl=c window=%ld items=%ld items_per_s=%.1f p50_ms=%.3f p99_ms=%.3f cpu_s=%.3f maxrss_kib=%ld "
               "connect_s=%.4f\n",
               b.window, b.received, (double)b.n / span, percentile(b.latency_ms, b.n, 0.50),
               percentile(b.latency_ms, b.n, 0.99), ru_cpu(&b.ru_last) - ru_cpu(&b.ru_first), ru_end.ru_maxrss,
               b.t_bound - b.t_connect);
    }
    xmpp_conn_release(b.pub);
    xmpp_conn_release(b.sub);
    xmpp_ctx_free(b.ctx);
    xmpp_shutdown();
    free(b.seen);
    free(b.latency_ms);
    return status;
}
