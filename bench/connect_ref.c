/* bench/connect_ref.c: the reference of bench/connect.sh. A plain libstrophe client, on its own
 * select() loop (xmpp_run), logs in N times in a row (TLS verified against CA_FILE, SASL, bind),
 * disconnecting after each, and prints the median CPU and wall time of one login (from the
 * connect call to the connected event; the disconnect is not counted):
 *
 *   connect_ref HOST PORT JID PASSWORD CA_FILE N
 *   -> impl=c connects=N cpu_ms_median= wall_ms_median=
 *
 * CPU is the process's user + system time around each login (getrusage), wall the monotonic clock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <strophe.h>

static int connected, failed;
static double cpu_at_connect, wall_at_connect; /* the login ends at the connected event */

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t event, int error, xmpp_stream_error_t *stream_error,
                         void *userdata)
{
    (void)error;
    (void)stream_error;
    xmpp_ctx_t *ctx = userdata;
    if (event == XMPP_CONN_CONNECT) {
        cpu_at_connect = cpu_ms();
        wall_at_connect = wall_ms();
        connected = 1;
        xmpp_disconnect(conn);
    } else if (event == XMPP_CONN_DISCONNECT || event == XMPP_CONN_FAIL) {
        if (!connected)
            failed = 1;
        xmpp_stop(ctx);
    }
}

static int compare(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: connect_ref HOST PORT JID PASSWORD CA_FILE N\n");
        return 2;
    }
    const char *host = argv[1], *jid = argv[3], *password = argv[4], *ca_file = argv[5];
    long port = strtol(argv[2], NULL, 10), n = strtol(argv[6], NULL, 10);
    if (port < 1 || port > 65535 || n < 1 || n > 100000) {
        fprintf(stderr, "connect_ref: PORT must be 1-65535 and N 1-100000\n");
        return 2;
    }
    double *cpu = calloc((size_t)n, sizeof *cpu), *wall = calloc((size_t)n, sizeof *wall);
    if (!cpu || !wall)
        return 1;
    xmpp_initialize();
    xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, NULL);
    for (long i = 0; i < n; i++) {
        xmpp_conn_t *conn = xmpp_conn_new(ctx);
        xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_MANDATORY_TLS);
        xmpp_conn_set_jid(conn, jid);
        xmpp_conn_set_pass(conn, password);
        xmpp_conn_set_cafile(conn, ca_file);
        connected = failed = 0;
        double c0 = cpu_ms(), w0 = wall_ms();
        if (xmpp_connect_client(conn, host, (unsigned short)port, conn_handler, ctx) != XMPP_EOK) {
            fprintf(stderr, "connect_ref: cannot connect to %s port %ld\n", host, port);
            return 1;
        }
        xmpp_run(ctx);
        cpu[i] = cpu_at_connect - c0;
        wall[i] = wall_at_connect - w0;
        xmpp_conn_release(conn);
        if (failed) {
            fprintf(stderr, "connect_ref: login %ld as %s failed\n", i + 1, jid);
            return 1;
        }
    }
    qsort(cpu, (size_t)n, sizeof *cpu, compare);
    qsort(wall, (size_t)n, sizeof *wall, compare);
    printf("impl=c connects=%ld cpu_ms_median=%.2f wall_ms_median=%.2f\n", n, cpu[n / 2], wall[n / 2]);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
    free(cpu);
    free(wall);
    return 0;
}
