/* sacm._xmpp: libstrophe connections driven by the libuv loop.
 *
 * libstrophe has no fd getter, only queues in xmpp_send, and does all its I/O inside
 * xmpp_run_once (../shared/notes/libstrophe-on-libuv.md). So:
 * - the socket is learned in the sockopt callback, and a duplicate of it is watched with uv_poll
 *   (a duplicate, so our watcher never outlives or confuses the fd libstrophe closes);
 * - each connection has a libstrophe context of its own (so what libstrophe logs and reports about
 *   a failure is known to be about it: runtime/xmpp_error.c), and a pump runs xmpp_run_once(ctx, 0)
 *   on every connection's context;
 * - a readable socket pumps as long as OpenSSL holds decrypted bytes that no longer make the
 *   socket readable (each call reads at most 4096 bytes; xmpp_hooks.c asks OpenSSL);
 * - what Lua queued is flushed from prepare/check handles, never from inside libstrophe;
 * - a slow tick runs libstrophe's own timers (connect timeout, stream management).
 * Stanzas reach Lua as sacm.Element tables built straight from libstrophe's tree
 * (runtime/xmpp_stanza.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/select.h>
#include <sys/socket.h>
#include "options.h"
#include "xmpp_link.h"

#define CONN_MT "sacm.XmppConnection"
#define MODULE_MT "sacm.XmppModule"
#define MAX_ROUNDS 64    /* bound the work of one wakeup so timers and other I/O get their turn */
#define TICK_MS 1000
/* The tick period; tests lengthen it to show that reads never depend on it. */
static uint64_t tick_ms = TICK_MS;

/* Each connection has a libstrophe context of its own, so that what libstrophe logs and the
 * certificate it rejects are known to belong to that connection (runtime/xmpp_error.c). */
static int initialized;
static link_t *links;
static int in_run_once;
static int dirty; /* Lua queued something since the last xmpp_run_once */
static uv_prepare_t prepare_handle;
static uv_check_t check_handle;
static uv_timer_t tick_handle;

link_t *sacm_xmpp_link_of_ctx(const xmpp_ctx_t *c)
{
    for (link_t *l = links; l; l = l->next)
        if (l->ctx == c)
            return l;
    return NULL;
}

/* ---------------------------------------------------------------- polling */

static void release_links(void);
static void on_poll(uv_poll_t *poll, int status, int events);
static void on_tick(uv_timer_t *handle);

static void free_on_close(uv_handle_t *handle)
{
    free(handle);
}

static void stop_poll(link_t *l)
{
    if (l->poll == NULL)
        return;
    int fd = -1;
    uv_fileno((uv_handle_t *)l->poll, &fd);
    uv_poll_stop(l->poll);
    uv_close((uv_handle_t *)l->poll, free_on_close);
    if (fd >= 0)
        close(fd);
    l->poll = NULL;
    l->poll_events = 0;
}

static void update_polls(void)
{
    for (link_t *l = links; l; l = l->next) {
        if (l->poll == NULL)
            continue;
        int want = UV_READABLE;
        if (xmpp_conn_is_connecting(l->conn) || xmpp_conn_send_queue_len(l->conn) > 0)
            want |= UV_WRITABLE;
        if (want != l->poll_events) {
            uv_poll_start(l->poll, want, on_poll);
            l->poll_events = want;
        }
    }
}

/* libstrophe's timers (connect timeout, stream management, disconnect clean-up) only matter
 * while a connection is open or opening: the tick runs only then, so an idle runtime has no
 * active timer of ours. */
static void update_tick(void)
{
    int busy = 0;
    for (link_t *l = links; l && !busy; l = l->next)
        busy = !xmpp_conn_is_disconnected(l->conn);
    if (busy && !uv_is_active((uv_handle_t *)&tick_handle))
        uv_timer_start(&tick_handle, on_tick, tick_ms, tick_ms);
    else if (!busy && uv_is_active((uv_handle_t *)&tick_handle))
        uv_timer_stop(&tick_handle);
}

