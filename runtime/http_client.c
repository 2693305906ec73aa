/* sacm._http_client: HTTPS connections that carry one request at a time, on the libuv loop.
 *
 * The connection is a uv_tcp_t whose bytes go through a TLS stream over memory BIOs, the
 * server's kind (tls_stream.c), so neither the handshake nor a slow server ever blocks the
 * loop. The response is parsed by http-parser. Lua (lua/sacm/http/client.lua) parses the
 * URL, resolves the name, writes the request head, keeps the deadline and tries the next
 * address; this file connects, verifies the server, sends the bytes and reads the response.
 *
 *   ctx  = context{cafile=, cert=, key=, insecure=}      -- an SSL_CTX, reusable
 *   conn = request(ctx, {address=, port=, host=, data=, head=, max_body=}, callback)
 *   conn:park() -> true: idle until the next request      conn:alive() -> true while parked
 *   conn:request({data=, head=, max_body=}, callback) -> conn, or nil, err, stale
 *   callback(res, reusable) or callback(nil, err, stale), once per request unless conn:close()
 *
 * After a response, the connection closes unless it may carry another request (`reusable`:
 * HTTP/1.1, framed by Content-Length or chunked or bodiless, no Connection: close, nothing sent
 * beyond it, our request all sent). The keep-alive pool itself is Lua (lua/sacm/http/pool.lua)
 * holding these userdata: keys, limits, ages and counters are table work, and this file stays
 * one connection's byte pump plus the one idle duty that needs C: reading while parked, to see
 * the server close (or break protocol), and closing then, without keeping the loop alive.
 * `stale` says a reused connection failed because the server had closed it before any byte of
 * the response came back: the request can be tried again on a new connection. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include "sacmrun.h"
#include "options.h"
#include "http_common.h"
#include "http_client_tls.h"
#include "tls_stream.h"

#define CONN_MT "sacm.HttpClientConnection"
#define READ_CHUNK 65536
/* The status line and headers of a response: more is not a server we want to talk to. */
#define MAX_HEAD (64 * 1024)
#define MAX_HEADERS 256

struct conn_box;

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    tls_stream tls;
    http_parser parser;
    struct conn_box *box;
    int cb_ref, self_ref;
    /* the connection: parked = idle in the pool, reading only to see it end */
    int closed, parked, requests;
    /* the current request; finished once its callback ran (or it was abandoned) */
    int finished, close_notify, headers_done, message_done, head_only, got_bytes, reusable;
    int peer_gone; /* the failure was the server closing or resetting the connection */
    size_t max_body;
    buffer out; /* the request, sent when the handshake is done */

    /* the response: reason phrase, then header names (lowercased) and values, in msg.head */
    http_message msg;
    size_t reason_len;

    const char *error;  /* a condition when the request failed, NULL otherwise */
    char error_text[320];
    char peer[INET6_ADDRSTRLEN + 16];
} conn_t;

typedef struct conn_box {
    conn_t *c;
} conn_box;

static http_parser_settings parser_settings;
/* One read at a time on this thread: libuv hands a read to on_read right after on_alloc. */
static char read_buffer[READ_CHUNK];

/* ---------------------------------------------------------------- small helpers */

