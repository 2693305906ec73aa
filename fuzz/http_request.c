/* fuzz/http_request.c: the HTTPS server's request parsing (runtime/http.c: http-parser and its
 * callbacks with every limit, then the request table Lua gets), fed plaintext as the pump
 * (hs_process in http_conn.c) feeds what TLS decrypted: one request at a time, pipelined ones
 * kept in `pending`, stopping at the first error status. TLS itself is not involved, so the
 * connection's SSL object never completes a handshake (an `Expect: 100-continue` answer cannot
 * be written and ends in 500, as it would on a broken connection).
 *
 * Each input is parsed twice: whole, and in pieces of 1 to 8 bytes (as records may split it).
 * Both must give the same requests, and both end well or both with an error status;
 * fuzz/http_request.lua checks every request table and runs sacm.http's own decoding of it.
 *
 * Which error a request with two faults gets may depend on the split: the version is checked
 * at the first header-field callback, and http-parser calls it for a name cut by a piece
 * boundary before it reads the byte that makes the name invalid, so "HTTP/0.1" with a bad
 * first header name is 505 in pieces and 400 at once. Both close the connection; the statuses
 * may differ only when one is the version check's (400 or 505). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/ssl.h>
#include "../runtime/http_server.h"
#include "harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static server_t *server;
static conn_t *conn;
static conn_box box;
static int lua_target, take_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lua_State *L = fuzz_state();
    luaL_requiref(L, "sacm._http", luaopen_sacm__http, 0); /* defines the connection type */
    lua_pop(L, 1);
    lua_target = fuzz_lua_target("http_request.lua");
    lua_rawgeti(L, LUA_REGISTRYINDEX, lua_target);

    /* the server as l_listen makes it with the default limits (docs/api/http.md) */
    server = calloc(1, sizeof *server);
    conn = calloc(1, sizeof *conn);
    if (!server || !conn)
        abort();
    server->max_connections = 256;
    server->max_per_address = 64;
    server->max_header_size = 16384;
    server->max_headers = 100;
    server->max_url = 8192;
    server->max_body = 1 << 20;
    server->t_handshake = 5000;
    server->t_headers = 10000;
    server->t_body = server->t_idle = server->t_write = 30000;
    server->t_handler = 60000;
    server->t_linger = 2000;
    lua_getfield(L, -1, "on_request");
    server->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "take");
    take_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    server->ctx = SSL_CTX_new(TLS_server_method());
    if (!server->ctx)
        abort();

    conn->srv = server;
    conn->self_ref = conn->tls_ref = LUA_NOREF;
    uv_timer_init(sacm_loop(), &conn->timer); /* deadlines are armed, never run: no loop */
    conn->timer.data = conn;
    if (hs_tls_start(conn) < 0)
        abort();
    return 0;
}

/* A fresh connection in the same memory: the timer handle stays where libuv knows it. */
static void conn_reset(conn_t *c)
{
    lua_State *L = fuzz_state();
    uv_timer_stop(&c->timer);
    http_message_free(&c->msg);
    buf_free(&c->pending);
    luaL_unref(L, LUA_REGISTRYINDEX, c->tls_ref);
    uv_timer_t timer = c->timer;
    tls_stream tls = c->tls;
    memset(c, 0, sizeof *c);
    c->timer = timer;
    c->tls = tls;
    c->srv = server;
    c->self_ref = c->tls_ref = LUA_NOREF;
    box.c = c;
    c->box = &box;
    c->tls.handshake_done = 0; /* hs_send_error writes nothing then: the status is what counts */
    snprintf(c->remote, sizeof c->remote, "127.0.0.1");
    c->remote_port = 40000;
    c->state = ST_HANDSHAKE;
    hs_parser_init(c);
}

/* What hs_process does with decrypted bytes, `piece` bytes at a time; the Lua side answers each
 * request at once (as conn:respond does: the connection goes idle, or closes). */
static void run(const uint8_t *data, size_t size, size_t piece)
{
    conn_t *c = conn;
    conn_reset(c);
    size_t off = 0;
    for (;;) {
        if (c->pending.len > 0) {
            hs_feed(c, c->pending.p, c->pending.len);
        } else if (off < size) {
            size_t n = size - off < piece ? size - off : piece;
            hs_feed(c, (const char *)data + off, n);
            off += n;
        } else {
            break;
        }
        if (c->error_status)
            break;
        if (c->request_ready) {
            hs_deliver(c);
            if (!c->delivered)
                break;
            c->busy = 0;
            c->served++;
            if (!http_should_keep_alive(&c->parser) || c->close_after)
                break;
            hs_enter(c, ST_IDLE);
        } else if (c->parser.upgrade) {
            break;
        }
    }
}

/* The Lua side's account of the run's requests, as a new string on the stack. */
static const char *take(size_t *len)
{
    lua_State *L = fuzz_state();
    lua_pushcfunction(L, sacm_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, take_ref);
    lua_pushinteger(L, conn->error_status);
    if (lua_pcall(L, 1, 1, -3) != LUA_OK)
        fuzz_fail(L, "http_request.lua's checks");
    lua_remove(L, -2);
    return lua_tolstring(L, -1, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_begin_input();
    lua_State *L = fuzz_state();
    int top = lua_gettop(L);
    run(data, size, size ? size : 1);
    size_t whole_len, split_len;
    const char *whole = take(&whole_len);
    int whole_status = conn->error_status;
    size_t piece = size ? 1 + data[0] % 8 : 1;
    run(data, size, piece);
    const char *split = take(&split_len);
    int split_status = conn->error_status;
    int version_check = whole_status == 400 || whole_status == 505 || split_status == 400 || split_status == 505;
    if (whole_len != split_len || memcmp(whole, split, whole_len) != 0 || (whole_status == 0) != (split_status == 0) ||
        (whole_status != split_status && !version_check)) {
        fprintf(stderr, "fuzz: parsing in %zu-byte pieces differs from parsing at once:\n%s\nstatus %d\n---\n%s\nstatus %d\n",
                piece, whole, whole_status, split, split_status);
        abort();
    }
    lua_settop(L, top);
    return 0;
}
