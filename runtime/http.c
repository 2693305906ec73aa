/* sacm._http: an HTTPS/1.1 server on the libuv loop.
 *
 * Each connection is a uv_tcp_t whose bytes go through a TLS stream over memory BIOs
 * (tls_stream.c, used as http_tls.c says; nothing here ever blocks). Connections from accept to
 * close, their deadlines and the connection limits are in http_conn.c. Requests are parsed by
 * http-parser, never by hand. One request per connection is in Lua at a time: the parser is
 * paused when a message is complete, so pipelined requests are answered in order, and reading
 * stops until the response is written (back-pressure on a client that floods us).
 *
 * Every limit a client could abuse is enforced here, before Lua sees anything: sizes of the
 * request line, the headers and the body (414/431/413, a chunk size as soon as it is read), the
 * protocol version (505), deadlines for the handshake and headers, the body, an idle keep-alive
 * connection, a slow reader and a slow handler, and the number of connections, in all and per
 * client address. After an error response the connection is closed, lingering a moment so the
 * client reads the answer instead of a reset.
 *
 * Lua sees: on_request(conn, req) for every complete request; conn:respond(head, body, close). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <http_parser.h>
#include <openssl/ssl.h>
#include "options.h"
#include "http_server.h"

static http_parser_settings parser_settings;

/* ---------------------------------------------------------------- small helpers */

/* Keeps a connection's buffers small between requests: one large body must not pin its memory
 * for the rest of a keep-alive connection. */
static void buf_reset(buffer *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}



/* ---------------------------------------------------------------- lifetime */












/* ---------------------------------------------------------------- deadlines */



/* ---------------------------------------------------------------- parsing */

static int fail_request(conn_t *c, int status)
{
    if (c->error_status == 0)
        c->error_status = status;
    return -1;
}

static int check_head(conn_t *c)
{
    if (c->msg.head.len > c->srv->max_header_size)
        return fail_request(c, 431);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->msg.head.len = 0;
    c->url_len = 0;
    headers_clear(&c->msg.headers);
    c->has_query = 0;
    buf_reset(&c->msg.head, 16384);
    buf_reset(&c->msg.body, 65536);
    if (c->state != ST_HEADERS)
        hs_enter(c, ST_HEADERS);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->url_len + len > c->srv->max_url)
        return fail_request(c, 414);
    if (buf_append(&c->msg.head, at, len) < 0)
        return fail_request(c, 500);
    c->url_len += len;
    return check_head(c);
}

/* Only HTTP/1.x is spoken here (RFC 9110 6.2: a later 1.x minor is answered as 1.1); other
 * versions get 505 and the connection closes. http-parser reports a request line without a
 * version ("GET /") as 0.9, the version that had none: that line is malformed for HTTP/1.x, so
 * 400. The version is known once the request line is read, so this is checked at the first
 * header and again when the headers end (a request with none). */
static int check_version(conn_t *c)
{
    const http_parser *p = &c->parser;
    if (p->http_major == 0 && p->http_minor == 9)
        return fail_request(c, 400);
    if (p->http_major != 1)
        return fail_request(c, 505);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->msg.headers.n == 0 && check_version(c) < 0)
        return -1;
    switch (headers_add_field(&c->msg.headers, &c->msg.head, at, len, c->srv->max_headers)) {
    case HEADERS_TOO_MANY:
        return fail_request(c, 431);
    case HEADERS_NO_MEMORY:
        return fail_request(c, 500);
    }
    return check_head(c);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    switch (headers_add_value(&c->msg.headers, &c->msg.head, at, len)) {
    case HEADERS_NO_NAME:
        return fail_request(c, 400);
    case HEADERS_NO_MEMORY:
        return fail_request(c, 500);
    }
    return check_head(c);
}