/* Records the first failure; the pump reports it once the current step is over. */
static int fail(conn_t *c, const char *condition, const char *fmt, ...) SACM_PRINTF(3, 4);
static int fail(conn_t *c, const char *condition, const char *fmt, ...)
{
    if (c->error == NULL) {
        c->error = condition;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->error_text, sizeof c->error_text, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---------------------------------------------------------------- lifetime */

static void on_closed(uv_handle_t *handle)
{
    conn_t *c = handle->data;
    if (c->box)
        c->box->c = NULL;
    tls_stream_free(&c->tls);
    buf_free(&c->out);
    http_message_free(&c->msg);
    free(c);
}

/* Drops the current request's callback and the self-reference that keeps an unfinished
 * request's userdata (and so the connection) alive while Lua holds nothing else of it. */
static void release_refs(conn_t *c)
{
    if (!sacm_state_closing()) {
        lua_State *L = sacm_main_state();
        luaL_unref(L, LUA_REGISTRYINDEX, c->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
    }
    c->cb_ref = c->self_ref = LUA_NOREF;
}

/* Closes at once, without calling back; idempotent. Memory lives until libuv's close callback,
 * so a callback still on the stack may look at c->closed. */
static void conn_close(conn_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    release_refs(c);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void push_response(lua_State *L, conn_t *c)
{
    const char *h = c->msg.head.p ? c->msg.head.p : "";
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, c->parser.status_code);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, h, c->reason_len);
    lua_setfield(L, -2, "reason");
    lua_pushfstring(L, "HTTP/%d.%d", (int)c->parser.http_major, (int)c->parser.http_minor);
    lua_setfield(L, -2, "version");
    headers_push(L, &c->msg.headers, h);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, c->msg.body.p ? c->msg.body.p : "", c->msg.body.len);
    lua_setfield(L, -2, "body");
    tls_stream_push_info(L, &c->tls, 0);
    lua_setfield(L, -2, "tls");
}

/* Reports the outcome to Lua, once. The connection closes unless the response left it fit for
 * another request: then it stays open, not reading, and unreferenced so that it cannot keep the
 * loop alive if Lua drops it instead of parking it (the finalizer closes it then). */
static void finish(conn_t *c)
{
    if (c->finished || c->closed)
        return;
    c->finished = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    lua_State *L = sacm_main_state();
    if (sacm_state_closing()) {
        conn_close(c);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->cb_ref);
    if (c->error) {
        lua_pushnil(L);
        sacm_push_error(L, c->error, "%s", c->error_text);
        /* nothing of the response came back: the server had closed the connection it kept idle */
        lua_pushboolean(L, c->requests > 1 && c->peer_gone && !c->got_bytes);
        conn_close(c);
        sacm_invoke(L, 3);
        return;
    }
    /* The server answered before libuv handed all of our request to the kernel: it did not read
     * it all, and what it did not read would be taken for the next request. */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > 0 || tls_stream_has_output(&c->tls))
        c->reusable = 0;
    push_response(L, c);
    lua_pushboolean(L, c->reusable);
    /* a posture document can be megabytes: an idle connection holds none of it */
    http_message_free(&c->msg);
    if (c->reusable) {
        release_refs(c);
        uv_unref((uv_handle_t *)&c->tcp);
    } else {
        conn_close(c);
    }
    sacm_invoke(L, 2);
}

/* ---------------------------------------------------------------- writing */

static int is_peer_gone(int status)
{
    return status == UV_EOF || status == UV_ECONNRESET || status == UV_EPIPE;
}

static void on_write(uv_write_t *req, int status)
{
    conn_t *c = req->data;
    free(req);
    if (status < 0 && status != UV_ECANCELED && !c->closed) {
        if (c->finished) { /* a request already answered, or parked: nobody to tell */
            conn_close(c);
            return;
        }
        c->peer_gone = is_peer_gone(status);
        fail(c, uv_err_name(status), "sending the request to %s: %s", c->peer, uv_strerror(status));
        finish(c);
    }
}

/* Sends whatever OpenSSL produced. */
static void flush(conn_t *c)
{
    if (c->closed)
        return;
    int rc = tls_stream_flush(&c->tls);
    if (rc == UV_ENOMEM) {
        fail(c, "ENOMEM", "out of memory");
    } else if (rc < 0) {
        c->peer_gone = is_peer_gone(rc);
        fail(c, uv_err_name(rc), "sending the request to %s: %s", c->peer, uv_strerror(rc));
    }
}

/* Encrypts the request for the server (flush sends it). */
static int send_request(conn_t *c)
{
    if (tls_stream_write(&c->tls, c->out.p, c->out.len) < 0)
        return fail(c, "tls-failed", "TLS write to %s failed: %s", c->peer, c->tls.reason);
    buf_free(&c->out);
    return 0;
}

