/* http_conn.c: the HTTPS server's connections from accept to close.
 *
 * Slow clients are the cheap attack on a server like this one (slowloris: open many connections,
 * send a byte now and then), so every connection is always under a deadline, and the server
 * never refuses a newcomer while it holds connections that are doing nothing useful:
 *
 * - The TLS handshake is due within timeouts.handshake, and the first request's headers within
 *   timeouts.headers of connecting (not of their first byte: trickling gains nothing). Later
 *   requests on a keep-alive connection get timeouts.headers from their first byte.
 * - At the connection limit, or at the per-address limit for the newcomer's address, the
 *   connection that has waited longest without completing a request (lingering after an error,
 *   idle between requests, in the handshake or in its headers or body) is shed to make room. Only
 *   when every connection has a request in a handler (or a response on its way) is the newcomer
 *   refused. An address at its own limit only ever sheds its own connections, so one client
 *   cannot push out others by opening many.
 *
 * The pump (hs_process) reads TLS records, feeds the plaintext to the parser and hands complete
 * requests to Lua one at a time, never from inside Lua. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "http_server.h"

static void http_date(char out[32])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 32, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

void hs_server_maybe_free(server_t *s)
{
    if (s->open_handles > 0 || s->nconns > 0)
        return;
    SSL_CTX_free(s->ctx);
    free(s);
}

static void on_conn_closed(uv_handle_t *handle)
{
    conn_t *c = handle->data;
    if (--c->open_handles > 0)
        return;
    server_t *s = c->srv;
    if (c->queued) {
        for (conn_t **p = &s->ready; *p; p = &(*p)->ready_next) {
            if (*p == c) {
                *p = c->ready_next;
                break;
            }
        }
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    if (c->box)
        c->box->c = NULL;
    if (!sacm_state_closing()) {
        lua_State *L = sacm_main_state();
        luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, c->tls_ref);
    }
    tls_stream_free(&c->tls);
    http_message_free(&c->msg);
    buf_free(&c->pending);
    free(c);
    hs_server_maybe_free(s);
}

/* Closes at once: pending writes are cancelled. */
void hs_conn_close(conn_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0 && !c->closed)
        hs_conn_close(c);
}

/* Ends the connection politely: close_notify, the rest of what we wrote, then our side of TCP;
 * lingers reading (and discarding) until the client closes too, or the linger deadline. */
void hs_conn_finish(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->busy = 0;
    if (c->tls.handshake_done) {
        tls_stream_shutdown(&c->tls);
        hs_flush(c);
    }
    if (c->closed)
        return;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        hs_conn_close(c);
        return;
    }
    hs_enter(c, ST_LINGER);
    hs_update_reading(c);
}

/* A response the server writes by itself (errors, timeouts); the connection closes after it. */
void hs_send_error(conn_t *c, int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {400, "Bad Request"},         {408, "Request Timeout"},
        {413, "Content Too Large"},   {414, "URI Too Long"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"}, {503, "Service Unavailable"},
        {505, "HTTP Version Not Supported"},
    };
    const char *reason = "Error";
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status)
            reason = reasons[i].reason;
    if (status < 500 || status == 505) /* the client's fault */
        c->srv->bad_requests++;
    if (c->tls.handshake_done && !c->closing) {
        char date[32], msg[512];
        http_date(date);
        int body_len = (int)strlen(reason) + 1;
        int n = snprintf(msg, sizeof msg,
                         "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Content-Length: %d\r\nConnection: close\r\n\r\n%s\n",
                         status, reason, date, body_len, reason);
        if (hs_tls_write(c, msg, (size_t)n) < 0) {
            hs_conn_close(c);
            return;
        }
    }
    hs_conn_finish(c);
}

static void on_timer(uv_timer_t *timer)
{
    conn_t *c = timer->data;
    if (c->closed)
        return;
    c->srv->timeouts++;
    switch (c->state) {
    case ST_HANDSHAKE:
        sacm_log(SACM_LOG_DEBUG, "http", "%s:%d: no request in time", c->remote, c->remote_port);
        if (c->tls.handshake_done)
            hs_conn_finish(c);
        else
            hs_conn_close(c);
        break;
    case ST_HEADERS:
    case ST_BODY:
        sacm_log(SACM_LOG_DEBUG, "http", "%s:%d: request %s did not arrive in time", c->remote, c->remote_port,
                 c->state == ST_HEADERS ? "headers" : "body");
        hs_send_error(c, 408);
        break;
    case ST_HANDLER:
        sacm_log(SACM_LOG_WARN, "http", "%s:%d: the handler did not answer in time", c->remote, c->remote_port);
        c->busy = 0;
        hs_send_error(c, 503);
        break;
    case ST_IDLE:
        if (c->writes_pending > 0)
            hs_conn_close(c); /* the client does not read what we send */
        else
            hs_conn_finish(c);
        break;
    case ST_LINGER:
        hs_conn_close(c);
        break;
    }
}

