/* sacmrun's command line, compatible with lua.c's: the options and `arg` table follow it, the
 * work happens in a protected call, and the script runs as the first task on the loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <malloc.h>
#include <lualib.h>
#include "sacmrun.h"

static const char *progname = "sacmrun";

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: %s [options] [script [args]]\n"
            "Available options are:\n"
            "  -e stat            execute string 'stat'\n"
            "  -i                 enter interactive mode after executing 'script'\n"
            "  -l mod             require library 'mod' into global 'mod'\n"
            "  -l g=mod           require library 'mod' into global 'g'\n"
            "  -v                 show version information\n"
            "  -W                 turn warnings on\n"
            "  --log-level LEVEL  error, warn (default), info, debug or trace\n"
            "  --help             show this help\n"
            "  --                 stop handling options\n"
            "  -                  stop handling options and execute stdin\n",
            progname);
}

static void print_version(void)
{
    printf("sacmrun %s (%s, libuv %s)\n", SACMRUN_VERSION, LUA_RELEASE, uv_version_string());
}

/* What the command line asked for, collected before any of it runs. */
struct options {
    int script;      /* index in argv of the script, 0 if none */
    int interactive; /* -i */
    int version;     /* -v */
    int warnings;    /* -W */
    int has_exec;    /* -e or -l given */
    int log_level;
};

/* Returns 0 on success, or prints the problem and returns -1. Mirrors lua.c's collectargs. */
static int collect_args(int argc, char **argv, struct options *o)
{
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-')
            break;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-") == 0)
            break;
        if (strcmp(a, "--help") == 0) {
            print_usage(stdout);
            exit(EXIT_SUCCESS);
        }
        if (strcmp(a, "--log-level") == 0 || strncmp(a, "--log-level=", 12) == 0) {
            const char *name = a[11] == '=' ? a + 12 : (i + 1 < argc ? argv[++i] : NULL);
            int level = name ? sacm_log_level_from_name(name) : -1;
            if (level < 0) {
                fprintf(stderr, "%s: '--log-level' needs one of error, warn, info, debug, trace\n", progname);
                return -1;
            }
            o->log_level = level;
            continue;
        }
        switch (a[1]) {
        case 'e':
        case 'l':
            o->has_exec = 1;
            if (a[2] == '\0') {
                i++;
                if (i >= argc || argv[i][0] == '-') {
                    fprintf(stderr, "%s: '%s' needs argument\n", progname, a);
                    return -1;
                }
            }
            continue;
        case 'i':
            if (a[2] != '\0')
                goto unknown;
            o->interactive = 1;
            o->version = 1; /* lua.c shows the version in interactive mode */
            continue;
        case 'v':
            if (a[2] != '\0')
                goto unknown;
            o->version = 1;
            continue;
        case 'W':
            if (a[2] != '\0')
                goto unknown;
            o->warnings = 1;
            continue;
        default:
        unknown:
            fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
            print_usage(stderr);
            return -1;
        }
    }
    o->script = i < argc ? i : 0;
    return 0;
}

/* arg[0] is the script, negative indices the interpreter and options, positive the script's. */
static void create_arg_table(lua_State *L, int argc, char **argv, int script)
{
    int narg = script > 0 ? argc - script - 1 : 0;
    int base = script > 0 ? script : argc;
    lua_createtable(L, narg, base + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - (script > 0 ? script : 0));
    }
    (void)base;
    lua_setglobal(L, "arg");
}

/* The list handed to sacm._boot: {kind, value} in command-line order. */
static void push_actions(lua_State *L, int argc, char **argv, const struct options *o)
{
    int last = o->script > 0 ? o->script : argc;
    int n = 0;
    lua_newtable(L);
    for (int i = 1; i < last; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--log-level") == 0) {
            i++;
            continue;
        }
        if (a[0] != '-' || (a[1] != 'e' && a[1] != 'l'))
            continue;
        const char *value = a[2] != '\0' ? a + 2 : argv[++i];
        lua_createtable(L, 2, 0);
        lua_pushlstring(L, a + 1, 1);
        lua_rawseti(L, -2, 1);
        lua_pushstring(L, value);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, ++n);
    }
    if (o->script > 0) {
        lua_createtable(L, 2, 0);
        lua_pushliteral(L, "script");
        lua_rawseti(L, -2, 1);
        lua_pushstring(L, argv[o->script]);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, ++n);
    }
}

struct pmain_args {
    int argc;
    char **argv;
    int status;
};

static int pmain(lua_State *L)
{
    struct pmain_args *pa = lua_touserdata(L, 1);
    struct options o = {0};
    o.log_level = -1;
    if (collect_args(pa->argc, pa->argv, &o) < 0) {
        pa->status = EXIT_FAILURE;
        return 0;
    }
    if (o.log_level >= 0)
        sacm_log_set_level(o.log_level);
    if (o.warnings)
        lua_warning(L, "@on", 0);
    /* As lua.c: no script, no -e/-l and no -v means the REPL on a terminal, else stdin is the
     * script; -i enters the REPL after the rest. The REPL shows the version first. */
    int bare = o.script == 0 && !o.has_exec && !o.version;
    int repl = o.interactive || (bare && isatty(STDIN_FILENO));
    if (o.version || repl)
        print_version();
    create_arg_table(L, pa->argc, pa->argv, o.script);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "sacm._boot");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "start");
    push_actions(L, pa->argc, pa->argv, &o);
    if (bare || repl) {
        lua_createtable(L, 2, 0);
        lua_pushstring(L, repl ? "repl" : "script");
        lua_rawseti(L, -2, 1);
        lua_pushliteral(L, "-");
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    }
    lua_pushstring(L, progname);
    sacm_invoke(L, 2);

    sacm_loop_run();

    lua_getfield(L, -1, "exit_status");
    lua_call(L, 0, 1);
    pa->status = (int)lua_tointeger(L, -1);
    return 0;
}

int main(int argc, char **argv)
{
    if (argv[0] && argv[0][0])
        progname = "sacmrun";
    /* A server allocates and frees a response's buffers (tens to hundreds of KB) per request.
     * With glibc's defaults the freed top of the heap goes back to the kernel after each one and
     * is faulted in again for the next (1,400 brk calls in 3 s of ROLIE pages), and buffers past
     * 128 KB are mapped and unmapped each time. Fixed thresholds keep that memory for reuse:
     * peak RSS does not change; what stays mapped is at most 4 MB of free space at the heap's top. */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    if (sacm_loop_init() < 0) {
        fprintf(stderr, "%s: cannot initialise the event loop\n", progname);
        return EXIT_FAILURE;
    }
    lua_State *L = sacm_state_new(argv[0]);
    if (L == NULL) {
        fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
        return EXIT_FAILURE;
    }
    struct pmain_args pa = {argc, argv, EXIT_FAILURE};
    lua_pushcfunction(L, sacm_msgh);
    lua_pushcfunction(L, pmain);
    lua_pushlightuserdata(L, &pa);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
        fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
        pa.status = EXIT_FAILURE;
    }
    fflush(stdout);
    sacm_state_set_closing();
    lua_close(L);
    int forced = sacm_loop_close();
    if (forced > 0 && getenv("SACMRUN_STRICT_EXIT")) {
        fprintf(stderr, "%s: %d handle(s) were still open at exit\n", progname, forced);
        if (pa.status == 0)
            pa.status = 3;
    }
    return pa.status;
}