/* ---------------------------------------------------------------- parsing the response */

static int check_head(conn_t *c)
{
    if (c->msg.head.len > MAX_HEAD)
        return fail(c, "bad-response", "the response head from %s is larger than %d KiB", c->peer, MAX_HEAD / 1024);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    /* also after an interim (1xx) response: only the final one counts */
    c->msg.head.len = 0;
    c->reason_len = 0;
    headers_clear(&c->msg.headers);
    c->headers_done = 0;
    return 0;
}

static int on_status(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (buf_append(&c->msg.head, at, len) < 0)
        return fail(c, "ENOMEM", "out of memory");
    c->reason_len += len;
    return check_head(c);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    switch (headers_add_field(&c->msg.headers, &c->msg.head, at, len, MAX_HEADERS)) {
    case HEADERS_TOO_MANY:
        return fail(c, "bad-response", "more than %d header fields from %s", MAX_HEADERS, c->peer);
    case HEADERS_NO_MEMORY:
        return fail(c, "ENOMEM", "out of memory");
    }
    return check_head(c);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    switch (headers_add_value(&c->msg.headers, &c->msg.head, at, len)) {
    case HEADERS_NO_NAME:
        return fail(c, "bad-response", "a header value without a name from %s", c->peer);
    case HEADERS_NO_MEMORY:
        return fail(c, "ENOMEM", "out of memory");
    }
    return check_head(c);
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    c->headers_done = 1;
    unsigned status = p->status_code;
    /* RFC 9112 6.3: whatever the header fields say, these have no body */
    if (c->head_only || (status >= 100 && status < 200) || status == 204 || status == 304)
        return 1;
    if (p->flags & F_CONTENTLENGTH) {
        if (p->content_length > c->max_body) {
            fail(c, "too-large", "the response body from %s is %llu bytes, more than the limit of %zu", c->peer,
                 (unsigned long long)p->content_length, c->max_body);
            return -1;
        }
        /* the exact size at once: growing by doubling would hold up to twice the body */
        if (p->content_length > c->msg.body.cap) {
            char *b = realloc(c->msg.body.p, (size_t)p->content_length);
            if (b == NULL)
                return fail(c, "ENOMEM", "out of memory");
            c->msg.body.p = b;
            c->msg.body.cap = (size_t)p->content_length;
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->msg.body.len + len > c->max_body)
        return fail(c, "too-large", "the response body from %s is larger than the limit of %zu bytes", c->peer,
                    c->max_body);
    if (buf_append(&c->msg.body, at, len) < 0)
        return fail(c, "ENOMEM", "out of memory");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101)
        return 0; /* interim (100 Continue, 103 Early Hints): the final response follows */
    c->message_done = 1;
    /* RFC 9112 9.3: HTTP/1.1 persists unless Connection: close; http_should_keep_alive also says
     * no to a body that only the connection's end delimits. HTTP/1.0 keep-alive is not worth it. */
    c->reusable = p->http_major == 1 && p->http_minor >= 1 && !p->upgrade && http_should_keep_alive(p);
    http_parser_pause(p, 1); /* whatever follows is not ours */
    return 0;
}

static void feed(conn_t *c, const char *data, size_t len)
{
    size_t used = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED)
        fail(c, "bad-response", "malformed response from %s: %s", c->peer, http_errno_description(e));
    if (c->message_done && used < len)
        c->reusable = 0; /* bytes after the response that no request asked for */
}