/* Runs libstrophe, a round (xmpp_run_once on every link) at a time, while the last round had
 * something to follow up: a stanza, a connection event or anything libstrophe logged (it may
 * have queued data of its own, SM's <a/> or a stream header, which it writes in a later round and
 * xmpp_conn_send_queue_len does not count), something Lua queued, or decrypted bytes OpenSSL
 * still holds. The last
 * matters because each round reads at most 4096 bytes and OpenSSL decrypts a whole record (up to
 * 16 KiB): the rest of a record waits inside OpenSSL with the socket empty, and no poll event
 * will say so; libstrophe reads it in a round only if asked to run one. xmpp_hooks.c learns it
 * from OpenSSL after each read. Whatever the socket holds beyond that, the poll reports. Never
 * re-entered: Lua code called from a libstrophe handler only queues. */
static int more_to_read; /* the last pump stopped at MAX_ROUNDS while still busy */

static void pump(void)
{
    if (!initialized || in_run_once)
        return;
    more_to_read = 1;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        dirty = 0;
        sacm_xmpp_activity = 0;
        int buffered = 0;
        in_run_once = 1;
        /* links closed meanwhile are only marked; links made meanwhile are at the head */
        for (link_t *l = links; l; l = l->next)
            if (!l->released) {
                sacm_xmpp_running = l;
                xmpp_run_once(l->ctx, 0);
                buffered |= l->tls_buffered;
            }
        sacm_xmpp_running = NULL;
        in_run_once = 0;
        release_links();
        if (!sacm_xmpp_activity && !dirty && !buffered) {
            more_to_read = 0;
            break;
        }
    }
    update_polls();
    update_tick();
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    (void)status;
    if (events & UV_READABLE) {
        link_t *l = poll->data;
        l->last_read = uv_now(sacm_loop());
    }
    pump();
}

/* After Lua queued stanzas: send them, and a pump cut short at MAX_ROUNDS goes on. Any round
 * may read (the socket may be readable when we send), so every pump drains fully. */
static void on_prepare(uv_prepare_t *handle)
{
    (void)handle;
    if (dirty || more_to_read)
        pump();
}

static void on_check(uv_check_t *handle)
{
    (void)handle;
    if (dirty || more_to_read)
        pump();
}

static void on_tick(uv_timer_t *handle)
{
    (void)handle;
    if (links)
        pump();
}

static int sockopt_cb(xmpp_conn_t *conn, void *sockp)
{
    int fd = *(int *)sockp;
    link_t *l = NULL;
    for (link_t *it = links; it; it = it->next)
        if (it->conn == conn)
            l = it;
    if (l == NULL)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (fd >= FD_SETSIZE) {
        /* libstrophe watches sockets with select(): a descriptor past FD_SETSIZE would abort the
         * process inside FD_SET. Refuse this attempt instead. */
        snprintf(l->diag.setup, sizeof l->diag.setup,
                 "socket descriptor %d is beyond select()'s limit of %d: too many files open", fd, FD_SETSIZE);
        return -1;
    }
    stop_poll(l); /* a previous address of the same attempt */
    int watched = fcntl(fd, F_DUPFD_CLOEXEC, FD_SETSIZE); /* keep low descriptors for libstrophe */
    if (watched < 0)
        watched = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (watched < 0) {
        snprintf(l->diag.setup, sizeof l->diag.setup, "cannot duplicate socket: %s", strerror(errno));
        return -1;
    }
    uv_poll_t *poll = malloc(sizeof *poll);
    if (poll == NULL || uv_poll_init_socket(sacm_loop(), poll, watched) < 0) {
        free(poll);
        close(watched);
        snprintf(l->diag.setup, sizeof l->diag.setup, "cannot watch socket");
        return -1;
    }
    poll->data = l;
    l->poll = poll;
    l->poll_events = UV_READABLE | UV_WRITABLE;
    uv_poll_start(poll, l->poll_events, on_poll);
    return 0;
}

/* Stream management's <r/> and <a/> (XEP-0198) are libstrophe's business: it answers and counts
 * them before any handler runs, and no Lua code wants them. libstrophe 0.12 sends <r/> after
 * every stanza, so they are most of what arrives; converting them cost ~24k instructions per
 * pubsub item (docs/performance.md). */
static int is_stream_management(xmpp_stanza_t *stanza)
{
    const char *name = xmpp_stanza_get_name(stanza);
    if (name == NULL || name[1] != '\0' || (name[0] != 'r' && name[0] != 'a'))
        return 0;
    const char *ns = xmpp_stanza_get_ns(stanza);
    return ns != NULL && strcmp(ns, XMPP_NS_SM) == 0;
}

