/* sacm._sqlite: SQLite databases for Lua (lua/sacm/sqlite.lua is the public face).
 *
 * Calls are synchronous: on local disk in WAL mode a statement takes microseconds, less than
 * handing it to a worker thread would (docs/api/sqlite.md says where that stops being true).
 *
 * Ownership follows liolib: a userdata is created closed before the resource is acquired, and
 * __gc, __close and close() share one idempotent close. A database owns its statements: it keeps
 * them on a list and finalizes every one still open when it closes, after which they raise on
 * use. A statement's user value is its database, so a reachable statement keeps it alive.
 *
 * Lua may run finalizers during any allocation, and a finalizer may close a database. So code that
 * allocates between SQLite calls fetches the statement again through live(), which raises
 * instead of touching a finalized statement. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "sacmrun.h"

#define DB_MT "sacm.sqlite.Database"
#define STMT_MT "sacm.sqlite.Statement"
#define BLOB_MT "sacm.sqlite.Blob"
#define ROWS_GUARD_MT "sacm.sqlite.RowsGuard"

/* Statements db:query/first/run keep prepared, per database. Beyond this many, an old one is
 * finalized: SQL built at run time (which should be bound parameters instead) cannot grow it. */
#define CACHE_LIMIT 64

typedef struct stmt_box stmt_box;

typedef struct {
    sqlite3 *db;
    stmt_box *stmts; /* every open statement of this database */
    int cached;      /* how many of them are in the statement cache */
} db_state;

typedef struct {
    db_state *d; /* NULL once closed */
} db_box;

struct stmt_box {
    sqlite3_stmt *stmt; /* NULL once finalized */
    db_state *d;
    stmt_box *prev, *next;
    int cached;
};

/* ---- errors ---- */

static const char *const primary_names[] = {
    "SQLITE_OK", "SQLITE_ERROR", "SQLITE_INTERNAL", "SQLITE_PERM", "SQLITE_ABORT", "SQLITE_BUSY",
    "SQLITE_LOCKED", "SQLITE_NOMEM", "SQLITE_READONLY", "SQLITE_INTERRUPT", "SQLITE_IOERR",
    "SQLITE_CORRUPT", "SQLITE_NOTFOUND", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL",
    "SQLITE_EMPTY", "SQLITE_SCHEMA", "SQLITE_TOOBIG", "SQLITE_CONSTRAINT", "SQLITE_MISMATCH",
    "SQLITE_MISUSE", "SQLITE_NOLFS", "SQLITE_AUTH", "SQLITE_FORMAT", "SQLITE_RANGE",
    "SQLITE_NOTADB", "SQLITE_NOTICE", "SQLITE_WARNING",
};

/* The extended codes a caller may want to branch on; others are still in err.code. */
#define EXTENDED(c) { c, #c }
static const struct {
    int code;
    const char *name;
} extended_names[] = {
    EXTENDED(SQLITE_CONSTRAINT_CHECK), EXTENDED(SQLITE_CONSTRAINT_FOREIGNKEY),
    EXTENDED(SQLITE_CONSTRAINT_NOTNULL), EXTENDED(SQLITE_CONSTRAINT_PRIMARYKEY),
    EXTENDED(SQLITE_CONSTRAINT_TRIGGER), EXTENDED(SQLITE_CONSTRAINT_UNIQUE),
    EXTENDED(SQLITE_CONSTRAINT_ROWID), EXTENDED(SQLITE_CONSTRAINT_FUNCTION),
#ifdef SQLITE_CONSTRAINT_DATATYPE
    EXTENDED(SQLITE_CONSTRAINT_DATATYPE),
#endif
    EXTENDED(SQLITE_BUSY_RECOVERY), EXTENDED(SQLITE_BUSY_SNAPSHOT),
#ifdef SQLITE_BUSY_TIMEOUT
    EXTENDED(SQLITE_BUSY_TIMEOUT),
#endif
    EXTENDED(SQLITE_READONLY_DBMOVED), EXTENDED(SQLITE_READONLY_CANTLOCK),
    EXTENDED(SQLITE_READONLY_RECOVERY), EXTENDED(SQLITE_READONLY_ROLLBACK),
    EXTENDED(SQLITE_CANTOPEN_ISDIR), EXTENDED(SQLITE_CANTOPEN_FULLPATH),
    EXTENDED(SQLITE_IOERR_FSYNC), EXTENDED(SQLITE_IOERR_WRITE), EXTENDED(SQLITE_IOERR_READ),
    EXTENDED(SQLITE_IOERR_SHORT_READ),
};

