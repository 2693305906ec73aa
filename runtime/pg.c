/* sacm._pg: PostgreSQL connections driven from the loop (lua/sacm/pg.lua is the public face).
 *
 * Nothing here blocks: the connection is made with PQconnectStart/PQconnectPoll, queries are
 * sent with PQsendQueryParams in pipeline mode, and the socket sits on a uv_poll whose callback
 * reads what arrived and hands each result to Lua. This file only pumps events; the order of
 * requests, who waits for what, transactions and listeners are Lua's.
 *
 * The connection stays in pipeline mode for its whole life (libpq 14+): every request is one or
 * more queries followed by a sync, and results arrive in the order requests were sent, so
 * requests from many tasks are pipelined without any bookkeeping here beyond counting syncs.
 * Scripts of several statements need the simple protocol, which pipeline mode forbids: for those
 * (only when nothing is in flight) the connection leaves pipeline mode and comes back after.
 *
 * Events reach Lua through the callback kept as the userdata's user value: "connected" |
 * "failed", err | "result", res | "result", nil, err | "sync" | "notify", channel, payload, pid |
 * "lost", err. While one is due (connecting, a sync outstanding, listeners: `keep`) the userdata
 * holds a registry reference to itself; an idle connection nobody references is collected.
 *
 * Memory follows handle.c: the userdata points at a malloc'd struct that lives until the close
 * callbacks of its libuv handles (a timer and the current poll) have run, so a callback that
 * closes the connection from Lua never leaves the pump looking at freed memory. */
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "sacmrun.h"

#define CONN_MT "sacm.pg.Connection"
#define BYTEA_MT "sacm.pg.Bytea"
#define MAX_PARAMS 65535 /* the protocol's limit (a 16-bit count) */

/* Type OIDs from the server's pg_type.h; stable across releases (they are part of the catalog). */
enum {
    OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_OID = 26,
    OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700,
};

enum conn_state { CONNECTING, READY, LOST, CLOSED };

typedef struct pgc pgc;

/* A poll lives apart from the connection: when libpq replaces its socket while connecting, the
 * old poll must stay valid until its close callback, while a new one watches the new socket. */
typedef struct {
    uv_poll_t poll;
    pgc *c;
} pg_poll;

struct pgc {
    PGconn *conn;            /* NULL once closed */
    pg_poll *poll;           /* watching poll_fd, or NULL */
    int poll_fd, poll_events;
    uv_timer_t kick;         /* runs the pump after a send, outside the Lua call */
    int open_handles;        /* initialised handles whose close callback has not run */
    enum conn_state state;
    int syncs;               /* requests sent whose end (sync, or a script's end) has not come */
    int simple;              /* a script is running outside pipeline mode */
    int keep;                /* Lua has listeners: hold the userdata while open */
    int self_ref;
    char lost_text[512];     /* why the connection was lost while nobody held it */
};

typedef struct {
    pgc *c;
} conn_box;

static void on_handle_closed(uv_handle_t *handle)
{
    pgc *c = handle->data;
    if (handle->type == UV_POLL)
        free(handle); /* a pg_poll starts with its uv_poll_t; the timer is part of c */
    if (--c->open_handles == 0)
        free(c);
}

static void poll_close(pgc *c)
{
    if (c->poll == NULL)
        return;
    uv_close((uv_handle_t *)&c->poll->poll, on_handle_closed);
    c->poll = NULL;
    c->poll_fd = -1;
    c->poll_events = 0;
}

static void on_poll(uv_poll_t *poll, int status, int events);

/* The socket keeps the loop alive only while a callback is due: an idle connection must not keep
 * a finished script running (a forgotten one is closed by the collector). */
static void poll_ref(pgc *c)
{
    if (c->poll)
        (c->self_ref != LUA_NOREF ? uv_ref : uv_unref)((uv_handle_t *)&c->poll->poll);
}