static int stanza_handler(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    (void)conn;
    link_t *l = userdata;
    sacm_xmpp_stanza_delivered(stanza);
    if (l->stanza_ref == LUA_NOREF || sacm_state_closing())
        return 1;
    if (is_stream_management(stanza)) {
        sacm_xmpp_activity++; /* it was read: the pump's quiet-round count must not move on */
        return 1;
    }
    lua_State *L = sacm_main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->stanza_ref);
    /* Converting allocates and may raise: never let a Lua error unwind through libstrophe. */
    lua_pushcfunction(L, sacm_xmpp_convert_stanza);
    lua_pushlightuserdata(L, stanza);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *from = xmpp_stanza_get_from(stanza);
        sacm_log(SACM_LOG_WARN, "xmpp", "dropped a stanza from %s: %s", from ? from : "the server", lua_tostring(L, -1));
        lua_pop(L, 2);
        return 1;
    }
    sacm_xmpp_activity++;
    sacm_invoke(L, 1);
    return 1;
}

/* ---------------------------------------------------------------- connection events */

static void release_link(link_t *l);

static void conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t event, int error, xmpp_stream_error_t *stream_error,
                         void *userdata)
{
    link_t *l = userdata;
    lua_State *L = sacm_main_state();
    if (event == XMPP_CONN_RAW_CONNECT)
        return;
    sacm_xmpp_activity++;
    if (event == XMPP_CONN_CONNECT && l->own_anchors && xmpp_conn_is_secured(conn) && !l->tls_set_up_here) {
        /* fail closed: this session's certificate may have verified against the system store */
        snprintf(l->diag.setup, sizeof l->diag.setup, "%s",
                 "the TLS set-up did not go through sacmrun's trust hook (runtime/xmpp_trust.c), so the "
                 "system's CAs were trusted beside cafile/capath; this build links OpenSSL differently: "
                 "report it with the output of `sacmrun -v`");
        xmpp_disconnect(conn);
        return;
    }
    l->session_up = event == XMPP_CONN_CONNECT;
    if (event != XMPP_CONN_CONNECT) {
        l->tls_buffered = 0; /* that TLS session is gone */
        stop_poll(l);
        /* Keep stream management state (unacked stanzas, the resumption id) for the next connect. */
        if (l->sm_state == NULL)
            l->sm_state = xmpp_conn_get_sm_state(conn);
        if (l->release_when_disconnected)
            l->released = 1; /* released by release_links() once libstrophe returns */
        if (!sacm_state_closing()) {
            /* Off the network: the object lives on only if Lua still holds it. */
            luaL_unref(L, LUA_REGISTRYINDEX, l->self_ref);
            l->self_ref = LUA_NOREF;
        }
    }
    if (l->event_ref == LUA_NOREF || sacm_state_closing())
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, l->event_ref);
    if (event == XMPP_CONN_CONNECT) {
        lua_pushliteral(L, "connected");
        lua_createtable(L, 0, 2);
        lua_pushstring(L, xmpp_conn_get_bound_jid(conn));
        lua_setfield(L, -2, "jid");
        lua_pushboolean(L, xmpp_conn_is_secured(conn));
        lua_setfield(L, -2, "secured");
    } else {
        lua_pushliteral(L, "disconnected");
        sacm_xmpp_push_disconnect_info(L, l, error, stream_error);
    }
    sacm_invoke(L, 2);
}

/* ---------------------------------------------------------------- link lifetime */