/* The server closed the connection (TCP end, or TLS close_notify). */
static void end_of_stream(conn_t *c)
{
    if (c->message_done || c->error)
        return;
    c->peer_gone = 1;
    if (!c->tls.handshake_done) {
        fail(c, "tls-failed", "%s closed the connection during the TLS handshake", c->peer);
    } else if (c->headers_done && !(c->parser.flags & (F_CHUNKED | F_CONTENTLENGTH))) {
        /* A body that ends with the connection: only a TLS close_notify tells a complete body
         * from one cut short by someone closing the TCP connection. */
        if (!c->close_notify)
            fail(c, "bad-response", "%s closed the connection without TLS close_notify: the body may be truncated",
                 c->peer);
        else
            feed(c, NULL, 0);
    } else if (!c->got_bytes) {
        fail(c, "bad-response", "%s closed the connection without a response", c->peer);
    }
    if (!c->message_done)
        fail(c, "bad-response", "%s closed the connection before the response ended", c->peer);
}

/* ---------------------------------------------------------------- the pump */

static void handshake_failed(conn_t *c)
{
    const tls_stream *t = &c->tls;
    if (t->verify_result != X509_V_OK)
        fail(c, "tls-verification-failed", "the certificate of %s did not verify: %s", c->peer,
             X509_verify_cert_error_string(t->verify_result));
    else if (t->peer_ended)
        fail(c, "tls-failed", "%s closed the connection during the TLS handshake", c->peer);
    else
        fail(c, "tls-failed", "TLS handshake with %s failed: %s", c->peer, t->reason);
}

/* The TLS stream's plaintext: the response, parsed as it comes. */
static int on_plain(void *owner, const char *data, size_t len)
{
    conn_t *c = owner;
    c->got_bytes = 1;
    feed(c, data, len);
    return c->error || c->message_done;
}

/* Advances the handshake, sends the request, reads and parses what has arrived. */
static void pump(conn_t *c)
{
    if (c->closed || c->finished)
        return;
    if (!c->tls.handshake_done) {
        int rc = tls_stream_handshake(&c->tls);
        if (rc != TLS_STREAM_DONE) {
            if (rc == TLS_STREAM_FAILED)
                handshake_failed(c);
            flush(c); /* the next handshake message, or an alert that says why we stop */
            if (c->error)
                finish(c);
            return;
        }
        send_request(c);
    }
    if (!c->error && !c->message_done) {
        switch (tls_stream_read(&c->tls, on_plain)) {
        case TLS_STREAM_CLOSED:
            c->close_notify = 1;
            end_of_stream(c);
            break;
        case TLS_STREAM_FAILED:
            fail(c, "tls-failed", "TLS read from %s failed: %s", c->peer, c->tls.reason);
            break;
        }
    }
    flush(c);
    if (c->error || c->message_done)
        finish(c);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)handle;
    (void)suggested;
    *buf = uv_buf_init(read_buffer, sizeof read_buffer);
}

/* A parked connection reads only to learn that it is no longer usable: the server closed it
 * (its idle timeout, a restart) or sent bytes nobody asked for. It closes at once then, and the
 * pool finds it dead instead of sending a request into it. A TLS 1.3 session ticket or key
 * update is no reason: SSL_read handles those and wants more. */
/* Plaintext while parked is what nobody asked for: the connection is no longer usable. */
static int unasked_plain(void *owner, const char *data, size_t len)
{
    (void)owner;
    (void)data;
    (void)len;
    return 1;
}

