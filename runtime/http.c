/* sacm._http: an HTTPS/1.1 server on the libuv loop.
 *
 * Each connection is a uv_tcp_t whose bytes go through an OpenSSL SSL object over a pair of
 * memory BIOs (nothing here ever blocks: ciphertext read by libuv is written into the read BIO,
 * and whatever OpenSSL puts into the write BIO is handed to uv_write). Requests are parsed by
 * http-parser, never by hand. One request per connection is in Lua at a time: the parser is
 * paused when a message is complete, so pipelined requests are answered in order, and reading
 * stops until the response is written (back-pressure on a client that floods us).
 *
 * Every limit a client could abuse is enforced here, before Lua sees anything: sizes of the
 * request line, the headers and the body (414/431/413), deadlines for the handshake and headers,
 * the body, an idle keep-alive connection, a slow reader and a slow handler, and the number of
 * connections. After an error response the connection is closed, lingering a moment so the client
 * reads the answer instead of a reset.
 *
 * Lua sees: on_request(conn, req) for every complete request; conn:respond(head, body, close). */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "sacmrun.h"
#include "http_common.h"

#define SERVER_MT "sacm.HttpServer"
#define CONN_MT "sacm.HttpConnection"
#define READ_CHUNK 65536
#define PLAIN_CHUNK 16384
/* Responses not yet taken by the kernel above which no further request is read: a client that
 * pipelines requests but never reads the answers must not make us buffer them all. */
#define WRITE_HIGH_WATER (256 * 1024)

enum conn_state {
    ST_HANDSHAKE, /* TLS handshake, then the first request's headers */
    ST_HEADERS,   /* a request has begun: its headers are due */
    ST_BODY,      /* headers done: the body is due */
    ST_HANDLER,   /* Lua has the request */
    ST_IDLE,      /* between requests (or writing a response out) */
    ST_LINGER,    /* closing: write side shut, reading and discarding until EOF */
};

struct server;

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    int open_handles; /* freed when both tcp and timer are closed */
    struct server *srv;
    struct conn *prev, *next;
    struct conn *ready_next; /* in the server's list of connections with buffered input */
    int queued;

    SSL *ssl;
    BIO *rbio, *wbio;
    int handshake_done;

    http_parser parser;
    enum conn_state state;
    int reading, in_process, busy, closing, closed, delivered, close_after;
    int write_blocked; /* reading paused until the kernel takes what we wrote */
    int error_status; /* a status the server answers by itself, then closes */
    int request_ready;
    unsigned writes_pending;

    /* the request being read: url, then header names (lowercased) and values, in `head` */
    buffer head;
    size_t url_len;
    header_list headers;
    buffer body;
    buffer pending; /* plaintext read but not yet parsed (a pipelined request) */
    size_t path_off, path_len, query_off, query_len;
    int has_query;

    struct conn_box *box;
    int self_ref, tls_ref;
    char remote[INET6_ADDRSTRLEN];
    int remote_port;
} conn_t;

typedef struct conn_box {
    conn_t *c;
} conn_box;

typedef struct server {
    uv_tcp_t tcp;
    uv_idle_t idle; /* processes connections whose input was buffered while Lua had them */
    int open_handles;
    SSL_CTX *ctx;
    conn_t *conns;
    conn_t *ready;
    int nconns;
    int cb_ref, self_ref;
    struct server_box *box;
    int closed;
    /* limits */
    size_t max_header_size, max_url, max_body;
    int max_headers, max_connections;
    /* timeouts, ms */
    uint64_t t_headers, t_body, t_idle, t_write, t_handler, t_linger;
    /* counters */
    lua_Integer accepted, refused, requests, responses, tls_failures, bad_requests, timeouts;
    char readbuf[READ_CHUNK];
} server_t;

typedef struct server_box {
    server_t *s;
} server_box;

typedef struct {
    uv_write_t req;
    conn_t *c;
    char data[];
} write_req;

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

static void http_date(char out[32])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 32, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* The server's OpenSSL failures happen in the handshake or while loading its files. */
#define SSL_FAILURE_TEXT(out) ssl_error_text(out, sizeof out, "connection ended during the handshake")