/* Watches libpq's current socket for `events`, replacing the poll when the socket changed. */
static int poll_watch(pgc *c, int events)
{
    int fd = PQsocket(c->conn);
    if (fd < 0)
        return UV_EBADF;
    if (c->poll && c->poll_fd != fd)
        poll_close(c);
    if (c->poll == NULL) {
        pg_poll *p = calloc(1, sizeof *p);
        if (p == NULL)
            return UV_ENOMEM;
        int rc = uv_poll_init(sacm_loop(), &p->poll, fd);
        if (rc < 0) {
            free(p);
            return rc;
        }
        p->c = c;
        p->poll.data = c;
        c->open_handles++;
        c->poll = p;
        c->poll_fd = fd;
        c->poll_events = 0;
        poll_ref(c);
    }
    if (events == c->poll_events)
        return 0;
    c->poll_events = events;
    return uv_poll_start(&c->poll->poll, events, on_poll);
}

/* ---- holding the userdata while a callback is due ---- */

static int wants_hold(pgc *c)
{
    return c->conn && (c->state == CONNECTING || (c->state == READY && (c->syncs > 0 || c->keep)));
}

static void hold(lua_State *L, pgc *c, int idx)
{
    if (c->self_ref == LUA_NOREF && wants_hold(c)) {
        lua_pushvalue(L, idx);
        c->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        poll_ref(c);
    }
}

static void maybe_release(pgc *c)
{
    if (c->self_ref != LUA_NOREF && !wants_hold(c) && !sacm_state_closing()) {
        luaL_unref(sacm_main_state(), LUA_REGISTRYINDEX, c->self_ref);
        c->self_ref = LUA_NOREF;
        poll_ref(c);
    }
}

/* ---- errors ---- */

static void set_field(lua_State *L, const char *name, const char *value)
{
    if (value && *value) {
        lua_pushstring(L, value);
        lua_setfield(L, -2, name);
    }
}

/* libpq's messages end in a newline and may span lines ("FATAL: ...\nserver closed ..."). */
static void push_libpq_error(lua_State *L, const char *condition, const char *context,
                             const char *msg, const char *sqlstate)
{
    size_t n = msg ? strlen(msg) : 0;
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    sacm_push_error(L, condition, "%s: %.*s", context, (int)n, msg ? msg : "");
    set_field(L, "sqlstate", sqlstate);
}

/* The error of a failed result: condition "sql_error" (pg.lua names it from the SQLSTATE), text
 * the server's primary message, and the diagnostic fields a caller may branch on. */
static void push_result_error(lua_State *L, const PGresult *r)
{
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (primary == NULL)
        primary = PQresultErrorMessage(r);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    push_libpq_error(L, "sql_error", "postgresql", primary, state ? state : "XX000");
    /* the context prefix is for libpq's own errors; a server error reads as the server wrote it */
    lua_pushstring(L, primary ? primary : "");
    lua_setfield(L, -2, "text");
    static const struct { int code; const char *name; } fields[] = {
        {PG_DIAG_SEVERITY_NONLOCALIZED, "severity"}, {PG_DIAG_MESSAGE_DETAIL, "detail"},
        {PG_DIAG_MESSAGE_HINT, "hint"}, {PG_DIAG_STATEMENT_POSITION, "position"},
        {PG_DIAG_SCHEMA_NAME, "schema"}, {PG_DIAG_TABLE_NAME, "table"}, {PG_DIAG_COLUMN_NAME, "column"},
        {PG_DIAG_CONSTRAINT_NAME, "constraint"}, {PG_DIAG_DATATYPE_NAME, "datatype"},
    };
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        set_field(L, fields[i].name, PQresultErrorField(r, fields[i].code)); /* pg.lua: numbers */
}

/* ---- results ---- */

