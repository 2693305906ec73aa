/* The error value of expected failures: a table {condition=, text=, ...} whose __tostring reads
 * "condition: text". Conditions are XMPP defined-condition names or libuv error names, so code can
 * branch on err.condition while people read tostring(err). */
#include <stdarg.h>
#include <stdio.h>
#include "sacmrun.h"

static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "condition");
    lua_getfield(L, 1, "text");
    const char *condition = lua_tostring(L, -2);
    const char *text = lua_tostring(L, -1);
    if (condition && text && *text)
        lua_pushfstring(L, "%s: %s", condition, text);
    else if (condition)
        lua_pushstring(L, condition);
    else if (text)
        lua_pushstring(L, text);
    else
        lua_pushliteral(L, "error");
    return 1;
}

static void push_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, SACM_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "sacm.Error");
        lua_setfield(L, -2, "__name");
    }
}

static void push_error_v(lua_State *L, const char *condition, const char *fmt, va_list ap)
{
    /* libc formatting, not lua_pushfstring: the printf attribute on the callers then checks
     * exactly what runs, and a %zu cannot raise "invalid option" inside a libuv callback. */
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, condition);
    lua_setfield(L, -2, "condition");
    lua_pushstring(L, text);
    lua_setfield(L, -2, "text");
    push_metatable(L);
    lua_setmetatable(L, -2);
}

void sacm_push_error(lua_State *L, const char *condition, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    push_error_v(L, condition, fmt, ap);
    va_end(ap);
}

int sacm_fail(lua_State *L, const char *condition, const char *fmt, ...)
{
    va_list ap;
    lua_pushnil(L);
    va_start(ap, fmt);
    push_error_v(L, condition, fmt, ap);
    va_end(ap);
    return 2;
}

void sacm_push_uv_error(lua_State *L, int status, const char *context)
{
    sacm_push_error(L, uv_err_name(status), "%s: %s", context, uv_strerror(status));
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "code");
}

int sacm_fail_uv(lua_State *L, int status, const char *context)
{
    lua_pushnil(L);
    sacm_push_uv_error(L, status, context);
    return 2;
}

int luaopen_sacm__error(lua_State *L)
{
    lua_newtable(L);
    push_metatable(L);
    lua_setfield(L, -2, "metatable");
    return 1;
}
