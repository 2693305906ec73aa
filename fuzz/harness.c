/* fuzz/harness.c: the one Lua state the Lua-driven targets share, made as state.c makes the
 * runtime's, and the call that turns a Lua error into a libFuzzer finding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "../runtime/sacmrun.h"
#include "harness.h"

#ifndef FUZZ_DIR
#error "build with -DFUZZ_DIR='\"/path/to/fuzz\"' (the Makefile's fuzz targets do)"
#endif
#ifndef FUZZ_LUA_DIR
#error "build with -DFUZZ_LUA_DIR='\"/path/to/lua\"'"
#endif

static lua_State *state;

/* libFuzzer sees coverage of the C it instrumented, not of the Lua modules the targets run (the
 * Lua VM is Debian's liblua5.4). A line hook gives it Lua's too: each step from one line to the
 * next (AFL-style, the pair hashed with the source's address) counts in a section libFuzzer reads
 * as extra counters and clears before each input. */
#define LUA_EDGES 65536
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[LUA_EDGES];
static uint32_t previous_location;

static void count_line(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar))
        return;
    uint32_t location = (uint32_t)(((uintptr_t)ar->source >> 4) * 2654435761u) ^ (uint32_t)ar->currentline * 40503u;
    uint8_t *counter = &lua_edges[(location ^ previous_location) % LUA_EDGES];
    if (*counter != 255)
        (*counter)++;
    previous_location = location >> 1;
}

/* The modules the runtime loads from sacmrun-crypto/-xmpp/-http.so on first require are linked into the
 * target instead: preload them directly. */
static void preload_linked_modules(lua_State *L)
{
    static const luaL_Reg modules[] = {
        {"sacm._crypto", luaopen_sacm__crypto},
        {"sacm._x509", luaopen_sacm__x509},
        {"sacm._xmpp", luaopen_sacm__xmpp},
        {"sacm._http", luaopen_sacm__http},
        {"sacm._http_client", luaopen_sacm__http_client},
        {NULL, NULL},
    };
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = modules; m->name; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
}

lua_State *fuzz_state(void)
{
    if (state)
        return state;
    if (sacm_loop_init() < 0) {
        fprintf(stderr, "fuzz: cannot initialise the libuv loop\n");
        exit(1);
    }
    /* the targets live in build/fuzz/, outside the tree: state.c would look for an installed
     * share directory, so the tree's lua/ goes first on the path, then fuzz/ for the helpers */
    setenv("SACMRUN_PATH", FUZZ_LUA_DIR "/?.lua;" FUZZ_LUA_DIR "/?/init.lua;" FUZZ_DIR "/?.lua", 1);
    state = sacm_state_new("fuzz");
    if (state == NULL) {
        fprintf(stderr, "fuzz: cannot create the Lua state\n");
        exit(1);
    }
    preload_linked_modules(state);
    lua_sethook(state, count_line, LUA_MASKLINE, 0);
    /* findings are what the target asserts, not what modules log about refused input */
    sacm_log_set_level(SACM_LOG_ERROR);
    return state;
}

int fuzz_lua_target(const char *file)
{
    lua_State *L = fuzz_state();
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", FUZZ_DIR, file);
    lua_pushcfunction(L, sacm_msgh);
    if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 1, -2) != LUA_OK) {
        fprintf(stderr, "fuzz: cannot load %s: %s\n", path, lua_tostring(L, -1));
        exit(1);
    }
    if (!lua_isfunction(L, -1) && !lua_istable(L, -1)) {
        fprintf(stderr, "fuzz: %s must return a function or table, not a %s\n", path, luaL_typename(L, -1));
        exit(1);
    }
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1); /* the message handler */
    return ref;
}

void fuzz_fail(lua_State *L, const char *what)
{
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "fuzz: %s raised: %s\n", what, msg ? msg : "(an error that is not a string)");
    abort();
}

void fuzz_begin_input(void)
{
    previous_location = 0; /* the first line of an input is an edge from nowhere, every time */
}

void fuzz_lua_run(int ref, const uint8_t *data, size_t size)
{
    lua_State *L = state;
    fuzz_begin_input();
    int base = lua_gettop(L);
    lua_pushcfunction(L, sacm_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, base + 1) != LUA_OK)
        fuzz_fail(L, "the target's Lua function");
    lua_settop(L, base);
}