static void push_value(lua_State *L, const PGresult *r, int row, int col)
{
    const char *v = PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    switch (PQftype(r, col)) {
    case OID_INT2: case OID_INT4: case OID_INT8: case OID_OID: {
        lua_pushinteger(L, (lua_Integer)strtoll(v, NULL, 10));
        break;
    }
    case OID_FLOAT4: case OID_FLOAT8: case OID_NUMERIC:
        /* numeric has more digits than a double: documented as read into a Lua float */
        lua_pushnumber(L, (lua_Number)strtod(v, NULL));
        break;
    case OID_BOOL:
        lua_pushboolean(L, v[0] == 't');
        break;
    case OID_BYTEA: {
        size_t n = 0;
        unsigned char *bytes = PQunescapeBytea((const unsigned char *)v, &n);
        if (bytes == NULL)
            luaL_error(L, "postgresql: out of memory decoding a bytea value");
        lua_pushlstring(L, (const char *)bytes, n);
        PQfreemem(bytes);
        break;
    }
    default:
        lua_pushlstring(L, v, (size_t)len);
        break;
    }
}

/* Protected: the rows of the result (lightuserdata) as a list of tables column name -> value,
 * NULLs absent, with fields columns (names in order), changes (PQcmdTuples) and command. */
static int push_result_p(lua_State *L)
{
    const PGresult *r = lua_touserdata(L, 1);
    int rows = PQntuples(r), cols = PQnfields(r);
    lua_createtable(L, rows, 3);
    lua_createtable(L, cols, 0);
    for (int j = 0; j < cols; j++) {
        lua_pushstring(L, PQfname(r, j));
        lua_rawseti(L, -2, j + 1);
    }
    int names = lua_gettop(L);
    for (int i = 0; i < rows; i++) {
        lua_createtable(L, 0, cols);
        for (int j = 0; j < cols; j++) {
            if (PQgetisnull(r, i, j))
                continue;
            lua_rawgeti(L, names, j + 1);
            push_value(L, r, i, j);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -3, i + 1);
    }
    lua_setfield(L, -2, "columns");
    const char *tuples = PQcmdTuples((PGresult *)r);
    lua_pushinteger(L, tuples && *tuples ? (lua_Integer)strtoll(tuples, NULL, 10) : 0);
    lua_setfield(L, -2, "changes");
    lua_pushstring(L, PQcmdStatus((PGresult *)r));
    lua_setfield(L, -2, "command");
    return 1;
}

/* ---- calling Lua ---- */

/* Pushes the Lua callback (the userdata's user value). Returns 0, pushing nothing, when nobody
 * holds the connection: then no callback is due, and the userdata may be gone. */
static int push_callback(lua_State *L, pgc *c)
{
    if (c->self_ref == LUA_NOREF || sacm_state_closing())
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->self_ref);
    lua_getiuservalue(L, -1, 1);
    lua_remove(L, -2);
    return 1;
}

static void deliver_event(pgc *c, const char *event)
{
    lua_State *L = sacm_main_state();
    if (!push_callback(L, c))
        return;
    lua_pushstring(L, event);
    sacm_invoke(L, 1);
}

static void deliver_result(pgc *c, PGresult *r)
{
    lua_State *L = sacm_main_state();
    if (!push_callback(L, c))
        return;
    lua_pushliteral(L, "result");
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
        lua_pushcfunction(L, push_result_p);
        lua_pushlightuserdata(L, r);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            sacm_invoke(L, 2);
            return;
        }
        /* out of memory building the rows: the request fails, the connection stays usable */
        const char *why = lua_tostring(L, -1);
        lua_pop(L, 1);
        lua_pushnil(L);
        sacm_push_error(L, "out-of-memory", "postgresql: reading a result of %d rows: %s",
                        PQntuples(r), why ? why : "no memory");
        set_field(L, "sqlstate", "53200");
    } else if (st == PGRES_PIPELINE_ABORTED) {
        lua_pushnil(L);
        sacm_push_error(L, "pipeline_aborted",
                        "postgresql: not run, an earlier statement of the same pipeline failed");
        set_field(L, "sqlstate", "25P02");
    } else {
        lua_pushnil(L);
        push_result_error(L, r);
    }
    sacm_invoke(L, 3);
}

/* The connection is gone (EOF, reset, the server ended it): stop watching the socket, which
 * libpq may already have closed, and tell Lua once. */