static const header_span *find_header(conn_t *c, const char *name, int *count)
{
    size_t n = strlen(name);
    const header_span *found = NULL;
    *count = 0;
    for (int i = 0; i < c->msg.headers.n; i++) {
        const header_span *h = &c->msg.headers.spans[i];
        if (h->name_len == n && memcmp(c->msg.head.p + h->name_off, name, n) == 0) {
            if (found == NULL)
                found = h;
            (*count)++;
        }
    }
    return found;
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    server_t *s = c->srv;
    if (check_version(c) < 0)
        return -1;
    /* the request target: origin-form, absolute-form, or "*" (OPTIONS) */
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *url = c->msg.head.p;
    if (c->url_len == 1 && url[0] == '*') {
        c->path_off = 0;
        c->path_len = 1;
    } else if (http_parser_parse_url(url, c->url_len, p->method == HTTP_CONNECT, &u) != 0) {
        return fail_request(c, 400);
    } else {
        c->path_off = (u.field_set & (1 << UF_PATH)) ? u.field_data[UF_PATH].off : 0;
        c->path_len = (u.field_set & (1 << UF_PATH)) ? u.field_data[UF_PATH].len : 0;
        c->has_query = (u.field_set & (1 << UF_QUERY)) != 0;
        c->query_off = c->has_query ? u.field_data[UF_QUERY].off : 0;
        c->query_len = c->has_query ? u.field_data[UF_QUERY].len : 0;
    }
    /* a NUL in the decoded path would cut it short in C code and file names further on */
    for (size_t i = c->path_off; i + 2 < c->path_off + c->path_len; i++)
        if (url[i] == '%' && url[i + 1] == '0' && url[i + 2] == '0')
            return fail_request(c, 400);
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host header */
    int hosts;
    find_header(c, "host", &hosts);
    if ((p->http_major == 1 && p->http_minor >= 1 && hosts != 1) || hosts > 1)
        return fail_request(c, 400);
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > s->max_body)
        return fail_request(c, 413);
    int expects;
    const header_span *expect = find_header(c, "expect", &expects);
    if (expect && expect->value_len == 12 && strncasecmp(c->msg.head.p + expect->value_off, "100-continue", 12) == 0 &&
        p->http_minor >= 1) {
        static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (hs_tls_write(c, go_on, sizeof go_on - 1) < 0)
            return fail_request(c, 500);
    }
    hs_enter(c, ST_BODY);
    return 0;
}

/* A chunk's size is known before its data: one that cannot fit is refused now, not after the
 * body deadline (7fffffffffffffff would otherwise be waited for). */
static int on_chunk_header(http_parser *p)
{
    conn_t *c = p->data;
    if (p->content_length > c->srv->max_body - c->msg.body.len)
        return fail_request(c, 413);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->msg.body.len + len > c->srv->max_body)
        return fail_request(c, 413);
    if (buf_append(&c->msg.body, at, len) < 0)
        return fail_request(c, 500);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn_t *c = p->data;
    c->request_ready = 1;
    /* one request at a time: the next one (pipelined) waits in `pending` */
    http_parser_pause(p, 1);
    return 0;
}

void hs_parser_init(conn_t *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
}

void hs_feed(conn_t *c, const char *data, size_t len)
{
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
        http_parser_pause(&c->parser, 0);
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    int from_pending = data == c->pending.p;
    if (e == HPE_PAUSED || (e == HPE_OK && c->parser.upgrade)) {
        size_t rest = len - n;
        if (from_pending) {
            memmove(c->pending.p, c->pending.p + n, rest);
            c->pending.len = rest;
        } else if (buf_append(&c->pending, data + n, rest) < 0) {
            c->error_status = 500;
        }
        if (c->parser.upgrade)
            c->close_after = 1; /* no protocol switch here: answer, then close */
    } else if (e != HPE_OK) {
        if (c->error_status == 0)
            c->error_status = e == HPE_HEADER_OVERFLOW ? 431 : 400;
        sacm_log(SACM_LOG_DEBUG, "http", "%s:%d: bad request (%s)", c->remote, c->remote_port,
                 http_errno_description(e));
    } else if (from_pending) {
        c->pending.len = 0;
    }
}

/* ---------------------------------------------------------------- delivering requests to Lua */


/* hs_deliver(conn) in protected mode: builds the request table and calls on_request(conn, req). */
static int deliver_lua(lua_State *L)
{
    conn_t *c = lua_touserdata(L, 1);
    http_parser *p = &c->parser;
    const char *h = c->msg.head.p ? c->msg.head.p : "";
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->srv->cb_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
    lua_createtable(L, 0, 12);
    lua_pushstring(L, http_method_str((enum http_method)p->method));
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, h, c->url_len);
    lua_setfield(L, -2, "target");
    lua_pushlstring(L, h + c->path_off, c->path_len);
    lua_setfield(L, -2, "raw_path");
    if (c->has_query) {
        lua_pushlstring(L, h + c->query_off, c->query_len);
        lua_setfield(L, -2, "raw_query");
    }
    lua_pushfstring(L, "HTTP/%d.%d", (int)p->http_major, (int)p->http_minor);
    lua_setfield(L, -2, "version");
    lua_pushboolean(L, http_should_keep_alive(p) && !c->close_after);
    lua_setfield(L, -2, "keep_alive");
    lua_pushlstring(L, c->msg.body.p ? c->msg.body.p : "", c->msg.body.len);
    lua_setfield(L, -2, "body");
    lua_pushstring(L, c->remote);
    lua_setfield(L, -2, "remote");
    lua_pushinteger(L, c->remote_port);
    lua_setfield(L, -2, "remote_port");

    headers_push(L, &c->msg.headers, h);
    lua_setfield(L, -2, "headers");

    if (c->tls_ref == LUA_NOREF) {
        hs_push_tls_info(L, c);
        c->tls_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->tls_ref);
    lua_setfield(L, -2, "tls");
    lua_call(L, 2, 0);
    c->delivered = 1;
    return 0;
}

