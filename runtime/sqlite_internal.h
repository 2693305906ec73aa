/* What the two halves of sacm._sqlite share: sqlite.c (errors, databases, the statement cache,
 * the module) and sqlite_stmt.c (statements: preparing, binding, stepping, rows). */
#ifndef SACM_SQLITE_INTERNAL_H
#define SACM_SQLITE_INTERNAL_H

#include <sqlite3.h>
#include "sacmrun.h"

#define DB_MT "sacm.sqlite.Database"
#define STMT_MT "sacm.sqlite.Statement"
#define BLOB_MT "sacm.sqlite.Blob"
#define ROWS_GUARD_MT "sacm.sqlite.RowsGuard"

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

/* sqlite.c */
void sqlite_push_error(lua_State *L, int code, const char *prefix, const char *msg);
int sqlite_fail_db(lua_State *L, sqlite3 *db, int rc);

/* sqlite_stmt.c */
stmt_box *sqlite_stmt_new(lua_State *L, int db_idx);
int sqlite_stmt_prepare(lua_State *L, db_state *d, stmt_box *s, const char *sql, size_t len,
                        unsigned flags);
void sqlite_stmt_finalize(stmt_box *s);
void sqlite_stmt_rebind(lua_State *L, stmt_box *s, int idx);
sqlite3_stmt *sqlite_stmt_live(lua_State *L, stmt_box *s);

enum collect { COLLECT_NONE, COLLECT_ALL, COLLECT_FIRST };
int sqlite_stmt_run(lua_State *L, stmt_box *s, enum collect collect);

/* Defines the Statement, Blob and rows-guard metatables; leaves Statement's method table in the
 * module table at module_idx. */
void sqlite_stmt_register(lua_State *L, int module_idx);

#endif