static void lose(pgc *c, const char *context)
{
    if (c->state != READY && c->state != CONNECTING)
        return;
    int connecting = c->state == CONNECTING;
    c->state = LOST;
    c->syncs = 0;
    poll_close(c);
    uv_timer_stop(&c->kick);
    snprintf(c->lost_text, sizeof c->lost_text, "%s", PQerrorMessage(c->conn));
    lua_State *L = sacm_main_state();
    if (push_callback(L, c)) {
        lua_pushstring(L, connecting ? "failed" : "lost");
        push_libpq_error(L, connecting ? "connection-failed" : "connection-lost", context,
                         c->lost_text, "08006");
        sacm_invoke(L, 2);
    }
    maybe_release(c);
}

/* ---- the pump ---- */

static void update_poll(pgc *c)
{
    if (c->conn == NULL || c->state != READY)
        return;
    /* PQflush returns 1 while output is queued: wait for writability too (and keep reading, so
     * a server blocked on writing its results cannot deadlock us) */
    int events = UV_READABLE;
    int rc = PQflush(c->conn);
    if (rc < 0) {
        lose(c, "sending to the server");
        return;
    }
    if (rc == 1)
        events |= UV_WRITABLE;
    if (poll_watch(c, events) < 0)
        lose(c, "watching the connection's socket");
}

static void drain_notifies(pgc *c)
{
    PGnotify *n;
    while (c->conn && c->state == READY && (n = PQnotifies(c->conn)) != NULL) {
        lua_State *L = sacm_main_state();
        if (push_callback(L, c)) {
            lua_pushliteral(L, "notify");
            lua_pushstring(L, n->relname);
            lua_pushstring(L, n->extra);
            lua_pushinteger(L, n->be_pid);
            PQfreemem(n);
            sacm_invoke(L, 4);
        } else {
            PQfreemem(n);
        }
    }
}

/* Hands every complete result to Lua. Runs only from libuv callbacks, never inside a Lua call;
 * a callback may close the connection or send more, so the state is read again every turn. */
static void pump(pgc *c)
{
    int nulls = 0;
    while (c->conn && c->state == READY && c->syncs > 0 && !PQisBusy(c->conn)) {
        if (PQstatus(c->conn) == CONNECTION_BAD)
            break;
        PGresult *r = PQgetResult(c->conn);
        if (r == NULL) {
            if (c->simple) {
                /* a script's results ended: back to pipeline mode for everything else */
                c->simple = 0;
                c->syncs--;
                if (!PQenterPipelineMode(c->conn)) {
                    lose(c, "re-entering pipeline mode");
                    return;
                }
                deliver_event(c, "sync");
                continue;
            }
            /* the separator after a query's results; two in a row would mean libpq has
             * nothing more although a sync is outstanding: wait for input instead of spinning */
            if (++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            c->syncs--;
            deliver_event(c, "sync");
            continue;
        }
        deliver_result(c, r);
        PQclear(r);
    }
    if (c->conn && c->state == READY && PQstatus(c->conn) == CONNECTION_BAD) {
        lose(c, "reading from the server");
        return;
    }
    drain_notifies(c);
    update_poll(c);
    maybe_release(c);
}

static void connect_step(pgc *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->conn);
    if (st == PGRES_POLLING_FAILED) {
        lose(c, "connecting");
        return;
    }
    if (st == PGRES_POLLING_OK) {
        if (PQsetnonblocking(c->conn, 1) != 0 || !PQenterPipelineMode(c->conn)) {
            lose(c, "setting up the connection");
            return;
        }
        c->state = READY;
        deliver_event(c, "connected");
        pump(c);
        return;
    }
    int rc = poll_watch(c, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
    if (rc < 0)
        lose(c, "watching the connection's socket");
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    pgc *c = poll->data;
    if (c->poll == NULL || &c->poll->poll != poll || c->conn == NULL)
        return;
    if (c->state == CONNECTING) {
        connect_step(c);
        return;
    }
    if (c->state != READY)
        return;
    /* an error on the socket (status < 0) shows up as a failed read below */
    if (status < 0 || (events & UV_READABLE)) {
        if (!PQconsumeInput(c->conn)) {
            lose(c, "reading from the server");
            return;
        }
    }
    pump(c);
}

static void on_kick(uv_timer_t *timer)
{
    pgc *c = timer->data;
    if (c->conn == NULL)
        return;
    if (c->state == READY) {
        /* PQflush may have read input while sending: results can be buffered with the
         * socket no longer readable */
        if (!PQconsumeInput(c->conn)) {
            lose(c, "reading from the server");
            return;
        }
        pump(c);
    }
}

/* ---- Lua: connections ---- */

static conn_box *to_box(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CONN_MT);
}

