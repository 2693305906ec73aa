/* The Lua state: standard libraries, where the Lua library is found (in-tree or installed),
 * the C modules, and the one path by which libuv callbacks enter Lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>
#include <dlfcn.h>
#include <lualib.h>
#include "sacmrun.h"

#ifndef SACM_SHAREDIR
#define SACM_SHAREDIR "/usr/local/share/sacmrun"
#endif
#ifndef SACM_LIBDIR
#define SACM_LIBDIR "/usr/local/lib/sacmrun"
#endif

#define DISPATCH_KEY "sacm.dispatch"

static lua_State *main_state;
static int closing;

/* Modules kept out of the binary because their libraries are costly to map at every start, one
 * shared object per concern so a script maps only the libraries it uses: libcrypto
 * (sacmrun-crypto.so: digests, X.509), libstrophe (sacmrun-xmpp.so), libssl and http-parser
 * (sacmrun-http.so: server and client), SQLite (sacmrun-sqlite.so), libpq (sacmrun-pg.so),
 * readline (sacmrun-repl.so). Loaded on first require. */
struct lazy_library {
    const char *suffix; /* the file is <binary>-<suffix>.so in the tree, sacmrun-<suffix>.so installed */
    char path[PATH_MAX + 16];
    void *handle;
};
static struct lazy_library crypto_library = {"crypto", "", NULL};
static struct lazy_library xmpp_library = {"xmpp", "", NULL};
static struct lazy_library http_library = {"http", "", NULL};
static struct lazy_library sqlite_library = {"sqlite", "", NULL};
static struct lazy_library pg_library = {"pg", "", NULL};
static struct lazy_library repl_library = {"repl", "", NULL};

lua_State *sacm_main_state(void) { return main_state; }
int sacm_state_closing(void) { return closing; }
void sacm_state_set_closing(void) { closing = 1; }

int sacm_msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

void sacm_invoke(lua_State *L, int nargs)
{
    int fn_index = lua_gettop(L) - nargs;
    lua_pushcfunction(L, sacm_msgh);
    lua_insert(L, fn_index);
    lua_getfield(L, LUA_REGISTRYINDEX, DISPATCH_KEY);
    if (lua_isfunction(L, -1)) {
        /* dispatch(fn, ...): runs fn, then every task it made ready */
        lua_insert(L, fn_index + 1);
        nargs++;
    } else {
        lua_pop(L, 1);
    }
    if (lua_pcall(L, nargs, 0, fn_index) != LUA_OK) {
        size_t len;
        const char *msg = lua_tolstring(L, -1, &len);
        sacm_log_write(SACM_LOG_ERROR, "runtime", msg ? msg : "(error without message)", msg ? len : 22);
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* the message handler */
}

void sacm_invoke_ref(lua_State *L, int ref, int nargs)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_insert(L, -nargs - 1);
    sacm_invoke(L, nargs);
}

lua_State *sacm_take_callback(int *ref)
{
    if (closing)
        return NULL;
    lua_State *L = sacm_main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = LUA_NOREF;
    return L;
}

static int set_dispatcher(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, DISPATCH_KEY);
    return 0;
}

/* The directory holding lua/ and policies/: the binary's own directory when run from a source
 * tree (so ./sacmrun works after make), else the installed share directory. */
static void find_share_dir(char *out, size_t size, int *in_tree)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    *in_tree = 0;
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char probe[PATH_MAX + 32];
            snprintf(probe, sizeof probe, "%s/lua/sacm/init.lua", exe);
            if (access(probe, R_OK) == 0) {
                snprintf(out, size, "%s", exe);
                *in_tree = 1;
                return;
            }
        }
    }
    snprintf(out, size, "%s", SACM_SHAREDIR);
}

