/* Reading a Lua options table ({port = 443, cafile = "..."}) from C, with one wording for every
 * module's errors. Each reader leaves the stack as it found it; a string returned stays valid
 * while the options table holds it. `who` names the caller in the message ("http.listen"). */
#ifndef SACM_OPTIONS_H
#define SACM_OPTIONS_H

#include <lua.h>

/* opts[field] as an integer >= min, or def when it is nil; raises otherwise. */
lua_Integer sacm_opt_integer(lua_State *L, int idx, const char *who, const char *field,
                             lua_Integer def, lua_Integer min);
/* opts[field] as a string without NUL bytes, or NULL when it is nil and not required; raises
 * otherwise (a number is not taken for a string: an option that should be a path or a JID
 * given as a number is a mistake worth saying). */
const char *sacm_opt_string(lua_State *L, int idx, const char *who, const char *field,
                            int required);
/* opts[field] as Lua truth: nil and false are 0, anything else 1. */
int sacm_opt_boolean(lua_State *L, int idx, const char *field);

#endif