static pgc *check_conn(lua_State *L, int idx)
{
    pgc *c = to_box(L, idx)->c;
    if (c == NULL || c->conn == NULL)
        luaL_error(L, "attempt to use a closed postgresql connection");
    return c;
}

/* A connection that can take a request, or NULL with nil, err pushed. */
static pgc *ready_conn(lua_State *L, int idx)
{
    pgc *c = check_conn(L, idx);
    if (c->state == READY)
        return c;
    lua_pushnil(L);
    if (c->state == CONNECTING)
        sacm_push_error(L, "not-connected", "postgresql: the connection is still being made");
    else
        push_libpq_error(L, "connection-lost", "postgresql: the connection was lost", c->lost_text,
                         "08006");
    return NULL;
}

static void on_notice(void *arg, const char *msg)
{
    (void)arg;
    size_t n = strlen(msg);
    sacm_log(SACM_LOG_DEBUG, "pg", "%.*s", (int)(n > 0 && msg[n - 1] == '\n' ? n - 1 : n), msg);
}

/* connect(conninfo, callback) -> connection | nil, err. callback receives the events above. */
static int l_connect(lua_State *L)
{
    const char *info = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    conn_box *box = lua_newuserdatauv(L, sizeof *box, 1);
    box->c = NULL;
    luaL_setmetatable(L, CONN_MT);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    pgc *c = calloc(1, sizeof *c);
    if (c == NULL)
        return luaL_error(L, "out of memory");
    c->self_ref = LUA_NOREF;
    c->poll_fd = -1;
    c->conn = PQconnectStart(info);
    if (c->conn == NULL) {
        free(c);
        return sacm_fail(L, "out-of-memory", "postgresql: no memory for a connection");
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        /* a malformed conninfo, or no address could be tried */
        lua_pushnil(L);
        push_libpq_error(L, "connection-failed", "postgresql: connecting", PQerrorMessage(c->conn),
                         "08001");
        PQfinish(c->conn);
        free(c);
        return 2;
    }
    /* notices ("relation ... already exists, skipping") go to the log, not to stderr */
    PQsetNoticeProcessor(c->conn, on_notice, NULL);
    uv_timer_init(sacm_loop(), &c->kick);
    c->kick.data = c;
    c->open_handles = 1;
    c->state = CONNECTING;
    box->c = c;
    /* libpq says: before the first PQconnectPoll, behave as if it asked for writability */
    int rc = poll_watch(c, UV_WRITABLE);
    if (rc < 0) {
        lua_pushfstring(L, "postgresql: watching the socket of a new connection: %s", uv_strerror(rc));
        lua_error(L);
    }
    hold(L, c, lua_gettop(L));
    return 1;
}

static void kick(pgc *c)
{
    uv_update_time(sacm_loop());
    uv_timer_start(&c->kick, on_kick, 0, 0);
}

static int is_bytea(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, BYTEA_MT);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* c:_send(sql, params, n) -> true | nil, err: queues one statement with params[1..n] as text (a
 * number formatted, a boolean as true/false, nil as NULL), or bytea values in binary. */