/* ---------------------------------------------------------------- lifetime */

static void process(conn_t *c);
static void schedule(conn_t *c);
static void conn_close(conn_t *c);
static void arm_timer(conn_t *c);

static void server_maybe_free(server_t *s)
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
    if (c->ssl)
        SSL_free(c->ssl); /* frees both BIOs */
    buf_free(&c->head);
    buf_free(&c->body);
    buf_free(&c->pending);
    headers_free(&c->headers);
    free(c);
    server_maybe_free(s);
}

/* Closes at once: pending writes are cancelled. */
static void conn_close(conn_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    conn_t *c = w->c;
    free(w);
    c->writes_pending--;
    if (c->closed)
        return;
    if (status < 0) {
        sacm_log(SACM_LOG_DEBUG, "http", "writing to %s:%d failed: %s", c->remote, c->remote_port,
                 uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->writes_pending == 0 && c->state == ST_IDLE)
        arm_timer(c); /* the slow-reader deadline becomes the idle deadline */
    if (c->write_blocked && c->tcp.write_queue_size <= WRITE_HIGH_WATER) {
        c->write_blocked = 0;
        schedule(c);
    }
}

/* Sends whatever OpenSSL produced. */
static void flush(conn_t *c)
{
    if (c->closed)
        return;
    size_t n = BIO_ctrl_pending(c->wbio);
    if (n == 0)
        return;
    write_req *w = malloc(sizeof *w + n);
    if (w == NULL) {
        conn_close(c);
        return;
    }
    w->c = c;
    int got = BIO_read(c->wbio, w->data, (int)n);
    if (got <= 0) {
        free(w);
        return;
    }
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)got);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(w);
        conn_close(c);
        return;
    }
    c->writes_pending++;
}

static int tls_write(conn_t *c, const char *data, size_t len)
{
    while (len > 0) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0) {
            char text[160];
            sacm_log(SACM_LOG_DEBUG, "http", "TLS write to %s:%d failed: %s", c->remote, c->remote_port,
                     SSL_FAILURE_TEXT(text));
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0 && !c->closed)
        conn_close(c);
}

static void update_reading(conn_t *c);

/* Ends the connection politely: close_notify, the rest of what we wrote, then our side of TCP;
 * lingers reading (and discarding) until the client closes too, or the linger deadline. */
static void conn_finish(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->busy = 0;
    if (c->handshake_done) {
        ERR_clear_error();
        SSL_shutdown(c->ssl);
        flush(c);
    }
    if (c->closed)
        return;
    c->state = ST_LINGER;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c);
        return;
    }
    arm_timer(c);
    update_reading(c);
}

/* A response the server writes by itself (errors, timeouts); the connection closes after it. */
static void send_error(conn_t *c, int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {400, "Bad Request"},         {408, "Request Timeout"},
        {413, "Content Too Large"},   {414, "URI Too Long"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"}, {503, "Service Unavailable"},
    };
    const char *reason = "Error";
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status)
            reason = reasons[i].reason;
    if (status < 500)
        c->srv->bad_requests++;
    if (c->handshake_done && !c->closing) {
        char date[32], msg[512];
        http_date(date);
        int body_len = (int)strlen(reason) + 1;
        int n = snprintf(msg, sizeof msg,
                         "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Content-Length: %d\r\nConnection: close\r\n\r\n%s\n",
                         status, reason, date, body_len, reason);
        if (tls_write(c, msg, (size_t)n) < 0) {
            conn_close(c);
            return;
        }
    }
    conn_finish(c);
}

/* ---------------------------------------------------------------- deadlines */

