/* One log sink for the whole process: the C core, Lua code and libstrophe's logger all write
 * here, so a person sees one ordered stream on stderr. A hook lets the REPL redraw its prompt. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/time.h>
#include "sacmrun.h"

static int current_level = SACM_LOG_WARN;
static sacm_log_sink sink; /* NULL: records go straight to stderr */

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace", NULL};
static const char *const level_labels[] = {"ERROR", "WARN ", "INFO ", "DEBUG", "TRACE"};

int sacm_log_level_from_name(const char *name)
{
    for (int i = 0; level_names[i]; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    if (strcasecmp(name, "warning") == 0)
        return SACM_LOG_WARN;
    return -1;
}

void sacm_log_set_level(int level)
{
    if (level >= SACM_LOG_ERROR && level <= SACM_LOG_TRACE)
        current_level = level;
}

int sacm_log_enabled(int level)
{
    return level <= current_level;
}

void sacm_log_set_sink(sacm_log_sink fn)
{
    sink = fn;
}

void sacm_log_write(int level, const char *area, const char *msg, size_t len)
{
    if (!sacm_log_enabled(level))
        return;
    if (level < SACM_LOG_ERROR)
        level = SACM_LOG_ERROR;
    if (level > SACM_LOG_TRACE)
        level = SACM_LOG_TRACE;
    struct timeval tv;
    struct tm tm;
    char stamp[32];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
    if (sink) {
        /* The whole record in one piece, so the sink (the REPL) can clear and redraw its prompt
         * once around it. */
        char small[1024];
        int total = snprintf(small, sizeof small, "%s %s [%s] %.*s\n", stamp, level_labels[level],
                             area ? area : "sacmrun", (int)len, msg);
        if (total < 0)
            return;
        char *record = (size_t)total < sizeof small ? small : malloc((size_t)total + 1);
        if (record == NULL)
            return;
        if (record != small)
            snprintf(record, (size_t)total + 1, "%s %s [%s] %.*s\n", stamp, level_labels[level],
                     area ? area : "sacmrun", (int)len, msg);
        sink(record, (size_t)total);
        if (record != small)
            free(record);
        return;
    }
    /* One fprintf per record so concurrent writers (child processes sharing stderr) interleave
     * by line, not by fragment. */
    fprintf(stderr, "%s %s [%s] %.*s\n", stamp, level_labels[level], area ? area : "sacmrun", (int)len, msg);
    fflush(stderr);
}

void sacm_log(int level, const char *area, const char *fmt, ...)
{
    if (!sacm_log_enabled(level))
        return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    sacm_log_write(level, area, buf, (size_t)n);
}

static int check_level(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER)
        return (int)luaL_checkinteger(L, idx);
    const char *name = luaL_checkstring(L, idx);
    int level = sacm_log_level_from_name(name);
    if (level < 0)
        return luaL_argerror(L, idx, lua_pushfstring(L, "unknown log level '%s'", name));
    return level;
}

/* write(level, area, message) */
static int l_write(lua_State *L)
{
    int level = check_level(L, 1);
    const char *area = luaL_optstring(L, 2, "lua");
    size_t len;
    const char *msg = luaL_checklstring(L, 3, &len);
    sacm_log_write(level, area, msg, len);
    return 0;
}

static int l_enabled(lua_State *L)
{
    lua_pushboolean(L, sacm_log_enabled(check_level(L, 1)));
    return 1;
}

/* level([new]) -> current level name */
static int l_level(lua_State *L)
{
    if (!lua_isnoneornil(L, 1))
        sacm_log_set_level(check_level(L, 1));
    lua_pushstring(L, level_names[current_level]);
    return 1;
}

int luaopen_sacm__log(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"write", l_write},
        {"enabled", l_enabled},
        {"level", l_level},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