static int l_send(lua_State *L)
{
    pgc *c = ready_conn(L, 1);
    if (c == NULL)
        return 2;
    size_t sql_len;
    const char *sql = luaL_checklstring(L, 2, &sql_len);
    luaL_argcheck(L, strlen(sql) == sql_len, 2, "contains a NUL byte");
    lua_Integer n = luaL_optinteger(L, 4, 0);
    luaL_argcheck(L, n >= 0 && n <= MAX_PARAMS, 4, "a statement takes at most 65535 parameters");
    if (n > 0)
        luaL_checktype(L, 3, LUA_TTABLE);
    /* scratch for the arrays and formatted numbers, collected if anything below raises */
    enum { NUM = 32 };
    size_t per = sizeof(char *) + 2 * sizeof(int) + sizeof(Oid) + NUM;
    char *scratch = lua_newuserdatauv(L, (size_t)n * per + 1, 0);
    const char **values = (const char **)scratch;
    int *lengths = (int *)(values + n);
    int *formats = lengths + n;
    Oid *types = (Oid *)(formats + n);
    char *nums = (char *)(types + n);
    for (lua_Integer i = 0; i < n; i++) {
        int t = lua_rawgeti(L, 3, i + 1);
        char *num = nums + i * NUM;
        values[i] = NULL, lengths[i] = 0, formats[i] = 0, types[i] = 0;
        if (t == LUA_TNIL) {
            /* NULL */
        } else if (t == LUA_TBOOLEAN) {
            values[i] = lua_toboolean(L, -1) ? "true" : "false";
        } else if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
            snprintf(num, NUM, "%" PRId64, (int64_t)lua_tointeger(L, -1));
            values[i] = num;
        } else if (t == LUA_TNUMBER) {
            double d = (double)lua_tonumber(L, -1);
            if (isfinite(d))
                snprintf(num, NUM, "%.17g", d), values[i] = num;
            else
                values[i] = isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity";
        } else if (t == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            if (strlen(s) != len)
                return luaL_error(L, "SQL parameter %d is a string with a NUL byte: text cannot hold "
                                     "one; pass binary data as pg.bytea(s)", (int)(i + 1));
            values[i] = s; /* alive: the params table holds it */
        } else if (is_bytea(L, -1)) {
            lua_rawgeti(L, -1, 1);
            size_t len = 0;
            const char *s = lua_tolstring(L, -1, &len);
            lua_pop(L, 1);
            if (len > INT_MAX)
                return luaL_error(L, "SQL parameter %d: bytea value too long", (int)(i + 1));
            values[i] = s ? s : "", lengths[i] = (int)len, formats[i] = 1, types[i] = OID_BYTEA;
        } else {
            return luaL_error(L, "cannot send a %s as SQL parameter %d (nil, boolean, number, "
                                 "string or pg.bytea(s))", luaL_typename(L, -1), (int)(i + 1));
        }
        lua_pop(L, 1);
    }
    if (!PQsendQueryParams(c->conn, sql, (int)n, types, values, lengths, formats, 0)) {
        lua_pushnil(L);
        push_libpq_error(L, "send-failed", "postgresql: sending a statement",
                         PQerrorMessage(c->conn), "08006");
        return 2;
    }
    kick(c);
    lua_pushboolean(L, 1);
    return 1;
}

/* c:_sync() -> true | nil, err: ends a request; its "sync" event follows the results. */
static int l_sync(lua_State *L)
{
    pgc *c = ready_conn(L, 1);
    if (c == NULL)
        return 2;
    if (!PQpipelineSync(c->conn)) {
        lua_pushnil(L);
        push_libpq_error(L, "send-failed", "postgresql: ending a request", PQerrorMessage(c->conn), "08006");
        return 2;
    }
    c->syncs++;
    hold(L, c, 1);
    kick(c);
    lua_pushboolean(L, 1);
    return 1;
}

/* c:_script(sql) -> true | nil, err: runs a script of statements with the simple protocol. Only
 * when nothing is in flight (Lua makes sure); its results end with a "sync" event. */
static int l_script(lua_State *L)
{
    pgc *c = ready_conn(L, 1);
    if (c == NULL)
        return 2;
    const char *sql = luaL_checkstring(L, 2);
    if (c->syncs > 0)
        return luaL_error(L, "postgresql: a script cannot run while requests are in flight");
    if (!PQexitPipelineMode(c->conn) || !PQsendQuery(c->conn, sql)) {
        lua_pushnil(L);
        push_libpq_error(L, "send-failed", "postgresql: sending a script", PQerrorMessage(c->conn), "08006");
        if (PQpipelineStatus(c->conn) == PQ_PIPELINE_OFF && !PQisBusy(c->conn))
            PQenterPipelineMode(c->conn);
        return 2;
    }
    c->simple = 1;
    c->syncs++;
    hold(L, c, 1);
    kick(c);
    lua_pushboolean(L, 1);
    return 1;
}