static void on_timer(uv_timer_t *timer)
{
    conn_t *c = timer->data;
    if (c->closed)
        return;
    c->srv->timeouts++;
    switch (c->state) {
    case ST_HANDSHAKE:
        sacm_log(SACM_LOG_DEBUG, "http", "%s:%d: no request in time", c->remote, c->remote_port);
        if (c->handshake_done)
            conn_finish(c);
        else
            conn_close(c);
        break;
    case ST_HEADERS:
    case ST_BODY:
        sacm_log(SACM_LOG_DEBUG, "http", "%s:%d: request %s did not arrive in time", c->remote, c->remote_port,
                 c->state == ST_HEADERS ? "headers" : "body");
        send_error(c, 408);
        break;
    case ST_HANDLER:
        sacm_log(SACM_LOG_WARN, "http", "%s:%d: the handler did not answer in time", c->remote, c->remote_port);
        c->busy = 0;
        send_error(c, 503);
        break;
    case ST_IDLE:
        if (c->writes_pending > 0)
            conn_close(c); /* the client does not read what we send */
        else
            conn_finish(c);
        break;
    case ST_LINGER:
        conn_close(c);
        break;
    }
}

static void arm_timer(conn_t *c)
{
    if (c->closed)
        return;
    server_t *s = c->srv;
    uint64_t ms = 0;
    switch (c->state) {
    case ST_HANDSHAKE:
    case ST_HEADERS: ms = s->t_headers; break;
    case ST_BODY: ms = s->t_body; break;
    case ST_HANDLER: ms = s->t_handler; break;
    case ST_IDLE: ms = c->writes_pending ? s->t_write : s->t_idle; break;
    case ST_LINGER: ms = s->t_linger; break;
    }
    uv_update_time(sacm_loop());
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* ---------------------------------------------------------------- parsing */

static int fail_request(conn_t *c, int status)
{
    if (c->error_status == 0)
        c->error_status = status;
    return -1;
}

static int check_head(conn_t *c)
{
    if (c->head.len > c->srv->max_header_size)
        return fail_request(c, 431);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->head.len = 0;
    c->url_len = 0;
    headers_clear(&c->headers);
    c->has_query = 0;
    buf_reset(&c->head, 16384);
    buf_reset(&c->body, 65536);
    if (c->state != ST_HEADERS) {
        c->state = ST_HEADERS;
        arm_timer(c);
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->url_len + len > c->srv->max_url)
        return fail_request(c, 414);
    if (buf_append(&c->head, at, len) < 0)
        return fail_request(c, 500);
    c->url_len += len;
    return check_head(c);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    switch (headers_add_field(&c->headers, &c->head, at, len, c->srv->max_headers)) {
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
    switch (headers_add_value(&c->headers, &c->head, at, len)) {
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
    for (int i = 0; i < c->headers.n; i++) {
        const header_span *h = &c->headers.spans[i];
        if (h->name_len == n && memcmp(c->head.p + h->name_off, name, n) == 0) {
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
    /* the request target: origin-form, absolute-form, or "*" (OPTIONS) */
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *url = c->head.p;
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
    if (expect && expect->value_len == 12 && strncasecmp(c->head.p + expect->value_off, "100-continue", 12) == 0 &&
        p->http_minor >= 1) {
        static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (tls_write(c, go_on, sizeof go_on - 1) < 0)
            return fail_request(c, 500);
    }
    c->state = ST_BODY;
    arm_timer(c);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->body.len + len > c->srv->max_body)
        return fail_request(c, 413);
    if (buf_append(&c->body, at, len) < 0)
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

/* Feeds plaintext to the parser; what it did not consume (after a complete request) is kept. */
static void feed(conn_t *c, const char *data, size_t len)
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

static void push_tls_info(lua_State *L, conn_t *c)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, SSL_get_version(c->ssl));
    lua_setfield(L, -2, "version");
    lua_pushstring(L, SSL_get_cipher_name(c->ssl));
    lua_setfield(L, -2, "cipher");
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (cert == NULL || SSL_get_verify_result(c->ssl) != X509_V_OK)
        return;
    lua_createtable(L, 0, 8);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "verified");

    BIO *mem = BIO_new(BIO_s_mem());
    if (mem) {
        char *data;
        X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
        long n = BIO_get_mem_data(mem, &data);
        lua_pushlstring(L, data, (size_t)n);
        lua_setfield(L, -2, "subject");
        (void)BIO_reset(mem);
        X509_NAME_print_ex(mem, X509_get_issuer_name(cert), 0, XN_FLAG_RFC2253);
        n = BIO_get_mem_data(mem, &data);
        lua_pushlstring(L, data, (size_t)n);
        lua_setfield(L, -2, "issuer");
        BIO_free(mem);
    }

    X509_NAME *subject = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx >= 0) {
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
        if (n >= 0) {
            lua_pushlstring(L, (const char *)utf8, (size_t)n);
            lua_setfield(L, -2, "cn");
        }
        OPENSSL_free(utf8);
    }

    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (bn) {
        char *hex = BN_bn2hex(bn);
        if (hex) {
            lua_pushstring(L, hex);
            lua_setfield(L, -2, "serial");
            OPENSSL_free(hex);
        }
        BN_free(bn);
    }

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(cert, EVP_sha256(), md, &mdlen)) {
        char hex[EVP_MAX_MD_SIZE * 2 + 1];
        for (unsigned int i = 0; i < mdlen; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        lua_pushlstring(L, hex, mdlen * 2);
        lua_setfield(L, -2, "fingerprint");
    }

    /* subjectAltName entries as "TYPE:value", the way openssl x509 -text prints them; the
     * XMPP address (id-on-xmppAddr) is how the grid names its members. */
    lua_newtable(L);
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int k = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const char *prefix = NULL;
        const ASN1_STRING *str = NULL;
        char ip[INET6_ADDRSTRLEN];
        switch (g->type) {
        case GEN_DNS: prefix = "DNS:"; str = g->d.dNSName; break;
        case GEN_EMAIL: prefix = "email:"; str = g->d.rfc822Name; break;
        case GEN_URI: prefix = "URI:"; str = g->d.uniformResourceIdentifier; break;
        case GEN_IPADD: {
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            if ((len == 4 && inet_ntop(AF_INET, a, ip, sizeof ip)) ||
                (len == 16 && inet_ntop(AF_INET6, a, ip, sizeof ip))) {
                lua_pushfstring(L, "IP:%s", ip);
                lua_rawseti(L, -2, ++k);
            }
            break;
        }
        case GEN_OTHERNAME:
            if (OBJ_obj2nid(g->d.otherName->type_id) == NID_XmppAddr &&
                g->d.otherName->value->type == V_ASN1_UTF8STRING) {
                prefix = "xmpp:";
                str = g->d.otherName->value->value.utf8string;
            }
            break;
        default: break;
        }
        if (prefix && str) {
            lua_pushstring(L, prefix);
            lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(str), (size_t)ASN1_STRING_length(str));
            lua_concat(L, 2);
            lua_rawseti(L, -2, ++k);
        }
    }
    GENERAL_NAMES_free(names);
    lua_setfield(L, -2, "sans");
    lua_setfield(L, -2, "peer");
}