static const char *code_name(int code)
{
    int primary = code & 0xff;
    if (primary >= 0 && primary < (int)(sizeof primary_names / sizeof *primary_names))
        return primary_names[primary];
    return "SQLITE_ERROR";
}

/* Pushes an error: condition the primary code's name (SQLITE_CONSTRAINT), text the message,
 * code the extended result code and, when it has a name here, extended (SQLITE_CONSTRAINT_UNIQUE). */
static void push_error(lua_State *L, int code, const char *prefix, const char *msg)
{
    if (prefix)
        sacm_push_error(L, code_name(code), "%s: %s", prefix, msg);
    else
        sacm_push_error(L, code_name(code), "%s", msg);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    for (size_t i = 0; i < sizeof extended_names / sizeof *extended_names; i++) {
        if (extended_names[i].code == code) {
            lua_pushstring(L, extended_names[i].name);
            lua_setfield(L, -2, "extended");
            break;
        }
    }
}

/* nil, err for a failed call on db that returned rc. */
static int fail_db(lua_State *L, sqlite3 *db, int rc)
{
    lua_pushnil(L);
    push_error(L, rc, NULL, sqlite3_errmsg(db));
    return 2;
}

/* ---- arguments ---- */

static const char *check_text(lua_State *L, int idx, size_t *len)
{
    const char *s = luaL_checklstring(L, idx, len);
    luaL_argcheck(L, strlen(s) == *len, idx, "contains a NUL byte");
    luaL_argcheck(L, *len <= INT_MAX, idx, "too long");
    return s;
}

static db_box *to_db_box(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, DB_MT);
}

static db_state *check_db(lua_State *L, int idx)
{
    db_box *box = to_db_box(L, idx);
    if (box->d == NULL)
        luaL_error(L, "attempt to use a closed sqlite database");
    return box->d;
}

static stmt_box *to_stmt_box(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, STMT_MT);
}

static sqlite3_stmt *live(lua_State *L, stmt_box *s)
{
    if (s->stmt == NULL)
        luaL_error(L, "attempt to use a finalized sqlite statement (or one of a closed database)");
    return s->stmt;
}

static stmt_box *check_stmt(lua_State *L, int idx)
{
    stmt_box *s = to_stmt_box(L, idx);
    live(L, s);
    return s;
}

/* ---- statements ---- */

static void stmt_link(db_state *d, stmt_box *s, sqlite3_stmt *stmt)
{
    s->stmt = stmt;
    s->d = d;
    s->prev = NULL;
    s->next = d->stmts;
    if (d->stmts)
        d->stmts->prev = s;
    d->stmts = s;
}

static void stmt_finalize(stmt_box *s)
{
    if (s->stmt == NULL)
        return;
    sqlite3_finalize(s->stmt);
    s->stmt = NULL;
    db_state *d = s->d;
    if (s->prev)
        s->prev->next = s->next;
    else
        d->stmts = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->cached)
        d->cached--;
    s->prev = s->next = NULL;
    s->d = NULL;
    s->cached = 0;
}

static int l_stmt_finalize(lua_State *L)
{
    stmt_finalize(to_stmt_box(L, 1));
    return 0;
}

