/* The Lua state's allocator: counts the bytes in use and can refuse to grow past a temporary
 * limit. The policy sandbox sets a limit around each check so a memory bomb fails inside the
 * check ("not enough memory", after Lua's emergency collection) instead of taking the process.
 *
 * Lua keeps one allocator per state, shared by every coroutine, so the limit is global: it is
 * meant for code that runs to completion without yielding (a check), and is cleared after it. */
#include <stdlib.h>
#include "sacmrun.h"

struct memlimit {
    size_t in_use;
    size_t limit; /* 0: no limit */
};

static struct memlimit state_memory;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct memlimit *m = ud;
    /* For a new block Lua passes the object's type in osize, not a size. */
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        m->in_use -= old;
        return NULL;
    }
    /* Only growth may be refused: Lua relies on shrinking and freeing never failing. */
    if (__builtin_expect(m->limit != 0, 0) && nsize > old && m->in_use + (nsize - old) > m->limit)
        return NULL;
    void *block = realloc(ptr, nsize);
    if (block == NULL)
        return NULL;
    m->in_use = m->in_use - old + nsize;
    return block;
}

void sacm_memlimit_install(lua_State *L)
{
    /* Everything allocated so far came from luaL_newstate's realloc/free allocator, which this
     * one is compatible with; Lua's own count of those bytes starts ours. */
    state_memory.in_use = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
    state_memory.limit = 0;
    lua_setallocf(L, counting_alloc, &state_memory);
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