/* c:_keep(bool): hold the connection while open even with nothing in flight (listeners). */
static int l_keep(lua_State *L)
{
    pgc *c = check_conn(L, 1);
    c->keep = lua_toboolean(L, 2);
    hold(L, c, 1);
    maybe_release(c);
    return 0;
}

static int l_close(lua_State *L)
{
    conn_box *box = lua_touserdata(L, 1);
    if (box == NULL || box->c == NULL)
        return 0;
    pgc *c = box->c;
    box->c = NULL;
    if (c->self_ref != LUA_NOREF && !sacm_state_closing())
        luaL_unref(L, LUA_REGISTRYINDEX, c->self_ref);
    c->self_ref = LUA_NOREF;
    c->state = CLOSED;
    /* the poll goes first: PQfinish closes the socket it watches */
    poll_close(c);
    uv_close((uv_handle_t *)&c->kick, on_handle_closed);
    PQfinish(c->conn);
    c->conn = NULL;
    return 0;
}

/* c:_info() -> requests in flight, transaction status ("idle", "active", "intrans", "inerror",
 * "unknown"), backend pid, server version (150018) */
static int l_info(lua_State *L)
{
    pgc *c = check_conn(L, 1);
    static const char *const names[] = {"idle", "active", "intrans", "inerror", "unknown"};
    PGTransactionStatusType st = PQtransactionStatus(c->conn);
    lua_pushinteger(L, c->syncs);
    lua_pushstring(L, st <= PQTRANS_UNKNOWN ? names[st] : "unknown");
    lua_pushinteger(L, PQbackendPID(c->conn));
    lua_pushinteger(L, PQserverVersion(c->conn));
    return 4;
}

/* c:escape_identifier(s) -> "quoted" (for names SQL cannot take as parameters: LISTEN ch) */
static int l_escape_identifier(lua_State *L)
{
    pgc *c = check_conn(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    char *q = PQescapeIdentifier(c->conn, s, len);
    if (q == NULL)
        return luaL_error(L, "postgresql: cannot quote identifier: %s", PQerrorMessage(c->conn));
    lua_pushstring(L, q);
    PQfreemem(q);
    return 1;
}

static int l_tostring(lua_State *L)
{
    pgc *c = to_box(L, 1)->c;
    if (c && c->conn && c->state == READY)
        lua_pushfstring(L, "pg.Connection (%s:%s %s, pid %d)", PQhost(c->conn), PQport(c->conn),
                        PQdb(c->conn), PQbackendPID(c->conn));
    else
        lua_pushfstring(L, "pg.Connection (%s)", c ? (c->state == CONNECTING ? "connecting" : "lost")
                                                   : "closed");
    return 1;
}

int luaopen_sacm__pg(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"_send", l_send},
        {"_sync", l_sync},
        {"_script", l_script},
        {"_keep", l_keep},
        {"_info", l_info},
        {"escape_identifier", l_escape_identifier},
        {"close", l_close},
        {NULL, NULL},
    };
    lua_newtable(L);
    sacm_define_type(L, CONN_MT, methods, l_close);
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "Connection");
    lua_setfield(L, -2, "metatable");

    /* pg.bytea(s) is {s} with this metatable (lua/sacm/pg.lua) */
    luaL_newmetatable(L, BYTEA_MT);
    lua_pushliteral(L, "pg.Bytea");
    lua_setfield(L, -2, "__name");
    lua_setfield(L, -2, "bytea_metatable");

    lua_pushcfunction(L, l_connect);
    lua_setfield(L, -2, "connect");
    lua_pushinteger(L, PQlibVersion());
    lua_setfield(L, -2, "libpq_version");
    return 1;
}
