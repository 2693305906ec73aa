/* http_server.h: what the parts of the HTTPS server share.
 *
 *   http.c       request parsing (http-parser callbacks), delivery to Lua, the Lua API, listen()
 *   http_conn.c  connection lifecycle: accepting (limits, shedding), deadlines, the read/parse
 *                pump, error answers, closing
 *   http_tls.c   the server's use of its TLS stream (tls_stream.c): the context, handshakes,
 *                writes and their completion, peer certificate info
 *
 * Functions shared between them are prefixed hs_. */
#ifndef SACM_HTTP_SERVER_H
#define SACM_HTTP_SERVER_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <http_parser.h>
#include <openssl/ssl.h>
#include "sacmrun.h"
#include "http_common.h"
#include "tls_stream.h"

#define SERVER_MT "sacm.HttpServer"
#define CONN_MT "sacm.HttpConnection"
#define READ_CHUNK 65536
#define PLAIN_CHUNK 16384 /* a response head and body up to this size go out in one TLS write */
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

    tls_stream tls;

    http_parser parser;
    enum conn_state state;
    uint64_t started;  /* uv_now() at accept: the first request's headers are due from here */
    uint64_t since;    /* uv_now() when the current state began: the oldest waiting is shed first */
    lua_Integer served; /* requests answered on this connection */
    int reading, in_process, busy, closing, closed, delivered, close_after;
    int write_blocked; /* reading paused until the kernel takes what we wrote */
    int error_status; /* a status the server answers by itself, then closes */
    int request_ready;
    unsigned writes_pending;

    /* the request being read: url, then header names (lowercased) and values, in msg.head */
    http_message msg;
    size_t url_len;
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
    int max_headers, max_connections, max_per_address;
    /* timeouts, ms */
    uint64_t t_handshake, t_headers, t_body, t_idle, t_write, t_handler, t_linger;
    /* counters */
    lua_Integer accepted, refused, shed, requests, responses, tls_failures, bad_requests, timeouts;
    char readbuf[READ_CHUNK];
} server_t;

typedef struct server_box {
    server_t *s;
} server_box;

/* ---- http.c */
void hs_parser_init(conn_t *c);
/* Feeds plaintext to the parser; what it did not consume (after a complete request) is kept. */
void hs_feed(conn_t *c, const char *data, size_t len);
/* Hands the complete request to Lua (or answers 500/503 when it cannot). */
void hs_deliver(conn_t *c);

/* ---- http_conn.c */
void hs_on_connection(uv_stream_t *listener, int status);
void hs_server_maybe_free(server_t *s);
/* Closes at once: pending writes are cancelled. */
void hs_conn_close(conn_t *c);
/* Ends politely: close_notify, what was written, our side of TCP, then lingers for the EOF. */
void hs_conn_finish(conn_t *c);
/* Answers `status` by itself (errors, timeouts) and finishes the connection. */
void hs_send_error(conn_t *c, int status);
/* (Re)starts the deadline of the connection's current state. */
void hs_arm_timer(conn_t *c);
/* Enters a state (noting when, for shedding and deadlines) and starts its deadline. */
void hs_enter(conn_t *c, enum conn_state st);
/* Reads and parses what has arrived, handing complete requests to Lua one at a time. */
void hs_process(conn_t *c);
void hs_update_reading(conn_t *c);
/* Processes the connection soon, from the loop: never from inside Lua. */
void hs_schedule(conn_t *c);

/* ---- http_tls.c */
typedef struct {
    const char *cert, *key, *ca;
    int verify_mode;
} hs_tls_opts;
/* The server's TLS context, or NULL with nil, err (tls-config) pushed. */
SSL_CTX *hs_tls_context(lua_State *L, const hs_tls_opts *o);
/* A new connection's TLS stream, in accept state; -1 when out of memory. */
int hs_tls_start(conn_t *c);
/* Advances the handshake: 1 when it is done, 0 while it waits or after it failed (then the
 * connection is finishing). */
int hs_handshake(conn_t *c);
/* Encrypts data for the client (hs_flush sends it): 0, or -1 when TLS failed. */
int hs_tls_write(conn_t *c, const char *data, size_t len);
/* Sends whatever OpenSSL produced. */
void hs_flush(conn_t *c);
/* Pushes req.tls: {version, cipher, peer = {...} when a client certificate verified}. */
void hs_push_tls_info(lua_State *L, conn_t *c);

#endif