/* Pushes a closed statement userdata whose user value is the database at db_idx. */
static stmt_box *stmt_new(lua_State *L, int db_idx)
{
    stmt_box *s = lua_newuserdatauv(L, sizeof *s, 1);
    memset(s, 0, sizeof *s);
    luaL_setmetatable(L, STMT_MT);
    lua_pushvalue(L, db_idx);
    lua_setiuservalue(L, -2, 1);
    return s;
}

static int only_space(const char *p)
{
    for (; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\f' && *p != ';')
            return 0;
    return 1;
}

/* Prepares one statement into s. Returns 1, or pushes nil, err and returns 0. */
static int stmt_prepare(lua_State *L, db_state *d, stmt_box *s, const char *sql, size_t len,
                        unsigned flags)
{
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(d->db, sql, (int)len, flags, &stmt, &tail);
    if (rc != SQLITE_OK) {
        fail_db(L, d->db, rc);
#if SQLITE_VERSION_NUMBER >= 3038000
        int offset = sqlite3_error_offset(d->db);
        if (offset >= 0) {
            lua_pushinteger(L, offset + 1);
            lua_setfield(L, -2, "position");
        }
#endif
        return 0;
    }
    if (stmt == NULL) {
        lua_pushnil(L);
        push_error(L, SQLITE_MISUSE, NULL, "no SQL statement in the text");
        return 0;
    }
    if (tail && !only_space(tail)) {
        /* Anything after the statement but comments is a second statement that would never
         * run; say so rather than drop it. */
        sqlite3_stmt *next = NULL;
        int rc2 = sqlite3_prepare_v2(d->db, tail, -1, &next, NULL);
        sqlite3_finalize(next);
        if (rc2 != SQLITE_OK || next != NULL) {
            sqlite3_finalize(stmt);
            lua_pushnil(L);
            push_error(L, SQLITE_MISUSE, NULL,
                       "more than one SQL statement (db:exec runs scripts)");
            return 0;
        }
    }
    stmt_link(d, s, stmt);
    return 1;
}

/* ---- binding ---- */

static int is_blob(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, BLOB_MT);
    int blob = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return blob;
}