static void set_paths(lua_State *L)
{
    char share[PATH_MAX];
    int in_tree;
    find_share_dir(share, sizeof share, &in_tree);
    /* In the tree the loadable modules sit beside the binary as <binary>-crypto.so (so
     * ./sacmrun-asan gets its own instrumented copies); installed, in the library directory. */
    char exe[PATH_MAX];
    ssize_t n = in_tree ? readlink("/proc/self/exe", exe, sizeof exe - 1) : -1;
    struct lazy_library *libs[] = {&crypto_library, &xmpp_library, &http_library, &sqlite_library, &pg_library, &repl_library};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        if (n > 0)
            snprintf(libs[i]->path, sizeof libs[i]->path, "%.*s-%s.so", (int)n, exe, libs[i]->suffix);
        else
            snprintf(libs[i]->path, sizeof libs[i]->path, "%s/sacmrun-%s.so", SACM_LIBDIR, libs[i]->suffix);
    }

    lua_getglobal(L, "package");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *extra = getenv("SACMRUN_PATH");
    if (extra && *extra) {
        luaL_addstring(&b, extra);
        luaL_addchar(&b, ';');
    }
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", share, share);
    luaL_addvalue(&b);
    lua_getfield(L, -2, "path");
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);

    /* sacm._build: facts about this binary that Lua code needs (where policies/ lives) */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_createtable(L, 0, 6);
    lua_pushliteral(L, SACMRUN_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, share);
    lua_setfield(L, -2, "share_dir");
    lua_pushboolean(L, in_tree);
    lua_setfield(L, -2, "in_tree");
    lua_pushstring(L, uv_version_string());
    lua_setfield(L, -2, "libuv");
    lua_pushliteral(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua");
    lua_setfield(L, -2, "sacm._build");
    lua_pop(L, 1);
}

/* Loader for a module that lives in a lazy library (the upvalue): loads the library on first
 * use and calls luaopen_<name>. The library stays loaded: its code backs userdata until the
 * state closes. */
static int load_lazy_module(lua_State *L)
{
    struct lazy_library *lib = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    if (lib->handle == NULL) {
        lib->handle = dlopen(lib->path, RTLD_NOW | RTLD_LOCAL);
        if (lib->handle == NULL)
            return luaL_error(L, "cannot load %s for module '%s': %s", lib->path, name, dlerror());
    }
    char symbol[64];
    snprintf(symbol, sizeof symbol, "luaopen_%s", name);
    for (char *p = symbol; *p; p++)
        if (*p == '.')
            *p = '_';
    lua_CFunction open = (lua_CFunction)dlsym(lib->handle, symbol);
    if (open == NULL)
        return luaL_error(L, "%s has no %s", lib->path, symbol);
    lua_pushcfunction(L, open);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static void preload(lua_State *L)
{
    static const luaL_Reg modules[] = {
        {"sacm._log", luaopen_sacm__log},
        {"sacm._error", luaopen_sacm__error},
        {"sacm._loop", luaopen_sacm__loop},
        {"sacm._timer", luaopen_sacm__timer},
        {"sacm._proc", luaopen_sacm__proc},
        {"sacm._fs", luaopen_sacm__fs},
        {"sacm._watch", luaopen_sacm__watch},
        {"sacm._xml", luaopen_sacm__xml},
        {"sacm._dns", luaopen_sacm__dns},
        {"sacm._mem", luaopen_sacm__mem},
        {NULL, NULL},
    };
    static const struct {
        const char *name;
        struct lazy_library *lib;
    } lazy[] = {
        {"sacm._crypto", &crypto_library},
        {"sacm._x509", &crypto_library},
        {"sacm._xmpp", &xmpp_library},
        {"sacm._http", &http_library},
        {"sacm._http_client", &http_library},
        {"sacm._sqlite", &sqlite_library},
        {"sacm._pg", &pg_library},
        {"sacm._repl", &repl_library},
    };
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *m = modules; m->name; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    for (size_t i = 0; i < sizeof lazy / sizeof lazy[0]; i++) {
        lua_pushlightuserdata(L, lazy[i].lib);
        lua_pushcclosure(L, load_lazy_module, 1);
        lua_setfield(L, -2, lazy[i].name);
    }
    lua_pop(L, 1);
}

lua_State *sacm_state_new(const char *argv0)
{
    (void)argv0;
    lua_State *L = sacm_memlimit_newstate();
    if (L == NULL)
        return NULL;
    main_state = L;
    luaL_openlibs(L);
    set_paths(L);
    preload(L);
    /* set_dispatcher lives here because only this file calls the dispatcher */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, set_dispatcher);
    lua_setfield(L, -2, "set_dispatcher");
    lua_setfield(L, -2, "sacm._dispatch");
    lua_pop(L, 1);
    return L;
}
