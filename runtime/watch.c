/* sacm._watch: file system change notifications (inotify through uv_fs_event).
 * new(path, callback) -> watcher | nil, err; callback(filename, events) with events "rename",
 * "change" or "rename,change", or callback(nil, err) when the watch fails. lua/sacm/fs.lua builds
 * fs.watch (debounced, per-file filtering) on this. */
#include <string.h>
#include <sys/stat.h>
#include "sacmrun.h"

#define WATCH_MT "sacm.Watcher"

static void on_event(uv_fs_event_t *event, const char *filename, int events, int status)
{
    sacm_handle *h = event->data;
    if (h->cb_ref == LUA_NOREF || sacm_state_closing())
        return;
    lua_State *L = sacm_main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->cb_ref);
    if (status < 0) {
        char path[4096];
        size_t size = sizeof path;
        if (uv_fs_event_getpath(event, path, &size) != 0)
            strcpy(path, "(unknown path)");
        lua_pushnil(L);
        sacm_push_uv_error(L, status, lua_pushfstring(L, "watch %s", path));
        lua_remove(L, -2);
        sacm_invoke(L, 2);
        return;
    }
    if (filename)
        lua_pushstring(L, filename);
    else
        lua_pushnil(L);
    if ((events & UV_RENAME) && (events & UV_CHANGE))
        lua_pushliteral(L, "rename,change");
    else if (events & UV_RENAME)
        lua_pushliteral(L, "rename");
    else
        lua_pushliteral(L, "change");
    sacm_invoke(L, 2);
}

static int check_path(lua_State *L, int idx)
{
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    if (strlen(s) != len)
        return luaL_argerror(L, idx, "path contains a NUL byte");
    if (len == 0)
        return luaL_argerror(L, idx, "path is empty");
    return 0;
}

/* new(path, callback) -> watcher | nil, err */
static int l_new(lua_State *L)
{
    check_path(L, 1);
    const char *path = lua_tostring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    sacm_handle *h = sacm_handle_new(L, WATCH_MT); /* index 3 */
    int rc = uv_fs_event_init(sacm_loop(), &h->uv.fs_event);
    if (rc < 0)
        return luaL_error(L, "uv_fs_event_init: %s", uv_strerror(rc));
    h->uv.fs_event.data = h;
    rc = uv_fs_event_start(&h->uv.fs_event, on_event, path, 0);
    if (rc < 0) {
        /* close the userdata's handle now rather than waiting for the collector */
        lua_pushcfunction(L, sacm_handle_close_lua);
        lua_pushvalue(L, 3);
        lua_call(L, 1, 0);
        return sacm_fail_uv(L, rc, lua_pushfstring(L, "watch %s", path));
    }
    sacm_handle_set_callback(L, h, 2);
    /* an active watch keeps its userdata alive until it is closed */
    sacm_handle_hold(L, h, 3);
    return 1;
}

/* watcher:path() -> the watched path */
static int l_path(lua_State *L)
{
    sacm_handle *h = sacm_handle_check(L, 1, WATCH_MT);
    char path[4096];
    size_t size = sizeof path;
    int rc = uv_fs_event_getpath(&h->uv.fs_event, path, &size);
    if (rc < 0)
        return sacm_fail_uv(L, rc, "watcher path");
    lua_pushlstring(L, path, size);
    return 1;
}

/* is_directory(path) -> boolean: a plain stat on the loop thread, for deciding what to watch
 * (fs.watch may be set up outside a task, where the threadpool calls cannot be awaited). */
static int l_is_directory(lua_State *L)
{
    check_path(L, 1);
    struct stat st;
    lua_pushboolean(L, stat(lua_tostring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
    return 1;
}

int luaopen_sacm__watch(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"path", l_path},
        {"close", sacm_handle_close_lua},
        {NULL, NULL},
    };
    sacm_define_type(L, WATCH_MT, methods, sacm_handle_close_lua);
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {
        {"new", l_new},
        {"is_directory", l_is_directory},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