static void bind_value(lua_State *L, stmt_box *s, int param, int idx)
{
    int rc;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        rc = sqlite3_bind_null(live(L, s), param);
        break;
    case LUA_TBOOLEAN:
        rc = sqlite3_bind_int(live(L, s), param, lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            rc = sqlite3_bind_int64(live(L, s), param, (sqlite3_int64)lua_tointeger(L, idx));
        else
            rc = sqlite3_bind_double(live(L, s), param, (double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *p = lua_tolstring(L, idx, &len);
        rc = sqlite3_bind_text64(live(L, s), param, p, len, SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
    }
    case LUA_TTABLE:
        if (is_blob(L, idx)) {
            size_t len;
            lua_rawgeti(L, idx, 1);
            const char *p = lua_tolstring(L, -1, &len);
            rc = sqlite3_bind_blob64(live(L, s), param, p ? p : "", p ? len : 0, SQLITE_TRANSIENT);
            lua_pop(L, 1);
            break;
        }
        /* fall through */
    default:
        luaL_error(L, "cannot bind a %s to SQL parameter %d (nil, boolean, number, string or "
                      "sqlite.blob(s))", luaL_typename(L, idx), param);
        return;
    }
    if (rc != SQLITE_OK)
        luaL_error(L, "binding SQL parameter %d: %s", param, sqlite3_errstr(rc));
}

/* Binds every parameter from the table at idx: ?NNN and ? by position, :name, @name and $name
 * by name without the prefix. A missing value binds NULL (a Lua table cannot hold nil). Values
 * are read raw, so no Lua code runs while a statement is half bound. */
static void bind_table(lua_State *L, stmt_box *s, int idx)
{
    int n = sqlite3_bind_parameter_count(live(L, s));
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(live(L, s), i);
        if (name == NULL || name[0] == '?')
            lua_rawgeti(L, idx, i);
        else
            lua_pushstring(L, name + 1);
        if (name != NULL && name[0] != '?')
            lua_rawget(L, idx);
        bind_value(L, s, i, lua_gettop(L));
        lua_pop(L, 1);
    }
}

static int is_params_table(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TTABLE && !is_blob(L, idx);
}

/* Fresh bindings from the params table at idx (nil or none: all NULL). */
static void rebind(lua_State *L, stmt_box *s, int idx)
{
    sqlite3_reset(live(L, s));
    sqlite3_clear_bindings(live(L, s));
    if (lua_isnoneornil(L, idx))
        return;
    if (!is_params_table(L, idx))
        luaL_typeerror(L, idx, "table of parameters");
    bind_table(L, s, idx);
}

/* stmt:bind(v1, v2, ...) binds by position; stmt:bind(t) binds from a table. Both start from a
 * reset statement with every parameter NULL. Returns the statement. */
static int l_stmt_bind(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    int nargs = lua_gettop(L) - 1;
    if (nargs == 1 && is_params_table(L, 2)) {
        rebind(L, s, 2);
    } else {
        sqlite3_reset(live(L, s));
        sqlite3_clear_bindings(live(L, s));
        int n = sqlite3_bind_parameter_count(live(L, s));
        if (nargs > n)
            return luaL_error(L, "statement has %d parameter(s), got %d values", n, nargs);
        for (int i = 1; i <= nargs; i++)
            bind_value(L, s, i, i + 1);
    }
    lua_settop(L, 1);
    return 1;
}

/* ---- rows ---- */

static void push_column(lua_State *L, sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        lua_pushinteger(L, (lua_Integer)sqlite3_column_int64(st, i));
        break;
    case SQLITE_FLOAT:
        lua_pushnumber(L, (lua_Number)sqlite3_column_double(st, i));
        break;
    case SQLITE_TEXT: {
        const unsigned char *p = sqlite3_column_text(st, i);
        int len = sqlite3_column_bytes(st, i);
        if (p == NULL)
            luaL_error(L, "sqlite: out of memory reading a column");
        lua_pushlstring(L, (const char *)p, (size_t)len);
        break;
    }
    case SQLITE_BLOB: {
        const void *p = sqlite3_column_blob(st, i);
        int len = sqlite3_column_bytes(st, i);
        lua_pushlstring(L, p ? p : "", p ? (size_t)len : 0);
        break;
    }
    default:
        lua_pushnil(L);
        break;
    }
}

/* The current row as a table column name -> value (NULL columns are absent). */
static void push_row(lua_State *L, stmt_box *s)
{
    int n = sqlite3_column_count(live(L, s));
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        push_column(L, live(L, s), i);
        const char *name = sqlite3_column_name(live(L, s), i);
        if (name == NULL)
            luaL_error(L, "sqlite: out of memory reading a column name");
        lua_setfield(L, -2, name);
    }
}

/* stmt:step() -> row table | false when done | nil, err */
static int l_stmt_step(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    int rc = sqlite3_step(s->stmt);
    if (rc == SQLITE_ROW) {
        push_row(L, s);
        return 1;
    }
    if (rc == SQLITE_DONE) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return fail_db(L, s->d->db, rc);
}

/* stmt:reset(): back to the start, bindings kept. Returns the statement. */
static int l_stmt_reset(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    /* reset returns the error of the last step, which that step already reported */
    sqlite3_reset(s->stmt);
    lua_settop(L, 1);
    return 1;
}

static int rows_next(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    int rc = sqlite3_step(s->stmt);
    if (rc == SQLITE_ROW) {
        push_row(L, s);
        return 1;
    }
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s->stmt);
        return 0;
    }
    /* a for loop cannot take nil, err: raise the error value, as io.lines does */
    fail_db(L, s->d->db, rc);
    if (s->stmt)
        sqlite3_reset(s->stmt);
    return lua_error(L);
}

static int rows_guard_close(lua_State *L)
{
    lua_rawgeti(L, 1, 1);
    stmt_box *s = luaL_testudata(L, -1, STMT_MT);
    if (s && s->stmt)
        sqlite3_reset(s->stmt);
    return 0;
}