/* deliver(conn) in protected mode: builds the request table and calls on_request(conn, req). */
static int deliver_lua(lua_State *L)
{
    conn_t *c = lua_touserdata(L, 1);
    http_parser *p = &c->parser;
    const char *h = c->head.p ? c->head.p : "";
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
    lua_pushlstring(L, c->body.p ? c->body.p : "", c->body.len);
    lua_setfield(L, -2, "body");
    lua_pushstring(L, c->remote);
    lua_setfield(L, -2, "remote");
    lua_pushinteger(L, c->remote_port);
    lua_setfield(L, -2, "remote_port");

    headers_push(L, &c->headers, h);
    lua_setfield(L, -2, "headers");

    if (c->tls_ref == LUA_NOREF) {
        push_tls_info(L, c);
        c->tls_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->tls_ref);
    lua_setfield(L, -2, "tls");
    lua_call(L, 2, 0);
    c->delivered = 1;
    return 0;
}

static void deliver(conn_t *c)
{
    c->request_ready = 0;
    c->busy = 1;
    c->delivered = 0;
    c->state = ST_HANDLER;
    c->srv->requests++;
    arm_timer(c);
    if (c->box == NULL || c->srv->closed || sacm_state_closing()) {
        c->busy = 0;
        send_error(c, 503);
        return;
    }
    lua_State *L = sacm_main_state();
    lua_pushcfunction(L, deliver_lua);
    lua_pushlightuserdata(L, c);
    sacm_invoke(L, 1);
    if (!c->delivered && c->busy && !c->closing) {
        /* the Lua side failed before taking the request (its error was logged) */
        c->busy = 0;
        send_error(c, 500);
    }
}