static void parked_input(conn_t *c)
{
    if (tls_stream_read(&c->tls, unasked_plain) == TLS_STREAM_WANT) {
        flush(c); /* a key update may want its answer */
        return;
    }
    ERR_clear_error();
    conn_close(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;
    if (c->closed)
        return;
    if (c->parked) {
        if (nread < 0 || tls_stream_input(&c->tls, buf->base, (size_t)nread) < 0)
            conn_close(c);
        else if (nread > 0)
            parked_input(c);
        return;
    }
    if (c->finished)
        return;
    if (nread == UV_EOF) {
        pump(c); /* what is still buffered in OpenSSL comes first */
        if (c->closed || c->finished)
            return;
        end_of_stream(c);
        finish(c);
        return;
    }
    if (nread < 0) {
        c->peer_gone = is_peer_gone((int)nread);
        fail(c, uv_err_name((int)nread), "reading from %s: %s", c->peer, uv_strerror((int)nread));
        finish(c);
        return;
    }
    if (nread == 0)
        return;
    if (tls_stream_input(&c->tls, buf->base, (size_t)nread) < 0) {
        fail(c, "ENOMEM", "out of memory");
        finish(c);
        return;
    }
    pump(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    if (c->closed)
        return; /* closed while connecting: libuv cancelled the attempt */
    if (status < 0) {
        fail(c, uv_err_name(status), "connecting to %s: %s", c->peer, uv_strerror(status));
        finish(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        fail(c, uv_err_name(rc), "reading from %s: %s", c->peer, uv_strerror(rc));
        finish(c);
        return;
    }
    pump(c); /* the ClientHello */
}

/* ---------------------------------------------------------------- Lua: requests */

typedef struct {
    const char *data;
    size_t len;
    int head_only;
    size_t max_body;
} request_opts;

/* data (the whole request), head (true: the response has no body), max_body */
static void check_request_opts(lua_State *L, int idx, request_opts *o)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    o->max_body = (size_t)sacm_opt_integer(L, idx, "http.request", "max_body", 16 << 20, 0);
    lua_getfield(L, idx, "data");
    o->data = luaL_checklstring(L, -1, &o->len);
    lua_pop(L, 1); /* the options table keeps the string alive */
    lua_getfield(L, idx, "head");
    o->head_only = lua_toboolean(L, -1);
    lua_pop(L, 1);
}

/* Makes the connection's state that of a new request, whose callback is at cb_idx and whose
 * userdata at self_idx; -1 when out of memory. */
static int begin_request(lua_State *L, conn_t *c, const request_opts *o, int cb_idx, int self_idx)
{
    c->finished = c->headers_done = c->message_done = c->got_bytes = c->close_notify = 0;
    c->reusable = c->peer_gone = 0;
    c->error = NULL;
    c->head_only = o->head_only;
    c->max_body = o->max_body;
    c->requests++;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    if (buf_append(&c->out, o->data, o->len) < 0)
        return -1;
    lua_pushvalue(L, cb_idx);
    c->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* in flight, the request keeps its userdata (and the program) alive */
    lua_pushvalue(L, self_idx);
    c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* request(ctx, opts, callback) -> conn, or nil, err: a new connection and its first request.
 * opts: address (numeric), port, host (the name the certificate must carry: a DNS name, sent
 * as SNI, or an IP literal), and those of check_request_opts. */
static int l_request(lua_State *L)
{
    context_box *cbox = client_tls_check_context(L, 1);
    request_opts o;
    check_request_opts(L, 2, &o);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    const char *address = sacm_opt_string(L, 2, "http.request", "address", 0);
    const char *host = sacm_opt_string(L, 2, "http.request", "host", 0);
    lua_Integer port = sacm_opt_integer(L, 2, "http.request", "port", 443, 0);
    luaL_argcheck(L, address != NULL && host != NULL, 2, "address and host are required");
    luaL_argcheck(L, port > 0 && port < 65536, 2, "port out of range");
    luaL_argcheck(L, cbox->ctx != NULL, 1, "closed TLS context");

    struct sockaddr_storage addr;
    int is_v6 = strchr(address, ':') != NULL;
    int rc = is_v6 ? uv_ip6_addr(address, (int)port, (struct sockaddr_in6 *)&addr)
                   : uv_ip4_addr(address, (int)port, (struct sockaddr_in *)&addr);
    if (rc < 0)
        return luaL_error(L, "http: address must be a numeric IPv4 or IPv6 address, got \"%s\"", address);

    conn_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    int self = lua_gettop(L);
    box->c = NULL;
    luaL_setmetatable(L, CONN_MT);
    conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return luaL_error(L, "out of memory");
    c->cb_ref = c->self_ref = LUA_NOREF;
    snprintf(c->peer, sizeof c->peer, is_v6 ? "[%s]:%d" : "%s:%d", address, (int)port);
    uv_tcp_init(sacm_loop(), &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    box->c = c;
    c->box = box;

    ERR_clear_error();
    if (tls_stream_init(&c->tls, cbox->ctx, 0, (uv_stream_t *)&c->tcp, c, on_write) < 0) {
        conn_close(c);
        return luaL_error(L, "out of memory");
    }

    if (client_tls_expect(c->tls.ssl, cbox, host) < 0) {
        char text[200];
        conn_close(c);
        return sacm_fail(L, "bad-url", "cannot use \"%s\" as a TLS server name: %s", host,
                         SSL_FAILURE_TEXT(text));
    }
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&addr, on_connect);
    if (rc < 0) {
        conn_close(c);
        return sacm_fail_uv(L, rc, c->peer);
    }
    if (begin_request(L, c, &o, 3, self) < 0) {
        conn_close(c);
        return luaL_error(L, "out of memory");
    }
    return 1;
}

/* conn:request(opts, callback) -> conn, or nil, err, stale: the next request on a connection
 * whose last response left it reusable (parked or not). The TLS session and the server's
 * verified identity are the connection's: the pool only asks this of the same host and port
 * with the same TLS options. */
static int l_conn_request(lua_State *L)
{
    conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    request_opts o;
    check_request_opts(L, 2, &o);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    conn_t *c = box->c;
    if (c == NULL || c->closed) {
        lua_pushnil(L);
        sacm_push_error(L, "closed", "the connection was closed while idle");
        lua_pushboolean(L, 1);
        return 3;
    }
    if (!c->finished || !c->reusable)
        return luaL_error(L, "http: a request on a connection that is busy or cannot be reused");
    if (c->parked) {
        c->parked = 0; /* reading already */
    } else {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (rc < 0) {
            conn_close(c);
            return sacm_fail(L, uv_err_name(rc), "reading from %s: %s", c->peer, uv_strerror(rc));
        }
    }
    uv_ref((uv_handle_t *)&c->tcp);
    if (begin_request(L, c, &o, 3, 1) < 0) {
        conn_close(c);
        return luaL_error(L, "out of memory");
    }
    send_request(c);
    flush(c);
    if (c->error) {
        lua_pushnil(L);
        sacm_push_error(L, c->error, "%s", c->error_text);
        lua_pushboolean(L, c->peer_gone);
        conn_close(c);
        return 3;
    }
    lua_settop(L, 1);
    return 1;
}

/* conn:park() -> true when the connection now waits, idle, for its next request: reading (to
 * notice the server's close) but not keeping the loop alive. false when it cannot be reused. */
static int l_conn_park(lua_State *L)
{
    conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    conn_t *c = box->c;
    if (c && !c->closed && !c->parked && c->finished && c->reusable) {
        c->parked = 1;
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
            conn_close(c);
        else
            parked_input(c); /* whatever came with the response, after it */
    }
    lua_pushboolean(L, c && !c->closed && c->parked);
    return 1;
}

/* conn:alive() -> true while parked and open (the server has not closed it) */
static int l_conn_alive(lua_State *L)
{
    conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    lua_pushboolean(L, box->c && !box->c->closed && box->c->parked);
    return 1;
}

/* conn:close(): abandons the request in flight, if any (its callback is not called), and closes
 * the connection. Idempotent. */
static int l_conn_close(lua_State *L)
{
    conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    if (box->c)
        conn_close(box->c);
    return 0;
}

static int l_conn_gc(lua_State *L)
{
    conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    if (box->c) {
        box->c->box = NULL;
        conn_close(box->c);
    }
    box->c = NULL;
    return 0;
}

int luaopen_sacm__http_client(lua_State *L)
{
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_status = on_status;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;

    client_tls_define_context(L);
    static const luaL_Reg conn_methods[] = {{"request", l_conn_request}, {"park", l_conn_park},
                                            {"alive", l_conn_alive}, {"close", l_conn_close},
                                            {NULL, NULL}};
    sacm_define_type(L, CONN_MT, conn_methods, l_conn_gc);
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {{"context", client_tls_context}, {"request", l_request}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