/* for row in stmt:rows() do ... end: from the start, with the current bindings. The fourth value
 * resets the statement when the loop ends early (break, error), releasing its read snapshot. */
static int l_stmt_rows(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    sqlite3_reset(s->stmt);
    lua_pushcfunction(L, rows_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, ROWS_GUARD_MT);
    return 4;
}

static int l_stmt_columns(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    int n = sqlite3_column_count(s->stmt);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(live(L, s), i);
        lua_pushstring(L, name ? name : "");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_stmt_sql(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    lua_pushstring(L, sqlite3_sql(s->stmt));
    return 1;
}

static int l_stmt_tostring(lua_State *L)
{
    stmt_box *s = to_stmt_box(L, 1);
    if (s->stmt)
        lua_pushfstring(L, "sqlite.Statement (%s)", sqlite3_sql(s->stmt));
    else
        lua_pushliteral(L, "sqlite.Statement (finalized)");
    return 1;
}

/* ---- databases ---- */

/* open(path, readonly, create) -> db | nil, err */
static int l_open(lua_State *L)
{
    size_t len;
    const char *path = check_text(L, 1, &len);
    int readonly = lua_toboolean(L, 2);
    int create = lua_toboolean(L, 3);
    db_box *box = lua_newuserdatauv(L, sizeof *box, 1);
    box->d = NULL;
    luaL_setmetatable(L, DB_MT);
    lua_newtable(L); /* the statement cache: SQL text -> statement */
    lua_setiuservalue(L, -2, 1);
    db_state *d = calloc(1, sizeof *d);
    if (d == NULL)
        return luaL_error(L, "out of memory");

    /* NOMUTEX: only the loop thread uses a connection. No URI names: a path is a path. */
    int flags = SQLITE_OPEN_NOMUTEX;
    flags |= readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
    if (create && !readonly)
        flags |= SQLITE_OPEN_CREATE;
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        lua_pushnil(L);
        push_error(L, db ? sqlite3_extended_errcode(db) : rc, path,
                   db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        free(d);
        return 2;
    }
    sqlite3_extended_result_codes(db, 1);
    /* Hardening that costs nothing: no writes to the schema table or other ways to corrupt the
     * file from SQL, no functions with side effects run from a schema (views, triggers) someone
     * else wrote, and "x" is always a column name, never silently a string. */
#ifdef SQLITE_DBCONFIG_DEFENSIVE
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
#endif
#ifdef SQLITE_DBCONFIG_TRUSTED_SCHEMA
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
#endif
#ifdef SQLITE_DBCONFIG_DQS_DML
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DML, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DQS_DDL, 0, (int *)NULL);
#endif
    d->db = db;
    box->d = d;
    return 1;
}

static int l_db_close(lua_State *L)
{
    db_box *box = to_db_box(L, 1);
    db_state *d = box->d;
    if (d == NULL)
        return 0;
    box->d = NULL;
    while (d->stmts)
        stmt_finalize(d->stmts);
    /* every statement is finalized, so this closes now (an open transaction rolls back) */
    sqlite3_close_v2(d->db);
    free(d);
    return 0;
}

static int l_db_is_open(lua_State *L)
{
    lua_pushboolean(L, to_db_box(L, 1)->d != NULL);
    return 1;
}