void hs_deliver(conn_t *c)
{
    c->request_ready = 0;
    c->busy = 1;
    c->delivered = 0;
    c->srv->requests++;
    hs_enter(c, ST_HANDLER);
    if (c->box == NULL || c->srv->closed || sacm_state_closing()) {
        c->busy = 0;
        hs_send_error(c, 503);
        return;
    }
    lua_State *L = sacm_main_state();
    lua_pushcfunction(L, deliver_lua);
    lua_pushlightuserdata(L, c);
    sacm_invoke(L, 1);
    if (!c->delivered && c->busy && !c->closing) {
        /* the Lua side failed before taking the request (its error was logged) */
        c->busy = 0;
        hs_send_error(c, 500);
    }
}

/* ---------------------------------------------------------------- the TLS and HTTP pump */








/* ---------------------------------------------------------------- accepting */


/* ---------------------------------------------------------------- Lua: connections */

static conn_t *check_conn(lua_State *L, int idx)
{
    conn_box *box = luaL_checkudata(L, idx, CONN_MT);
    return box->c;
}

/* conn:respond(head, body, close) -> true, or nil, err (closed). head is the status line and
 * headers up to and including the blank line; body is sent after it as is. */
static int l_respond(lua_State *L)
{
    conn_t *c = check_conn(L, 1);
    size_t hlen, blen = 0;
    const char *head = luaL_checklstring(L, 2, &hlen);
    const char *body = luaL_optlstring(L, 3, NULL, &blen);
    int close_after = lua_toboolean(L, 4);
    if (c == NULL || c->closing)
        return sacm_fail(L, "closed", "the client connection is closed");
    if (!c->busy)
        return luaL_error(L, "respond: no request is waiting for a response on this connection");
    c->busy = 0;
    c->served++;
    c->srv->responses++;
    int rc;
    if (hlen + blen <= PLAIN_CHUNK) {
        /* one TLS record for a small response */
        char one[PLAIN_CHUNK];
        memcpy(one, head, hlen);
        if (blen)
            memcpy(one + hlen, body, blen);
        rc = hs_tls_write(c, one, hlen + blen);
    } else {
        rc = hs_tls_write(c, head, hlen);
        if (rc == 0 && blen)
            rc = hs_tls_write(c, body, blen);
    }
    if (rc < 0) {
        hs_conn_close(c);
        return sacm_fail(L, "closed", "the client connection failed");
    }
    if (close_after || c->close_after || c->srv->closed) {
        hs_conn_finish(c);
    } else {
        hs_flush(c);
        hs_enter(c, ST_IDLE);
        if (!c->in_process) {
            if (c->pending.len > 0 || tls_stream_has_input(&c->tls)) {
                /* a pipelined request is buffered: parse it from the loop, not from this task */
                hs_schedule(c);
            } else {
                hs_update_reading(c);
            }
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:close(), <close> and __gc: one idempotent close. The C side holds the box until it frees
 * the connection, so __gc comes after that, or at exit, when there is no loop turn left for a
 * polite close_notify and the connection is closed at once. */
static int l_conn_close(lua_State *L)
{
    conn_t *c = check_conn(L, 1);
    if (c == NULL || c->closed)
        return 0;
    c->busy = 0;
    if (sacm_state_closing())
        hs_conn_close(c);
    else
        hs_conn_finish(c);
    return 0;
}

/* ---------------------------------------------------------------- Lua: servers */

static server_t *check_server(lua_State *L, int idx)
{
    server_box *box = luaL_checkudata(L, idx, SERVER_MT);
    if (box->s == NULL || box->s->closed)
        luaL_error(L, "attempt to use a closed HTTP server");
    return box->s;
}

static void on_server_handle_closed(uv_handle_t *handle)
{
    server_t *s = handle->data;
    s->open_handles--;
    hs_server_maybe_free(s);
}

static void server_close(lua_State *L, server_t *s, int graceful)
{
    if (s->closed)
        return;
    s->closed = 1;
    if (!sacm_state_closing()) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
    }
    s->cb_ref = s->self_ref = LUA_NOREF;
    if (s->box)
        s->box->s = NULL;
    s->box = NULL;
    for (conn_t *c = s->conns; c; c = c->next) {
        if (!graceful || !c->tls.handshake_done)
            hs_conn_close(c);
        else if (c->busy)
            c->close_after = 1; /* its handler answers, then it closes */
        else
            hs_conn_finish(c);
    }
    uv_close((uv_handle_t *)&s->tcp, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->idle, on_server_handle_closed);
}

/* server:close(), <close> and __gc: one idempotent close. Listening holds the box, so __gc comes
 * after a close or at exit; only at exit are busy connections cut instead of answered first. */
static int l_server_close(lua_State *L)
{
    server_box *box = luaL_checkudata(L, 1, SERVER_MT);
    if (box->s)
        server_close(L, box->s, !sacm_state_closing());
    return 0;
}

static int l_server_address(lua_State *L)
{
    server_t *s = check_server(L, 1);
    struct sockaddr_storage addr;
    int len = sizeof addr;
    int rc = uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&addr, &len);
    if (rc < 0)
        return sacm_fail_uv(L, rc, "getsockname");
    char name[INET6_ADDRSTRLEN] = "";
    int port;
    if (addr.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&addr, name, sizeof name);
        port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&addr, name, sizeof name);
        port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
    }
    lua_pushstring(L, name);
    lua_pushinteger(L, port);
    return 2;
}

