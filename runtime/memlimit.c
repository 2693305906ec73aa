/* The Lua state's allocator: counts the bytes in use and can refuse to grow past a temporary
 * limit. The policy sandbox sets a limit around each check so a memory bomb fails inside the
 * check ("not enough memory", after Lua's emergency collection) instead of taking the process.
 *
 * Lua keeps one allocator per state, shared by every coroutine, so the limit is global: it is
 * meant for code that runs to completion without yielding (a check), and is cleared after it.
 *
 * Small blocks are kept on free lists by size class: Lua frees and allocates the same few sizes
 * over and over (a table, its hash part, a short string, a closure per stanza), and a list pop
 * costs a tenth of a malloc/free pair (docs/performance.md, pubsub). Lua tells the size of every
 * block it frees or resizes, so no header is needed; for that to hold, every block of the state
 * must come from here, which is why the state is made with sacm_memlimit_newstate. The lists are
 * bounded, so a burst of garbage goes back to malloc. Under AddressSanitizer there are no lists:
 * a reused block would hide a use after free. One state per process (the lists are static). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sacmrun.h"

#define CLASS_GRAIN 16                        /* block sizes 16, 32, ... CLASS_MAX */
#define CLASS_MAX 256
#define CLASSES (CLASS_MAX / CLASS_GRAIN)
#define LIST_BYTES (128 * 1024)               /* free bytes kept per class, at most */

#if defined(__SANITIZE_ADDRESS__)
#define POOLING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOLING 0
#endif
#endif
#ifndef POOLING
#define POOLING 1
#endif

struct free_block {
    struct free_block *next;
};

struct memlimit {
    size_t in_use;
    size_t limit; /* 0: no limit */
    struct free_block *free[CLASSES];
    unsigned kept[CLASSES]; /* blocks on each list */
};

static struct memlimit state_memory;

/* The class of a block of n bytes (1 <= n <= CLASS_MAX), and the size every block of it has. */
static inline unsigned class_of(size_t n)
{
    return (unsigned)((n - 1) / CLASS_GRAIN);
}
#define CLASS_SIZE(c) (((size_t)(c) + 1) * CLASS_GRAIN)

static void *class_alloc(struct memlimit *m, unsigned c)
{
    struct free_block *b = m->free[c];
    if (b) {
        m->free[c] = b->next;
        m->kept[c]--;
        return b;
    }
    return malloc(CLASS_SIZE(c));
}

static void class_free(struct memlimit *m, unsigned c, void *p)
{
    if (m->kept[c] >= LIST_BYTES / CLASS_SIZE(c)) {
        free(p);
        return;
    }
    struct free_block *b = p;
    b->next = m->free[c];
    m->free[c] = b;
    m->kept[c]++;
}

/* Pooled: a block of at most CLASS_MAX bytes is CLASS_SIZE of its class long, whatever was
 * asked, so a resize within the class keeps the block. */
static void *pooled_realloc(struct memlimit *m, void *ptr, size_t old, size_t nsize)
{
    if (ptr == NULL)
        return nsize <= CLASS_MAX ? class_alloc(m, class_of(nsize)) : malloc(nsize);
    void *block;
    if (old > CLASS_MAX) {
        block = realloc(ptr, nsize <= CLASS_MAX ? CLASS_SIZE(class_of(nsize)) : nsize);
    } else if (nsize <= CLASS_MAX && class_of(nsize) == class_of(old)) {
        return ptr;
    } else {
        block = nsize <= CLASS_MAX ? class_alloc(m, class_of(nsize)) : malloc(nsize);
        if (block) {
            memcpy(block, ptr, old < nsize ? old : nsize);
            class_free(m, class_of(old), ptr);
        }
    }
    /* Lua requires that shrinking never fails: keep the block, which is then larger than its
     * class, and that is all (a block only ever serves sizes up to its own). */
    if (block == NULL && nsize < old)
        return ptr;
    return block;
}

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct memlimit *m = ud;
    /* For a new block Lua passes the object's type in osize, not a size. */
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        if (ptr == NULL)
            return NULL;
        if (POOLING && old <= CLASS_MAX)
            class_free(m, class_of(old), ptr);
        else
            free(ptr);
        m->in_use -= old;
        return NULL;
    }
    /* Only growth may be refused: Lua relies on shrinking and freeing never failing. */
    if (__builtin_expect(m->limit != 0, 0) && nsize > old && m->in_use + (nsize - old) > m->limit)
        return NULL;
    void *block = POOLING ? pooled_realloc(m, ptr, old, nsize) : realloc(ptr, nsize);
    if (block == NULL)
        return NULL;
    m->in_use = m->in_use - old + nsize;
    return block;
}

/* As lauxlib's: an error outside any protected call ends the process with its message. */
static int panic(lua_State *L)
{
    const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
    fprintf(stderr, "sacmrun: unprotected error in call to Lua API (%s)\n", msg);
    return 0;
}

/* Lua's warn(): off until a script says warn("@on"), as in the standalone interpreter. A
 * message may come in pieces (tocont). */
static int warnings_on, warning_open;

static void warn_handler(void *ud, const char *msg, int tocont)
{
    (void)ud;
    if (!warning_open && !tocont && msg[0] == '@') {
        if (strcmp(msg, "@on") == 0)
            warnings_on = 1;
        else if (strcmp(msg, "@off") == 0)
            warnings_on = 0;
        return;
    }
    if (warnings_on) {
        fprintf(stderr, "%s%s%s", warning_open ? "" : "Lua warning: ", msg, tocont ? "" : "\n");
        fflush(stderr);
    }
    warning_open = tocont;
}

lua_State *sacm_memlimit_newstate(void)
{
    memset(&state_memory, 0, sizeof state_memory);
    lua_State *L = lua_newstate(counting_alloc, &state_memory);
    if (L) {
        lua_atpanic(L, panic);
        lua_setwarnf(L, warn_handler, NULL);
    }
    return L;
}

/* usage() -> bytes the state has allocated (live objects and garbage not yet collected) */
static int l_usage(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)state_memory.in_use);
    return 1;
}

/* limit() -> the current limit in bytes, or nil when there is none */
static int l_limit(lua_State *L)
{
    if (state_memory.limit == 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (lua_Integer)state_memory.limit);
    return 1;
}

/* set_limit(bytes | nil) -> the previous limit (or nil). The limit is on the whole state's use,
 * so a caller wanting "n more bytes" passes usage() + n. */
static int l_set_limit(lua_State *L)
{
    size_t limit = 0;
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);
        luaL_argcheck(L, n > 0, 1, "limit must be a positive number of bytes");
        limit = (size_t)n;
    }
    l_limit(L);
    state_memory.limit = limit;
    return 1;
}

int luaopen_sacm__mem(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"usage", l_usage},
        {"limit", l_limit},
        {"set_limit", l_set_limit},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
