/* Lifetime of a libuv handle owned by a Lua userdata. libuv may still use a handle after Lua
 * dropped it (until close_cb), so the userdata holds a pointer and the memory is freed only in
 * close_cb; an active handle holds a registry reference to its own userdata so it is not
 * collected while a callback is still due. */
#include <stdlib.h>
#include "sacmrun.h"

typedef struct {
    sacm_handle *h;
} handle_box;

sacm_handle *sacm_handle_new(lua_State *L, const char *tname)
{
    handle_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->h = NULL;
    luaL_setmetatable(L, tname);
    sacm_handle *h = calloc(1, sizeof *h);
    if (h == NULL)
        luaL_error(L, "out of memory");
    h->self_ref = LUA_NOREF;
    h->cb_ref = LUA_NOREF;
    h->uv.handle.data = h;
    box->h = h;
    return h;
}

sacm_handle *sacm_handle_check(lua_State *L, int idx, const char *tname)
{
    handle_box *box = luaL_checkudata(L, idx, tname);
    if (box->h == NULL)
        luaL_error(L, "attempt to use a closed %s", tname);
    return box->h;
}

void sacm_handle_set_callback(lua_State *L, sacm_handle *h, int idx)
{
    luaL_checktype(L, idx, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, h->cb_ref);
    lua_pushvalue(L, idx);
    h->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void sacm_handle_hold(lua_State *L, sacm_handle *h, int idx)
{
    if (h->self_ref == LUA_NOREF) {
        lua_pushvalue(L, idx);
        h->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

void sacm_handle_release(lua_State *L, sacm_handle *h)
{
    luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
    h->self_ref = LUA_NOREF;
}

static void free_on_close(uv_handle_t *handle)
{
    free(handle->data);
}

void sacm_handle_discard(sacm_handle *h, int uv_initialised)
{
    if (uv_initialised)
        uv_close(&h->uv.handle, free_on_close);
    else
        free(h);
}

int sacm_handle_close_lua(lua_State *L)
{
    handle_box *box = lua_touserdata(L, 1);
    if (box == NULL || box->h == NULL)
        return 0;
    sacm_handle *h = box->h;
    box->h = NULL;
    /* While lua_close runs finalizers the registry is being torn down: leave refs alone. */
    if (!sacm_state_closing()) {
        luaL_unref(L, LUA_REGISTRYINDEX, h->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, h->self_ref);
    }
    h->cb_ref = h->self_ref = LUA_NOREF;
    if (h->uv.handle.type != UV_UNKNOWN_HANDLE && !uv_is_closing(&h->uv.handle))
        uv_close(&h->uv.handle, free_on_close);
    else if (h->uv.handle.type == UV_UNKNOWN_HANDLE)
        free(h);
    return 0;
}

void sacm_define_type(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction close)
{
    luaL_newmetatable(L, tname);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
}
