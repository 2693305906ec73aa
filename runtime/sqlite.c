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
 * allocates between SQLite calls fetches the statement again through sqlite_stmt_live(), which raises
 * instead of touching a finalized statement. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "sqlite_internal.h"

/* Statements db:query/first/run keep prepared, per database. Beyond this many, an old one is
 * finalized: SQL built at run time (which should be bound parameters instead) cannot grow it. */
#define CACHE_LIMIT 64

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
void sqlite_push_error(lua_State *L, int code, const char *prefix, const char *msg)
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
int sqlite_fail_db(lua_State *L, sqlite3 *db, int rc)
{
    lua_pushnil(L);
    sqlite_push_error(L, rc, NULL, sqlite3_errmsg(db));
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
        sqlite_push_error(L, db ? sqlite3_extended_errcode(db) : rc, path,
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
        sqlite_stmt_finalize(d->stmts);
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
        sqlite_push_error(L, sqlite3_extended_errcode(d->db), NULL, msg ? msg : sqlite3_errstr(rc));
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
    stmt_box *s = sqlite_stmt_new(L, 1);
    db_state *d = check_db(L, 1); /* stmt_new allocated: a finalizer may have closed it */
    if (!sqlite_stmt_prepare(L, d, s, sql, len, 0))
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
                sqlite_stmt_finalize(old);
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_rawset(L, cache);
        }
    }
    s = sqlite_stmt_new(L, db_idx);
    d = check_db(L, db_idx); /* stmt_new allocated: a finalizer may have closed the database */
    if (!sqlite_stmt_prepare(L, d, s, sql, len, SQLITE_PREPARE_PERSISTENT))
        return NULL; /* nil, err on top */
    s->cached = 1;
    d->cached++;
    lua_pushvalue(L, sql_idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, cache);
    lua_remove(L, cache);
    return s;
}

/* The cached statement for db:query/first/run(sql [, params]), bound to params; NULL with
 * nil, err pushed when the SQL does not compile. */
static stmt_box *bound_cached_stmt(lua_State *L)
{
    check_db(L, 1);
    lua_settop(L, 3);
    stmt_box *s = cached_stmt(L, 1, 2);
    if (s != NULL)
        sqlite_stmt_rebind(L, s, 3);
    return s;
}

/* db:query(sql [, params]) -> list of rows | nil, err */
static int l_db_query(lua_State *L)
{
    stmt_box *s = bound_cached_stmt(L);
    if (s == NULL)
        return 2;
    return sqlite_stmt_run(L, s, COLLECT_ALL) ? 1 : 2;
}

/* db:first(sql [, params]) -> first row | nil (no row) | nil, err */
static int l_db_first(lua_State *L)
{
    stmt_box *s = bound_cached_stmt(L);
    if (s == NULL)
        return 2;
    return sqlite_stmt_run(L, s, COLLECT_FIRST) ? 1 : 2;
}

/* db:run(sql [, params]) -> changes, last_insert_rowid | nil, err */
static int l_db_run(lua_State *L)
{
    stmt_box *s = bound_cached_stmt(L);
    if (s == NULL)
        return 2;
    if (!sqlite_stmt_run(L, s, COLLECT_NONE))
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
    lua_newtable(L);

    sacm_define_type(L, DB_MT, db_methods, l_db_close);
    lua_pushcfunction(L, l_db_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "Database"); /* for lua/sacm/sqlite.lua to add its methods */
    lua_pop(L, 1);

    sqlite_stmt_register(L, lua_gettop(L));

    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "open");
    lua_pushstring(L, sqlite3_libversion());
    lua_setfield(L, -2, "version");
    return 1;
}