/* db:exec(sql) -> true | nil, err: runs every statement of a script, discarding rows. */
static int l_db_exec(lua_State *L)
{
    db_state *d = check_db(L, 1);
    size_t len;
    const char *sql = check_text(L, 2, &len);
    char *msg = NULL;
    int rc = sqlite3_exec(d->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        lua_pushnil(L);
        push_error(L, sqlite3_extended_errcode(d->db), NULL, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* db:prepare(sql) -> statement | nil, err */
static int l_db_prepare(lua_State *L)
{
    check_db(L, 1);
    size_t len;
    const char *sql = check_text(L, 2, &len);
    stmt_box *s = stmt_new(L, 1);
    db_state *d = check_db(L, 1); /* stmt_new allocated: a finalizer may have closed it */
    if (!stmt_prepare(L, d, s, sql, len, 0))
        return 2;
    return 1;
}

/* Pushes the cached statement for the SQL at sql_idx, preparing it on first use. Returns it, or
 * pushes nil, err and returns NULL. */
static stmt_box *cached_stmt(lua_State *L, int db_idx, int sql_idx)
{
    size_t len;
    const char *sql = check_text(L, sql_idx, &len);
    lua_getiuservalue(L, db_idx, 1);
    int cache = lua_gettop(L);
    lua_pushvalue(L, sql_idx);
    lua_rawget(L, cache);
    stmt_box *s = luaL_testudata(L, -1, STMT_MT);
    if (s && s->stmt) {
        lua_remove(L, cache);
        return s;
    }
    lua_pop(L, 1);
    db_state *d = check_db(L, db_idx);
    if (d->cached >= CACHE_LIMIT) {
        /* any entry will do: a cache this full is being fed SQL built at run time */
        lua_pushnil(L);
        if (lua_next(L, cache)) {
            stmt_box *old = luaL_testudata(L, -1, STMT_MT);
            if (old)
                stmt_finalize(old);
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_rawset(L, cache);
        }
    }
    s = stmt_new(L, db_idx);
    d = check_db(L, db_idx); /* stmt_new allocated: a finalizer may have closed the database */
    if (!stmt_prepare(L, d, s, sql, len, SQLITE_PREPARE_PERSISTENT))
        return NULL; /* nil, err on top */
    s->cached = 1;
    d->cached++;
    lua_pushvalue(L, sql_idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
    lua_remove(L, cache);
    return s;
}

enum collect { COLLECT_NONE, COLLECT_ALL, COLLECT_FIRST };

/* Steps s to the end and resets it. Returns 1 having pushed, by `collect`, nothing, the list of
 * rows, or the first row (nil when there is none); or pushes nil, err and returns 0. */

static int run_stmt(lua_State *L, stmt_box *s, enum collect collect)
{
    int n = 0;
    if (collect == COLLECT_ALL)
        lua_newtable(L);
    for (;;) {
        int rc = sqlite3_step(live(L, s));
        if (rc == SQLITE_ROW) {
            if (collect == COLLECT_ALL) {
                push_row(L, s);
                lua_rawseti(L, -2, ++n);
            } else if (collect == COLLECT_FIRST) {
                push_row(L, s);
                break;
            }
            continue;
        }
        if (rc == SQLITE_DONE) {
            if (collect == COLLECT_FIRST)
                lua_pushnil(L);
            break;
        }
        sqlite3 *db = s->d->db;
        if (collect == COLLECT_ALL)
            lua_pop(L, 1);
        fail_db(L, db, rc);
        if (s->stmt)
            sqlite3_reset(s->stmt);
        return 0;
    }
    /* reset at once: a statement left mid-way holds a read snapshot and blocks checkpoints */
    sqlite3_reset(live(L, s));
    return 1;
}

/* The cached statement for db:query/first/run(sql [, params]), bound to params; NULL with
 * nil, err pushed when the SQL does not compile. */
static stmt_box *bound_cached_stmt(lua_State *L)
{
    check_db(L, 1);
    lua_settop(L, 3);
    stmt_box *s = cached_stmt(L, 1, 2);
    if (s != NULL)
        rebind(L, s, 3);
    return s;
}

/* db:query(sql [, params]) -> list of rows | nil, err */
static int l_db_query(lua_State *L)
{
    stmt_box *s = bound_cached_stmt(L);
    if (s == NULL)
        return 2;
    return run_stmt(L, s, COLLECT_ALL) ? 1 : 2;
}

/* db:first(sql [, params]) -> first row | nil (no row) | nil, err */
static int l_db_first(lua_State *L)
{
    stmt_box *s = bound_cached_stmt(L);
    if (s == NULL)
        return 2;
    return run_stmt(L, s, COLLECT_FIRST) ? 1 : 2;
}

/* db:run(sql [, params]) -> changes, last_insert_rowid | nil, err */
static int l_db_run(lua_State *L)
{
    stmt_box *s = bound_cached_stmt(L);
    if (s == NULL)
        return 2;
    if (!run_stmt(L, s, COLLECT_NONE))
        return 2;
    db_state *d = check_db(L, 1);
    lua_pushinteger(L, (lua_Integer)sqlite3_changes64(d->db));
    lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(d->db));
    return 2;
}

static int l_db_changes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sqlite3_changes64(check_db(L, 1)->db));
    return 1;
}

static int l_db_last_insert_rowid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sqlite3_last_insert_rowid(check_db(L, 1)->db));
    return 1;
}

