/* Options tables read from C (options.h). In the binary, so the loadable modules share it. */
#include <string.h>
#include <lauxlib.h>
#include "options.h"

lua_Integer sacm_opt_integer(lua_State *L, int idx, const char *who, const char *field,
                             lua_Integer def, lua_Integer min)
{
    int type = lua_getfield(L, idx, field);
    lua_Integer v = def;
    if (type != LUA_TNIL) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min)
            luaL_error(L, "%s: option %s must be an integer >= %I, got %s", who,
                       field, (LUA_INTEGER)min, type == LUA_TNUMBER ? lua_tostring(L, -1) : lua_typename(L, type));
    }
    lua_pop(L, 1);
    return v;
}

const char *sacm_opt_string(lua_State *L, int idx, const char *who, const char *field, int required)
{
    int type = lua_getfield(L, idx, field);
    const char *s = NULL;
    if (type == LUA_TSTRING) {
        size_t len;
        s = lua_tolstring(L, -1, &len);
        if (strlen(s) != len)
            luaL_error(L, "%s: option %s contains a NUL byte", who, field);
    } else if (type != LUA_TNIL || required) {
        luaL_error(L, "%s: option %s must be a string, got %s", who, field, lua_typename(L, type));
    }
    lua_pop(L, 1);
    return s;
}

int sacm_opt_boolean(lua_State *L, int idx, const char *field)
{
    lua_getfield(L, idx, field);
    int b = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return b;
}