static void release_link(link_t *l)
{
    lua_State *L = sacm_main_state();
    stop_poll(l);
    if (!sacm_state_closing()) {
        luaL_unref(L, LUA_REGISTRYINDEX, l->event_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, l->stanza_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, l->self_ref);
    }
    l->event_ref = l->stanza_ref = l->self_ref = LUA_NOREF;
    for (link_t **p = &links; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    if (l->sm_state)
        xmpp_free_sm_state(l->sm_state);
    xmpp_conn_release(l->conn);
    xmpp_ctx_free(l->ctx);
    free(l);
}

/* Links closed while libstrophe was running are freed here, after xmpp_run_once returned. */
static void release_links(void)
{
    link_t *l = links;
    while (l) {
        link_t *next = l->next;
        if (l->released)
            release_link(l);
        l = next;
    }
}

static int module_gc(lua_State *L)
{
    (void)L;
    while (links)
        release_link(links);
    if (initialized) {
        uv_close((uv_handle_t *)&prepare_handle, NULL);
        uv_close((uv_handle_t *)&check_handle, NULL);
        uv_close((uv_handle_t *)&tick_handle, NULL);
        xmpp_shutdown();
        initialized = 0;
    }
    return 0;
}

static void ensure_initialized(void)
{
    if (initialized)
        return;
    initialized = 1;
    xmpp_initialize();
    uv_prepare_init(sacm_loop(), &prepare_handle);
    uv_check_init(sacm_loop(), &check_handle);
    uv_timer_init(sacm_loop(), &tick_handle);
    uv_prepare_start(&prepare_handle, on_prepare);
    uv_check_start(&check_handle, on_check);
    /* Only connections keep the program alive, through their sockets. */
    uv_unref((uv_handle_t *)&prepare_handle);
    uv_unref((uv_handle_t *)&check_handle);
    uv_unref((uv_handle_t *)&tick_handle);
}

/* ---------------------------------------------------------------- Lua API */

typedef struct {
    link_t *l;
} conn_box;

static link_t *check_link(lua_State *L, int idx)
{
    conn_box *box = luaL_checkudata(L, idx, CONN_MT);
    if (box->l == NULL || box->l->released)
        luaL_error(L, "attempt to use a closed XMPP connection");
    return box->l;
}

/* new(options, on_event, on_stanza) -> connection
 * options: jid, password, cafile, capath, client_cert, client_key, trust_tls, disable_sm, direct_tls */
static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    /* every option is read (and may raise) before anything is allocated */
    long flags = XMPP_CONN_FLAG_MANDATORY_TLS;
    if (sacm_opt_boolean(L, 1, "trust_tls"))
        flags |= XMPP_CONN_FLAG_TRUST_TLS;
    if (sacm_opt_boolean(L, 1, "disable_sm"))
        flags |= XMPP_CONN_FLAG_DISABLE_SM;
    if (sacm_opt_boolean(L, 1, "direct_tls"))
        flags |= XMPP_CONN_FLAG_LEGACY_SSL;
    const char *cert = sacm_opt_string(L, 1, "xmpp.connect", "client_cert", 0);
    const char *key = sacm_opt_string(L, 1, "xmpp.connect", "client_key", 0);
    const char *jid = sacm_opt_string(L, 1, "xmpp.connect", "jid", 0);
    const char *password = sacm_opt_string(L, 1, "xmpp.connect", "password", 0);
    const char *cafile = sacm_opt_string(L, 1, "xmpp.connect", "cafile", 0);
    const char *capath = sacm_opt_string(L, 1, "xmpp.connect", "capath", 0);

    ensure_initialized();
    conn_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->l = NULL;
    luaL_setmetatable(L, CONN_MT);
    link_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        return luaL_error(L, "out of memory");
    l->logger.handler = sacm_xmpp_log_handler;
    l->logger.userdata = l;
    l->ctx = xmpp_ctx_new(NULL, &l->logger);
    l->conn = l->ctx ? xmpp_conn_new(l->ctx) : NULL;
    if (l->conn == NULL) {
        if (l->ctx)
            xmpp_ctx_free(l->ctx);
        free(l);
        return luaL_error(L, "cannot create a libstrophe connection");
    }
    l->event_ref = l->stanza_ref = l->self_ref = LUA_NOREF;
    box->l = l;
    l->next = links;
    links = l;

    xmpp_conn_set_flags(l->conn, flags);
    if (cert)
        xmpp_conn_set_client_cert(l->conn, cert, key ? key : cert);
    if (jid)
        xmpp_conn_set_jid(l->conn, jid);
    if (password)
        xmpp_conn_set_pass(l->conn, password);
    if (cafile)
        xmpp_conn_set_cafile(l->conn, cafile);
    if (capath)
        xmpp_conn_set_capath(l->conn, capath);
    l->own_anchors = cafile != NULL || capath != NULL;
    xmpp_conn_set_certfail_handler(l->conn, sacm_xmpp_certfail);
    xmpp_conn_set_sockopt_callback(l->conn, sockopt_cb);
    xmpp_handler_add(l->conn, stanza_handler, NULL, NULL, NULL, l);

    lua_pushvalue(L, 2);
    l->event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 3);
    l->stanza_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* conn:connect(host, port) -> true, or nil, err. host should be a numeric address (resolve
 * first with sacm._dns: libstrophe's own lookup would block the loop). The outcome arrives as
 * an event: "connected" or "disconnected". */
static int l_connect(lua_State *L)
{
    link_t *l = check_link(L, 1);
    const char *host = luaL_checkstring(L, 2);
    lua_Integer port = luaL_checkinteger(L, 3);
    luaL_argcheck(L, port > 0 && port < 65536, 3, "port out of range");
    if (!xmpp_conn_is_disconnected(l->conn))
        return sacm_fail(L, "conflict", "connection is already %s",
                         xmpp_conn_is_connected(l->conn) ? "connected" : "connecting");
    memset(&l->diag, 0, sizeof l->diag);
    if (l->sm_state) {
        if (xmpp_conn_set_sm_state(l->conn, l->sm_state) != XMPP_EOK)
            xmpp_free_sm_state(l->sm_state);
        l->sm_state = NULL;
    }
    errno = 0;
    int rc = xmpp_connect_client(l->conn, host, (unsigned short)port, conn_handler, l);
    if (rc != XMPP_EOK) {
        int saved = errno;
        stop_poll(l);
        if (l->diag.setup[0])
            return sacm_fail(L, "remote-connection-failed", "%s", l->diag.setup);
        if (saved != 0)
            return sacm_fail(L, uv_err_name(-saved), "cannot connect to %s port %d: %s", host, (int)port,
                             strerror(saved));
        return sacm_fail(L, "remote-connection-failed", "cannot connect to %s port %d (libstrophe error %d)", host,
                         (int)port, rc);
    }
    l->last_read = uv_now(sacm_loop());
    l->tls_set_up_here = 0;
    /* While the network holds it, the connection object must not be collected. */
    if (l->self_ref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        l->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    dirty = 1;
    lua_pushboolean(L, 1);
    return 1;
}

/* conn:send(xml_text) -> true, or nil, err when not connected. Only queues: the loop sends. */
static int l_send(lua_State *L)
{
    link_t *l = check_link(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (!xmpp_conn_is_connected(l->conn))
        return sacm_fail(L, "not-connected", "connection is not established");
    xmpp_send_raw(l->conn, data, len);
    dirty = 1;
    lua_pushboolean(L, 1);
    return 1;
}

static int l_disconnect(lua_State *L)
{
    link_t *l = check_link(L, 1);
    if (!xmpp_conn_is_disconnected(l->conn)) {
        xmpp_disconnect(l->conn);
        dirty = 1;
    }
    return 0;
}

/* conn:abort(): drops the connection at once, without the closing handshake that disconnect()
 * waits for (up to libstrophe's 2 s), for a peer that no longer answers. Shutting the socket
 * down makes libstrophe's next read see the end of the stream, so the usual "disconnected"
 * event follows from the loop. */
static int l_abort(lua_State *L)
{
    link_t *l = check_link(L, 1);
    if (xmpp_conn_is_disconnected(l->conn))
        return 0;
    int fd = -1;
    if (l->poll && uv_fileno((uv_handle_t *)l->poll, &fd) == 0 && fd >= 0) {
        shutdown(fd, SHUT_RDWR); /* the watched descriptor is a duplicate of libstrophe's socket */
        if (!(l->poll_events & UV_READABLE)) {
            uv_poll_start(l->poll, UV_READABLE, on_poll);
            l->poll_events = UV_READABLE;
        }
    } else {
        xmpp_disconnect(l->conn); /* no socket yet: nothing to wait for */
    }
    dirty = 1;
    return 0;
}

/* conn:idle() -> seconds since data last arrived on this connection (or since it was started) */
static int l_idle(lua_State *L)
{
    link_t *l = check_link(L, 1);
    lua_pushnumber(L, (double)(uv_now(sacm_loop()) - l->last_read) / 1000.0);
    return 1;
}

static int l_state(lua_State *L)
{
    link_t *l = check_link(L, 1);
    lua_pushstring(L, xmpp_conn_is_connected(l->conn)    ? "connected"
                      : xmpp_conn_is_connecting(l->conn) ? "connecting"
                                                         : "disconnected");
    return 1;
}

static int l_bound_jid(lua_State *L)
{
    link_t *l = check_link(L, 1);
    lua_pushstring(L, xmpp_conn_get_bound_jid(l->conn));
    return 1;
}

static int l_jid(lua_State *L)
{
    link_t *l = check_link(L, 1);
    lua_pushstring(L, xmpp_conn_get_jid(l->conn));
    return 1;
}

static int l_secured(lua_State *L)
{
    link_t *l = check_link(L, 1);
    lua_pushboolean(L, xmpp_conn_is_secured(l->conn));
    return 1;
}

static int l_queue_len(lua_State *L)
{
    link_t *l = check_link(L, 1);
    lua_pushinteger(L, xmpp_conn_send_queue_len(l->conn));
    return 1;
}

/* conn:cert_jids() -> the xmppAddr JIDs of the configured client certificate */
static int l_cert_jids(lua_State *L)
{
    link_t *l = check_link(L, 1);
    unsigned int n = xmpp_conn_cert_xmppaddr_num(l->conn);
    lua_createtable(L, (int)n, 0);
    for (unsigned int i = 0; i < n; i++) {
        char *jid = xmpp_conn_cert_xmppaddr(l->conn, i);
        if (jid) {
            lua_pushstring(L, jid);
            xmpp_free(l->ctx, jid);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    }
    return 1;
}

static int l_set_jid(lua_State *L)
{
    link_t *l = check_link(L, 1);
    xmpp_conn_set_jid(l->conn, luaL_checkstring(L, 2));
    return 0;
}

/* conn:close(): disconnects if needed and frees the connection once libstrophe is done with it. */
static int l_close(lua_State *L)
{
    conn_box *box = luaL_checkudata(L, 1, CONN_MT);
    link_t *l = box->l;
    if (l == NULL)
        return 0;
    box->l = NULL;
    if (sacm_state_closing()) {
        release_link(l);
        return 0;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, l->event_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, l->stanza_ref);
    l->event_ref = l->stanza_ref = LUA_NOREF;
    if (!xmpp_conn_is_disconnected(l->conn)) {
        l->release_when_disconnected = 1;
        xmpp_disconnect(l->conn);
        dirty = 1;
    } else if (in_run_once) {
        l->released = 1;
    } else {
        release_link(l);
    }
    return 0;
}

/* set_tick_interval(ms) -> previous ms: the period of libstrophe's housekeeping tick (tests). */
static int l_set_tick_interval(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    luaL_argcheck(L, ms > 0, 1, "must be positive");
    lua_pushinteger(L, (lua_Integer)tick_ms);
    tick_ms = (uint64_t)ms;
    if (uv_is_active((uv_handle_t *)&tick_handle))
        uv_timer_start(&tick_handle, on_tick, tick_ms, tick_ms);
    return 1;
}

int luaopen_sacm__xmpp(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"connect", l_connect},
        {"send", l_send},
        {"disconnect", l_disconnect},
        {"abort", l_abort},
        {"idle", l_idle},
        {"state", l_state},
        {"bound_jid", l_bound_jid},
        {"jid", l_jid},
        {"set_jid", l_set_jid},
        {"secured", l_secured},
        {"queue_len", l_queue_len},
        {"cert_jids", l_cert_jids},
        {"close", l_close},
        {NULL, NULL},
    };
    sacm_define_type(L, CONN_MT, methods, l_close);
    lua_pop(L, 1);

    /* A state-lifetime userdata whose finalizer frees the context after every connection:
     * created first, so lua_close finalizes it last. The module may be opened again (busted's
     * insulation clears package.loaded between spec files): keep the first sentinel, or its
     * finalizer would free connections that are still in use. */
    if (lua_getfield(L, LUA_REGISTRYINDEX, MODULE_MT ".instance") == LUA_TNIL) {
        lua_newuserdatauv(L, 1, 0);
        luaL_newmetatable(L, MODULE_MT);
        lua_pushcfunction(L, module_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, MODULE_MT ".instance");
    }
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {
        {"new", l_new},
        {"check_tls_files", sacm_xmpp_check_tls_files},
        {"set_tick_interval", l_set_tick_interval},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