static int l_db_in_transaction(lua_State *L)
{
    lua_pushboolean(L, !sqlite3_get_autocommit(check_db(L, 1)->db));
    return 1;
}

/* db:busy_timeout(ms): how long a statement waits for another connection's lock */
static int l_db_busy_timeout(lua_State *L)
{
    db_state *d = check_db(L, 1);
    lua_Integer ms = luaL_checkinteger(L, 2);
    luaL_argcheck(L, ms >= 0 && ms <= INT_MAX, 2, "out of range");
    sqlite3_busy_timeout(d->db, (int)ms);
    return 0;
}

static int l_db_path(lua_State *L)
{
    const char *path = sqlite3_db_filename(check_db(L, 1)->db, "main");
    lua_pushstring(L, path ? path : "");
    return 1;
}

static int l_db_tostring(lua_State *L)
{
    db_box *box = to_db_box(L, 1);
    if (box->d) {
        const char *path = sqlite3_db_filename(box->d->db, "main");
        lua_pushfstring(L, "sqlite.Database (%s)", path && *path ? path : ":memory:");
    } else {
        lua_pushliteral(L, "sqlite.Database (closed)");
    }
    return 1;
}

/* blob(s): marks a string to be bound as a BLOB rather than TEXT */
static int l_blob(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TSTRING);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, BLOB_MT);
    return 1;
}

int luaopen_sacm__sqlite(lua_State *L)
{
    static const luaL_Reg db_methods[] = {
        {"exec", l_db_exec},
        {"prepare", l_db_prepare},
        {"query", l_db_query},
        {"first", l_db_first},
        {"run", l_db_run},
        {"changes", l_db_changes},
        {"last_insert_rowid", l_db_last_insert_rowid},
        {"in_transaction", l_db_in_transaction},
        {"busy_timeout", l_db_busy_timeout},
        {"path", l_db_path},
        {"is_open", l_db_is_open},
        {"close", l_db_close},
        {NULL, NULL},
    };
    static const luaL_Reg stmt_methods[] = {
        {"bind", l_stmt_bind},
        {"step", l_stmt_step},
        {"rows", l_stmt_rows},
        {"reset", l_stmt_reset},
        {"columns", l_stmt_columns},
        {"sql", l_stmt_sql},
        {"finalize", l_stmt_finalize},
        {NULL, NULL},
    };
    lua_newtable(L);

    sacm_define_type(L, DB_MT, db_methods, l_db_close);
    lua_pushcfunction(L, l_db_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "Database"); /* for lua/sacm/sqlite.lua to add its methods */
    lua_pop(L, 1);

    sacm_define_type(L, STMT_MT, stmt_methods, l_stmt_finalize);
    lua_pushcfunction(L, l_stmt_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "Statement");
    lua_pop(L, 1);

    luaL_newmetatable(L, BLOB_MT);
    lua_pushliteral(L, "sqlite.Blob");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    luaL_newmetatable(L, ROWS_GUARD_MT);
    lua_pushcfunction(L, rows_guard_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "open");
    lua_pushcfunction(L, l_blob);
    lua_setfield(L, -2, "blob");
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "version");
    return 1;
}