static int l_server_stats(lua_State *L)
{
    server_box *box = luaL_checkudata(L, 1, SERVER_MT);
    server_t *s = box->s;
    lua_createtable(L, 0, 8);
    if (s == NULL)
        return 1;
    int active = 0;
    for (conn_t *c = s->conns; c; c = c->next)
        active += !c->closed;
#define FIELD(name, value)                                                                                             \
    lua_pushinteger(L, (value));                                                                                       \
    lua_setfield(L, -2, name)
    FIELD("accepted", s->accepted);
    FIELD("active", active);
    FIELD("refused", s->refused);
    FIELD("shed", s->shed);
    FIELD("requests", s->requests);
    FIELD("responses", s->responses);
    FIELD("tls_failures", s->tls_failures);
    FIELD("bad_requests", s->bad_requests);
    FIELD("timeouts", s->timeouts);
#undef FIELD
    return 1;
}



/* listen(opts, on_request) -> server, or nil, err.
 * opts: host, port, backlog, cert, key, ca, verify_client ("optional" | "required" | nil),
 * max_connections, max_per_address, max_header_size, max_headers, max_url, max_body,
 * handshake_ms, headers_ms, body_ms, idle_ms, write_ms, handler_ms, linger_ms
 *
 * Every option is read and checked before anything is allocated: a bad one raises, and nothing
 * allocated by then (the TLS context, the 66 KB server) could be freed on the way out. */