void hs_arm_timer(conn_t *c)
{
    if (c->closed)
        return;
    server_t *s = c->srv;
    uv_update_time(sacm_loop());
    uint64_t now = uv_now(sacm_loop()), ms = 0;
    switch (c->state) {
    case ST_HANDSHAKE:
        /* the handshake within its own deadline; the first request's headers within t_headers
         * of connecting, whatever came before (a deadline never restarts for trickled bytes) */
        if (!c->tls.handshake_done) {
            ms = s->t_handshake < s->t_headers ? s->t_handshake : s->t_headers;
            ms = c->started + ms > now ? c->started + ms - now : 1;
            break;
        }
        /* fall through */
    case ST_HEADERS: {
        uint64_t from = c->served == 0 ? c->started : c->since;
        ms = from + s->t_headers > now ? from + s->t_headers - now : 1;
        break;
    }
    case ST_BODY: ms = s->t_body; break;
    case ST_HANDLER: ms = s->t_handler; break;
    case ST_IDLE: ms = c->writes_pending ? s->t_write : s->t_idle; break;
    case ST_LINGER: ms = s->t_linger; break;
    }
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* Enters a state and starts its deadline. */
void hs_enter(conn_t *c, enum conn_state st)
{
    if (c->state != st) {
        c->state = st;
        c->since = uv_now(sacm_loop());
    }
    hs_arm_timer(c);
}

/* Whether no more input should be taken now: the connection is ending, Lua has a request, or
 * the client does not read what we send. */
static int must_pause(conn_t *c)
{
    if (c->closing || c->busy)
        return 1;
    if (c->tcp.write_queue_size > WRITE_HIGH_WATER) {
        c->write_blocked = 1;
        return 1;
    }
    return 0;
}

/* Feeds plaintext to the parser, answers an error it found or hands over a complete request;
 * 1 when no more input should be taken now. */
static int take(conn_t *c, const char *data, size_t len)
{
    hs_feed(c, data, len);
    if (c->error_status) {
        hs_send_error(c, c->error_status);
        return 1;
    }
    if (c->request_ready)
        hs_deliver(c);
    else if (c->parser.upgrade)
        return 1;
    return 0;
}

/* The pipelined requests read before, then as much as may be taken. */
static int take_pending(conn_t *c)
{
    while (!must_pause(c)) {
        if (c->pending.len == 0)
            return 0;
        if (take(c, c->pending.p, c->pending.len))
            return 1;
    }
    return 1;
}

/* Plaintext from the TLS stream: parsed, requests handed over one at a time; nonzero stops
 * the pump (tls_stream_read). */
static int on_plain(void *owner, const char *data, size_t len)
{
    conn_t *c = owner;
    return take(c, data, len) || take_pending(c);
}

void hs_process(conn_t *c)
{
    if (c->closing || c->in_process)
        return;
    c->in_process = 1;
    int handshaking = !c->tls.handshake_done;
    if (!hs_handshake(c))
        goto out;
    if (handshaking)
        hs_arm_timer(c); /* now the headers' deadline, counted from connecting */
    if (take_pending(c))
        goto out;
    switch (tls_stream_read(&c->tls, on_plain)) {
    case TLS_STREAM_CLOSED:
        hs_conn_finish(c); /* the client's close_notify */
        break;
    case TLS_STREAM_FAILED:
        sacm_log(SACM_LOG_DEBUG, "http", "TLS read from %s:%d failed: %s", c->remote, c->remote_port, c->tls.reason);
        hs_conn_close(c);
        break;
    }
out:
    c->in_process = 0;
    hs_flush(c);
    hs_update_reading(c);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn_t *c = handle->data;
    *buf = uv_buf_init(c->srv->readbuf, sizeof c->srv->readbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;
    if (c->closed)
        return;
    if (nread < 0) {
        /* EOF or a reset: nothing more will come, and an unfinished request never will */
        hs_conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->state == ST_LINGER)
        return; /* discarded: only the client's EOF matters now */
    if (tls_stream_input(&c->tls, buf->base, (size_t)nread) < 0) {
        hs_conn_close(c);
        return;
    }
    hs_process(c);
}

/* Reads while a request can be taken; stops while Lua has one (the client waits, its bytes wait
 * in the kernel's buffers). */
void hs_update_reading(conn_t *c)
{
    if (c->closed)
        return;
    int want = !c->busy && !c->write_blocked;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void on_idle(uv_idle_t *idle)
{
    server_t *s = idle->data;
    while (s->ready) {
        conn_t *c = s->ready;
        s->ready = c->ready_next;
        c->queued = 0;
        if (!c->closed)
            hs_process(c);
    }
    uv_idle_stop(idle);
}

/* Processes the connection soon, from the loop: never from inside Lua, never re-entering. */
void hs_schedule(conn_t *c)
{
    if (c->queued || c->closed)
        return;
    c->queued = 1;
    c->ready_next = c->srv->ready;
    c->srv->ready = c;
    if (!c->srv->closed)
        uv_idle_start(&c->srv->idle, on_idle);
}

/* Whether c may be shed to make room: it has no request in a handler and no response on its way,
 * so closing it loses nothing that was asked for. Lower ranks go first. */
static int shed_rank(const conn_t *c)
{
    if (c->closed || c->busy || c->writes_pending > 0)
        return -1;
    switch (c->state) {
    case ST_LINGER: return 0;    /* already answered and closing */
    case ST_IDLE: return 1;      /* between requests */
    case ST_HANDSHAKE: return 2; /* no request yet */
    case ST_HEADERS: return 2;
    case ST_BODY: return 3;      /* a request under way, if slowly */
    case ST_HANDLER: return -1;
    }
    return -1;
}

/* Keeps the best victim so far: lower rank first, then the one waiting the longest. */
static void consider(conn_t **best, conn_t *c, int rank)
{
    if (rank < 0)
        return;
    if (*best == NULL) {
        *best = c;
        return;
    }
    int brank = shed_rank(*best);
    if (rank < brank || (rank == brank && c->since < (*best)->since))
        *best = c;
}

/* Makes room for newcomer c, or says there is none (-1). One pass over the connections: their
 * number is bounded by the limit, and this runs only once per accepted connection. */
static int make_room(server_t *s, conn_t *c)
{
    int live = 0, same = 0;
    conn_t *any = NULL, *own = NULL;
    for (conn_t *o = s->conns; o; o = o->next) {
        if (o == c || o->closed)
            continue;
        live++;
        int rank = shed_rank(o);
        consider(&any, o, rank);
        if (strcmp(o->remote, c->remote) == 0) {
            same++;
            consider(&own, o, rank);
        }
    }
    conn_t *victim = NULL;
    const char *why = NULL;
    if (same >= s->max_per_address) {
        victim = own;
        why = "per-address";
    } else if (live >= s->max_connections) {
        victim = any;
        why = "connection";
    } else {
        return 0;
    }
    if (victim == NULL) {
        s->refused++;
        sacm_log(SACM_LOG_INFO, "http", "refused %s:%d: at the %s limit (%d open, %d from it) and every connection is busy",
                 c->remote, c->remote_port, why, live, same);
        return -1;
    }
    s->shed++;
    sacm_log(SACM_LOG_DEBUG, "http", "shed %s:%d (waited %llu ms without a request) for %s:%d: at the %s limit",
             victim->remote, victim->remote_port,
             (unsigned long long)(uv_now(sacm_loop()) - victim->since), c->remote, c->remote_port, why);
    hs_conn_close(victim);
    return 0;
}

void hs_on_connection(uv_stream_t *listener, int status)
{
    server_t *s = listener->data;
    if (status < 0) {
        sacm_log(SACM_LOG_WARN, "http", "accept failed: %s", uv_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->srv = s;
    c->self_ref = c->tls_ref = LUA_NOREF;
    uv_tcp_init(sacm_loop(), &c->tcp);
    uv_timer_init(sacm_loop(), &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0 || s->closed) {
        hs_conn_close(c);
        return;
    }
    struct sockaddr_storage addr;
    int len = sizeof addr;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&addr, &len) == 0) {
        if (addr.ss_family == AF_INET6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
            uv_ip6_name(a6, c->remote, sizeof c->remote);
            c->remote_port = ntohs(a6->sin6_port);
        } else {
            struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
            uv_ip4_name(a4, c->remote, sizeof c->remote);
            c->remote_port = ntohs(a4->sin_port);
        }
    }
    if (make_room(s, c) < 0) {
        hs_conn_close(c);
        return;
    }
    s->accepted++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (hs_tls_start(c) < 0) {
        hs_conn_close(c);
        return;
    }
    hs_parser_init(c);

    lua_State *L = sacm_main_state();
    conn_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->c = c;
    luaL_setmetatable(L, CONN_MT);
    c->box = box;
    c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    uv_update_time(sacm_loop());
    c->started = c->since = uv_now(sacm_loop());
    c->state = ST_HANDSHAKE;
    hs_arm_timer(c);
    hs_update_reading(c);
}