/* ---------------------------------------------------------------- the TLS and HTTP pump */

static int handshake(conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshake_done = 1;
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    char text[200];
    c->srv->tls_failures++;
    sacm_log(SACM_LOG_INFO, "http", "TLS handshake with %s:%d failed: %s", c->remote, c->remote_port,
             SSL_FAILURE_TEXT(text));
    flush(c); /* the alert tells the client why */
    conn_finish(c);
    return 0;
}

/* Reads and parses what has arrived, handing complete requests to Lua one at a time. Never
 * called from Lua (conn:respond queues the connection instead), so Lua is never re-entered. */
static void process(conn_t *c)
{
    if (c->closing || c->in_process)
        return;
    c->in_process = 1;
    char plain[PLAIN_CHUNK];
    while (!c->closing) {
        if (!c->handshake_done && !handshake(c))
            break;
        if (c->busy)
            break;
        if (c->tcp.write_queue_size > WRITE_HIGH_WATER) {
            c->write_blocked = 1;
            break;
        }
        if (c->pending.len > 0) {
            feed(c, c->pending.p, c->pending.len);
        } else {
            ERR_clear_error();
            int n = SSL_read(c->ssl, plain, sizeof plain);
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    break;
                if (e == SSL_ERROR_ZERO_RETURN) {
                    conn_finish(c); /* the client's close_notify */
                } else {
                    char text[200];
                    sacm_log(SACM_LOG_DEBUG, "http", "TLS read from %s:%d failed: %s", c->remote, c->remote_port,
                             SSL_FAILURE_TEXT(text));
                    conn_close(c);
                }
                break;
            }
            feed(c, plain, (size_t)n);
        }
        if (c->error_status) {
            send_error(c, c->error_status);
            break;
        }
        if (c->request_ready)
            deliver(c);
        else if (c->parser.upgrade)
            break;
    }
    c->in_process = 0;
    flush(c);
    update_reading(c);
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
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->state == ST_LINGER)
        return; /* discarded: only the client's EOF matters now */
    if (BIO_write(c->rbio, buf->base, (int)nread) != (int)nread) {
        conn_close(c);
        return;
    }
    process(c);
}

/* Reads while a request can be taken; stops while Lua has one (the client waits, its bytes wait
 * in the kernel's buffers). */
static void update_reading(conn_t *c)
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
            process(c);
    }
    uv_idle_stop(idle);
}

/* Processes the connection soon, from the loop: never from inside Lua, never re-entering. */
static void schedule(conn_t *c)
{
    if (c->queued || c->closed)
        return;
    c->queued = 1;
    c->ready_next = c->srv->ready;
    c->srv->ready = c;
    if (!c->srv->closed)
        uv_idle_start(&c->srv->idle, on_idle);
}

/* ---------------------------------------------------------------- accepting */