static int l_listen(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    const char *host = sacm_opt_string(L, 1, "http.listen", "host", 0);
    if (host == NULL)
        host = "127.0.0.1";
    lua_Integer port = sacm_opt_integer(L, 1, "http.listen", "port", 0, 0);
    luaL_argcheck(L, port < 65536, 1, "port out of range");
    int backlog = (int)sacm_opt_integer(L, 1, "http.listen", "backlog", 128, 1);
    hs_tls_opts tls = {
        .cert = sacm_opt_string(L, 1, "http.listen", "cert", 0),
        .key = sacm_opt_string(L, 1, "http.listen", "key", 0),
        .ca = sacm_opt_string(L, 1, "http.listen", "ca", 0),
        .verify_mode = SSL_VERIFY_NONE,
    };
    const char *verify = sacm_opt_string(L, 1, "http.listen", "verify_client", 0);
    if (tls.cert == NULL)
        return luaL_error(L, "http: a server certificate (cert) is required");
    if (verify && strcmp(verify, "required") == 0)
        tls.verify_mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE;
    else if (verify && strcmp(verify, "optional") == 0)
        tls.verify_mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
    else if (verify)
        return luaL_error(L, "http: verify_client must be \"optional\" or \"required\", not \"%s\"", verify);
    if (tls.verify_mode != SSL_VERIFY_NONE && tls.ca == NULL)
        return luaL_error(L, "http: verify_client needs a CA file (ca) to verify against");

    int max_connections = (int)sacm_opt_integer(L, 1, "http.listen", "max_connections", 256, 1);
    int max_per_address = (int)sacm_opt_integer(L, 1, "http.listen", "max_per_address", 64, 1);
    size_t max_header_size = (size_t)sacm_opt_integer(L, 1, "http.listen", "max_header_size", 16384, 256);
    int max_headers = (int)sacm_opt_integer(L, 1, "http.listen", "max_headers", 100, 1);
    size_t max_url = (size_t)sacm_opt_integer(L, 1, "http.listen", "max_url", 8192, 16);
    size_t max_body = (size_t)sacm_opt_integer(L, 1, "http.listen", "max_body", 1 << 20, 0);
    uint64_t t_handshake = (uint64_t)sacm_opt_integer(L, 1, "http.listen", "handshake_ms", 5000, 1);
    uint64_t t_headers = (uint64_t)sacm_opt_integer(L, 1, "http.listen", "headers_ms", 10000, 1);
    uint64_t t_body = (uint64_t)sacm_opt_integer(L, 1, "http.listen", "body_ms", 30000, 1);
    uint64_t t_idle = (uint64_t)sacm_opt_integer(L, 1, "http.listen", "idle_ms", 30000, 1);
    uint64_t t_write = (uint64_t)sacm_opt_integer(L, 1, "http.listen", "write_ms", 30000, 1);
    uint64_t t_handler = (uint64_t)sacm_opt_integer(L, 1, "http.listen", "handler_ms", 60000, 1);
    uint64_t t_linger = (uint64_t)sacm_opt_integer(L, 1, "http.listen", "linger_ms", 2000, 1);

    struct sockaddr_storage addr;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr);
    if (rc < 0)
        return sacm_fail(L, "EINVAL", "http: host must be a numeric IPv4 or IPv6 address, got \"%s\"", host);

    /* From here on nothing raises before the server is owned by its box (whose __gc frees it),
     * except running out of memory for the box itself, which comes first. */
    server_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->s = NULL;
    luaL_setmetatable(L, SERVER_MT);
    SSL_CTX *ctx = hs_tls_context(L, &tls);
    if (ctx == NULL)
        return 2; /* nil, err pushed */
    server_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        SSL_CTX_free(ctx);
        return luaL_error(L, "http: out of memory for a server");
    }
    s->ctx = ctx;
    s->cb_ref = s->self_ref = LUA_NOREF;
    s->max_connections = max_connections;
    s->max_per_address = max_per_address;
    s->max_header_size = max_header_size;
    s->max_headers = max_headers;
    s->max_url = max_url;
    s->max_body = max_body;
    s->t_handshake = t_handshake;
    s->t_headers = t_headers;
    s->t_body = t_body;
    s->t_idle = t_idle;
    s->t_write = t_write;
    s->t_handler = t_handler;
    s->t_linger = t_linger;

    uv_tcp_init(sacm_loop(), &s->tcp);
    uv_idle_init(sacm_loop(), &s->idle);
    s->tcp.data = s->idle.data = s;
    s->open_handles = 2;
    box->s = s;
    s->box = box;
    rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->tcp, backlog, hs_on_connection);
    if (rc < 0) {
        server_close(L, s, 0);
        return sacm_fail(L, uv_err_name(rc), "cannot listen on %s port %d: %s", host, (int)port, uv_strerror(rc));
    }
    lua_pushvalue(L, 2);
    s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* listening keeps the server alive (and the program running) until it is closed */
    lua_pushvalue(L, -1);
    s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

int luaopen_sacm__http(lua_State *L)
{
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_chunk_header = on_chunk_header;
    parser_settings.on_message_complete = on_message_complete;

    static const luaL_Reg server_methods[] = {
        {"close", l_server_close},
        {"address", l_server_address},
        {"stats", l_server_stats},
        {NULL, NULL},
    };
    sacm_define_type(L, SERVER_MT, server_methods, l_server_close);
    lua_pop(L, 1);

    static const luaL_Reg conn_methods[] = {
        {"respond", l_respond},
        {"close", l_conn_close},
        {NULL, NULL},
    };
    sacm_define_type(L, CONN_MT, conn_methods, l_conn_close);
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {{"listen", l_listen}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
