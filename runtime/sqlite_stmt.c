/* sacm._sqlite statements: preparing, binding parameters, stepping and reading rows. The
 * database side, errors and the module table are in sqlite.c; the ownership rules (a statement
 * is finalized by its database's close, and raises once finalized) are described there. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "sqlite_internal.h"

static stmt_box *to_stmt_box(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, STMT_MT);
}

sqlite3_stmt *sqlite_stmt_live(lua_State *L, stmt_box *s)
{
    if (s->stmt == NULL)
        luaL_error(L, "attempt to use a finalized sqlite statement (or one of a closed database)");
    return s->stmt;
}

static stmt_box *check_stmt(lua_State *L, int idx)
{
    stmt_box *s = to_stmt_box(L, idx);
    sqlite_stmt_live(L, s);
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

void sqlite_stmt_finalize(stmt_box *s)
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
    sqlite_stmt_finalize(to_stmt_box(L, 1));
    return 0;
}

/* Pushes a closed statement userdata whose user value is the database at db_idx. */
stmt_box *sqlite_stmt_new(lua_State *L, int db_idx)
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
int sqlite_stmt_prepare(lua_State *L, db_state *d, stmt_box *s, const char *sql, size_t len,
                        unsigned flags)
{
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(d->db, sql, (int)len, flags, &stmt, &tail);
    if (rc != SQLITE_OK) {
        sqlite_fail_db(L, d->db, rc);
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
        sqlite_push_error(L, SQLITE_MISUSE, NULL, "no SQL statement in the text");
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
            sqlite_push_error(L, SQLITE_MISUSE, NULL,
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
        rc = sqlite3_bind_null(sqlite_stmt_live(L, s), param);
        break;
    case LUA_TBOOLEAN:
        rc = sqlite3_bind_int(sqlite_stmt_live(L, s), param, lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            rc = sqlite3_bind_int64(sqlite_stmt_live(L, s), param, (sqlite3_int64)lua_tointeger(L, idx));
        else
            rc = sqlite3_bind_double(sqlite_stmt_live(L, s), param, (double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *p = lua_tolstring(L, idx, &len);
        rc = sqlite3_bind_text64(sqlite_stmt_live(L, s), param, p, len, SQLITE_TRANSIENT, SQLITE_UTF8);
        break;
    }
    case LUA_TTABLE:
        if (is_blob(L, idx)) {
            size_t len;
            lua_rawgeti(L, idx, 1);
            const char *p = lua_tolstring(L, -1, &len);
            rc = sqlite3_bind_blob64(sqlite_stmt_live(L, s), param, p ? p : "", p ? len : 0, SQLITE_TRANSIENT);
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
    int n = sqlite3_bind_parameter_count(sqlite_stmt_live(L, s));
    for (int i = 1; i <= n; i++) {
        const char *name = sqlite3_bind_parameter_name(sqlite_stmt_live(L, s), i);
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
void sqlite_stmt_rebind(lua_State *L, stmt_box *s, int idx)
{
    sqlite3_reset(sqlite_stmt_live(L, s));
    sqlite3_clear_bindings(sqlite_stmt_live(L, s));
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
        sqlite_stmt_rebind(L, s, 2);
    } else {
        sqlite3_reset(sqlite_stmt_live(L, s));
        sqlite3_clear_bindings(sqlite_stmt_live(L, s));
        int n = sqlite3_bind_parameter_count(sqlite_stmt_live(L, s));
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
    int n = sqlite3_column_count(sqlite_stmt_live(L, s));
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        push_column(L, sqlite_stmt_live(L, s), i);
        const char *name = sqlite3_column_name(sqlite_stmt_live(L, s), i);
        if (name == NULL)
            luaL_error(L, "sqlite: out of memory reading a column name");
        lua_setfield(L, -2, name);
    }
}

/* One step; a row is pushed when there is one. Returns SQLite's code. */
static int step_pushing_row(lua_State *L, stmt_box *s)
{
    int rc = sqlite3_step(s->stmt);
    if (rc == SQLITE_ROW)
        push_row(L, s);
    return rc;
}

/* stmt:step() -> row table | false when done | nil, err */
static int l_stmt_step(lua_State *L)
{
    stmt_box *s = check_stmt(L, 1);
    int rc = step_pushing_row(L, s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return sqlite_fail_db(L, s->d->db, rc);
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
    int rc = step_pushing_row(L, s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s->stmt);
        return 0;
    }
    /* a for loop cannot take nil, err: raise the error value, as io.lines does */
    sqlite_fail_db(L, s->d->db, rc);
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
        const char *name = sqlite3_column_name(sqlite_stmt_live(L, s), i);
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

/* Steps s to the end and resets it. Returns 1 having pushed, by `collect`, nothing, the list of
 * rows, or the first row (nil when there is none); or pushes nil, err and returns 0. */

int sqlite_stmt_run(lua_State *L, stmt_box *s, enum collect collect)
{
    int n = 0;
    if (collect == COLLECT_ALL)
        lua_newtable(L);
    for (;;) {
        int rc = sqlite3_step(sqlite_stmt_live(L, s));
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
        sqlite_fail_db(L, db, rc);
        if (s->stmt)
            sqlite3_reset(s->stmt);
        return 0;
    }
    /* reset at once: a statement left mid-way holds a read snapshot and blocks checkpoints */
    sqlite3_reset(sqlite_stmt_live(L, s));
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

void sqlite_stmt_register(lua_State *L, int module_idx)
{
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
    sacm_define_type(L, STMT_MT, stmt_methods, l_stmt_finalize);
    lua_pushcfunction(L, l_stmt_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_getfield(L, -1, "__index");
    lua_setfield(L, module_idx, "Statement");
    lua_pop(L, 1);

    luaL_newmetatable(L, BLOB_MT);
    lua_pushliteral(L, "sqlite.Blob");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    luaL_newmetatable(L, ROWS_GUARD_MT);
    lua_pushcfunction(L, rows_guard_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_blob);
    lua_setfield(L, module_idx, "blob");
}