static void on_connection(uv_stream_t *listener, int status)
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
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    if (s->closed || s->nconns > s->max_connections) {
        s->refused++;
        sacm_log(SACM_LOG_INFO, "http", "refused a connection: %d open (limit %d)", s->nconns - 1,
                 s->max_connections);
        conn_close(c);
        return;
    }
    s->accepted++;
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
    uv_tcp_nodelay(&c->tcp, 1);

    c->ssl = SSL_new(s->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        conn_close(c);
        return;
    }
    /* an empty read BIO means "wait for more", not EOF */
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;

    lua_State *L = sacm_main_state();
    conn_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->c = c;
    luaL_setmetatable(L, CONN_MT);
    c->box = box;
    c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    c->state = ST_HANDSHAKE;
    arm_timer(c);
    update_reading(c);
}

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
    c->srv->responses++;
    int rc;
    if (hlen + blen <= PLAIN_CHUNK) {
        /* one TLS record for a small response */
        char one[PLAIN_CHUNK];
        memcpy(one, head, hlen);
        if (blen)
            memcpy(one + hlen, body, blen);
        rc = tls_write(c, one, hlen + blen);
    } else {
        rc = tls_write(c, head, hlen);
        if (rc == 0 && blen)
            rc = tls_write(c, body, blen);
    }
    if (rc < 0) {
        conn_close(c);
        return sacm_fail(L, "closed", "the client connection failed");
    }
    if (close_after || c->close_after || c->srv->closed) {
        conn_finish(c);
    } else {
        c->state = ST_IDLE;
        flush(c);
        arm_timer(c);
        if (!c->in_process) {
            if (c->pending.len > 0 || BIO_ctrl_pending(c->rbio) > 0 || SSL_pending(c->ssl) > 0) {
                /* a pipelined request is buffered: parse it from the loop, not from this task */
                schedule(c);
            } else {
                update_reading(c);
            }
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_conn_close(lua_State *L)
{
    conn_t *c = check_conn(L, 1);
    if (c && !c->closed) {
        c->busy = 0;
        conn_finish(c);
    }
    return 0;
}

static int l_conn_gc(lua_State *L)
{
    conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    if (box->c)
        box->c->box = NULL;
    box->c = NULL;
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
    server_maybe_free(s);
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
        if (!graceful || !c->handshake_done)
            conn_close(c);
        else if (c->busy)
            c->close_after = 1; /* its handler answers, then it closes */
        else
            conn_finish(c);
    }
    uv_close((uv_handle_t *)&s->tcp, on_server_handle_closed);
    uv_close((uv_handle_t *)&s->idle, on_server_handle_closed);
}

static int l_server_close(lua_State *L)
{
    server_box *box = luaL_checkudata(L, 1, SERVER_MT);
    if (box->s)
        server_close(L, box->s, 1);
    return 0;
}

static int l_server_gc(lua_State *L)
{
    server_box *box = luaL_checkudata(L, 1, SERVER_MT);
    if (box->s)
        server_close(L, box->s, 0);
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
    FIELD("requests", s->requests);
    FIELD("responses", s->responses);
    FIELD("tls_failures", s->tls_failures);
    FIELD("bad_requests", s->bad_requests);
    FIELD("timeouts", s->timeouts);
#undef FIELD
    return 1;
}

static lua_Integer opt_int(lua_State *L, int idx, const char *field, lua_Integer def, lua_Integer min)
{
    lua_getfield(L, idx, field);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min)
            luaL_error(L, "http: option %s must be an integer >= %d", field, (int)min);
    }
    lua_pop(L, 1);
    return v;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "\x08http/1.1";
    if (SSL_select_next_proto((unsigned char **)out, outlen, h11, sizeof h11 - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK; /* no ALPN: HTTP/1.1 anyway */
}

static int tls_fail(lua_State *L, SSL_CTX *ctx, const char *what, const char *path)
{
    char text[200];
    SSL_CTX_free(ctx);
    return sacm_fail(L, "tls-config", "%s %s: %s", what, path, SSL_FAILURE_TEXT(text));
}

/* listen(opts, on_request) -> server, or nil, err.
 * opts: host, port, backlog, cert, key, ca, verify_client ("optional" | "required" | nil),
 * max_connections, max_header_size, max_headers, max_url, max_body,
 * headers_ms, body_ms, idle_ms, write_ms, handler_ms, linger_ms */
static int l_listen(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    const char *host = http_opt_str(L, 1, "host");
    if (host == NULL)
        host = "127.0.0.1";
    lua_Integer port = opt_int(L, 1, "port", 0, 0);
    luaL_argcheck(L, port < 65536, 1, "port out of range");
    int backlog = (int)opt_int(L, 1, "backlog", 128, 1);
    const char *cert = http_opt_str(L, 1, "cert");
    const char *key = http_opt_str(L, 1, "key");
    const char *ca = http_opt_str(L, 1, "ca");
    const char *verify = http_opt_str(L, 1, "verify_client");
    if (cert == NULL)
        return luaL_error(L, "http: a server certificate (cert) is required");
    int verify_mode = SSL_VERIFY_NONE;
    if (verify && strcmp(verify, "required") == 0)
        verify_mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE;
    else if (verify && strcmp(verify, "optional") == 0)
        verify_mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
    else if (verify)
        return luaL_error(L, "http: verify_client must be \"optional\" or \"required\", not \"%s\"", verify);
    if (verify_mode != SSL_VERIFY_NONE && ca == NULL)
        return luaL_error(L, "http: verify_client needs a CA file (ca) to verify against");

    struct sockaddr_storage addr;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr);
    if (rc < 0)
        return sacm_fail(L, "EINVAL", "http: host must be a numeric IPv4 or IPv6 address, got \"%s\"", host);

    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return tls_fail(L, NULL, "cannot create a TLS context", "");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* renegotiation is a CPU-exhaustion lever for clients and HTTP/1.1 never needs it */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return tls_fail(L, ctx, "cannot load the certificate", cert);
    if (SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1)
        return tls_fail(L, ctx, "cannot load the private key", key ? key : cert);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return tls_fail(L, ctx, "the private key does not match the certificate", cert);
    if (ca) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
            return tls_fail(L, ctx, "cannot load the CA file", ca);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (names == NULL)
            return tls_fail(L, ctx, "no CA names in", ca);
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    SSL_CTX_set_verify(ctx, verify_mode, NULL);
    /* sessions resumed with client certificates need a context id, or resumption fails */
    static const unsigned char sid_ctx[] = "sacmrun-http";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);

    server_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->s = NULL;
    luaL_setmetatable(L, SERVER_MT);
    server_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        SSL_CTX_free(ctx);
        return luaL_error(L, "out of memory");
    }
    s->ctx = ctx;
    s->cb_ref = s->self_ref = LUA_NOREF;
    s->max_connections = (int)opt_int(L, 1, "max_connections", 256, 1);
    s->max_header_size = (size_t)opt_int(L, 1, "max_header_size", 16384, 256);
    s->max_headers = (int)opt_int(L, 1, "max_headers", 100, 1);
    s->max_url = (size_t)opt_int(L, 1, "max_url", 8192, 16);
    s->max_body = (size_t)opt_int(L, 1, "max_body", 1 << 20, 0);
    s->t_headers = (uint64_t)opt_int(L, 1, "headers_ms", 10000, 1);
    s->t_body = (uint64_t)opt_int(L, 1, "body_ms", 30000, 1);
    s->t_idle = (uint64_t)opt_int(L, 1, "idle_ms", 30000, 1);
    s->t_write = (uint64_t)opt_int(L, 1, "write_ms", 30000, 1);
    s->t_handler = (uint64_t)opt_int(L, 1, "handler_ms", 60000, 1);
    s->t_linger = (uint64_t)opt_int(L, 1, "linger_ms", 2000, 1);

    uv_tcp_init(sacm_loop(), &s->tcp);
    uv_idle_init(sacm_loop(), &s->idle);
    s->tcp.data = s->idle.data = s;
    s->open_handles = 2;
    box->s = s;
    s->box = box;
    rc = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->tcp, backlog, on_connection);
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
    parser_settings.on_message_complete = on_message_complete;

    static const luaL_Reg server_methods[] = {
        {"close", l_server_close},
        {"address", l_server_address},
        {"stats", l_server_stats},
        {NULL, NULL},
    };
    sacm_define_type(L, SERVER_MT, server_methods, l_server_gc);
    lua_pushcfunction(L, l_server_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    static const luaL_Reg conn_methods[] = {
        {"respond", l_respond},
        {"close", l_conn_close},
        {NULL, NULL},
    };
    sacm_define_type(L, CONN_MT, conn_methods, l_conn_gc);
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {{"listen", l_listen}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
