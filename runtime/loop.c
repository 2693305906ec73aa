/* The process's one libuv loop, its signals and its orderly end. Lua decides what a signal means
 * (shutdown handlers); C keeps the part that must work even when Lua is stuck: a second SIGINT
 * ends the process at once. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/time.h>
#include "sacmrun.h"

static uv_loop_t loop;
static uv_signal_t sigint_watcher, sigterm_watcher;
/* The next turn of the loop, for task.yield(): the callback runs from a check handle, after the
 * loop has polled for I/O once, and an idle handle keeps that poll from blocking. A 0 ms timer
 * would not do: libuv 1.44 runs a timer started from a timer callback in the same timers phase,
 * before any I/O, so a task yielding that way starves sockets and pipes. */
static uv_idle_t turn_idle;
static uv_check_t turn_check;
static int turn_ref = LUA_NOREF;
static int signal_ref = LUA_NOREF;
static int sigint_count;
static void (*interrupt_handler)(void);

uv_loop_t *sacm_loop(void) { return &loop; }

static void on_signal(uv_signal_t *watcher, int signum)
{
    (void)watcher;
    if (signum == SIGINT && interrupt_handler) {
        interrupt_handler();
        return;
    }
    if (signum == SIGINT && ++sigint_count > 1) {
        static const char msg[] = "\nsacmrun: second interrupt, exiting now\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) { /* nothing left to report to */ }
        _exit(128 + SIGINT);
    }
    lua_State *L = sacm_main_state();
    if (signal_ref == LUA_NOREF) {
        /* Nothing in Lua asked to handle it: behave like the default action, but tidily. */
        fprintf(stderr, "sacmrun: %s\n", signum == SIGINT ? "interrupted" : "terminated");
        exit(128 + signum);
    }
    lua_pushstring(L, signum == SIGINT ? "SIGINT" : "SIGTERM");
    lua_pushinteger(L, signum);
    sacm_invoke_ref(L, signal_ref, 2);
}

static void on_turn_idle(uv_idle_t *idle)
{
    (void)idle;
}

static void on_turn_check(uv_check_t *check)
{
    (void)check;
    uv_idle_stop(&turn_idle);
    uv_check_stop(&turn_check);
    int ref = turn_ref;
    turn_ref = LUA_NOREF;
    sacm_invoke_ref(sacm_main_state(), ref, 0);
    luaL_unref(sacm_main_state(), LUA_REGISTRYINDEX, ref);
}

static int is_runtime_handle(uv_handle_t *handle)
{
    return handle == (uv_handle_t *)&sigint_watcher || handle == (uv_handle_t *)&sigterm_watcher ||
           handle == (uv_handle_t *)&turn_idle || handle == (uv_handle_t *)&turn_check;
}

void sacm_loop_set_interrupt_handler(void (*fn)(void))
{
    interrupt_handler = fn;
}

int sacm_loop_init(void)
{
    int rc = uv_loop_init(&loop);
    if (rc < 0)
        return rc;
    /* A peer closing a socket or pipe must be an error return, never a process kill. */
    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(&loop, &sigint_watcher);
    uv_signal_init(&loop, &sigterm_watcher);
    uv_signal_start(&sigint_watcher, on_signal, SIGINT);
    uv_signal_start(&sigterm_watcher, on_signal, SIGTERM);
    uv_idle_init(&loop, &turn_idle);
    uv_check_init(&loop, &turn_check);
    /* Watching for signals must not keep an otherwise finished program alive. */
    uv_unref((uv_handle_t *)&sigint_watcher);
    uv_unref((uv_handle_t *)&sigterm_watcher);
    return 0;
}

void sacm_loop_run(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void count_and_close(uv_handle_t *handle, void *arg)
{
    if (uv_is_closing(handle))
        return;
    if (!is_runtime_handle(handle)) {
        (*(int *)arg)++;
        sacm_log(SACM_LOG_DEBUG, "loop", "closing a %s handle left open at exit",
                 uv_handle_type_name(handle->type));
    }
    uv_close(handle, NULL);
}

int sacm_loop_close(void)
{
    int forced = 0;
    /* Handles owned by Lua were closed by their finalizers during lua_close; let those close
     * callbacks run, then close whatever C still holds. */
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_walk(&loop, count_and_close, &forced);
    /* Close callbacks run at once; threadpool work (a read stuck on a FIFO or a hung mount)
     * may never finish, so wait for it a bounded time rather than hang at exit. */
    uint64_t deadline = uv_hrtime() + 2000000000ULL;
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0) {
        if (uv_hrtime() > deadline) {
            sacm_log(SACM_LOG_WARN, "loop", "exiting with work still running in the threadpool");
            return forced;
        }
        uv_sleep(1);
    }
    int rc = uv_loop_close(&loop);
    if (rc != 0)
        sacm_log(SACM_LOG_WARN, "loop", "loop did not close cleanly: %s", uv_err_name(rc));
    return forced;
}

/* ---- sacm._loop ---- */

static int l_now(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)uv_now(&loop));
    return 1;
}

static int l_hrtime(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)uv_hrtime());
    return 1;
}

/* Wall-clock time in seconds with microseconds, for timestamps (XEP-0082). */
static int l_time(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6);
    return 1;
}

static int l_update_time(lua_State *L)
{
    (void)L;
    uv_update_time(&loop);
    return 0;
}

static int l_stop(lua_State *L)
{
    (void)L;
    uv_stop(&loop);
    return 0;
}

static int l_on_signal(lua_State *L)
{
    luaL_unref(L, LUA_REGISTRYINDEX, signal_ref);
    signal_ref = LUA_NOREF;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TFUNCTION);
        lua_pushvalue(L, 1);
        signal_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

static void list_handle(uv_handle_t *handle, void *arg)
{
    lua_State *L = arg;
    if (is_runtime_handle(handle))
        return;
    if (uv_is_closing(handle))
        return;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, uv_handle_type_name(handle->type));
    lua_setfield(L, -2, "type");
    lua_pushboolean(L, uv_is_active(handle));
    lua_setfield(L, -2, "active");
    lua_pushboolean(L, uv_has_ref(handle));
    lua_setfield(L, -2, "ref");
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

/* after_poll(fn): fn() once, on the next turn of the loop after it has polled for I/O (one
 * callback at a time: a second call before it ran replaces the first). */
static int l_after_poll(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, turn_ref);
    lua_pushvalue(L, 1);
    turn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_idle_start(&turn_idle, on_turn_idle);
    uv_check_start(&turn_check, on_turn_check);
    return 0;
}

/* handles() -> list of {type, active, ref}: what keeps the loop alive (tests use it to prove
 * nothing was left behind). */
static int l_handles(lua_State *L)
{
    lua_newtable(L);
    uv_walk(&loop, list_handle, L);
    return 1;
}

int luaopen_sacm__loop(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"now", l_now},
        {"hrtime", l_hrtime},
        {"time", l_time},
        {"update_time", l_update_time},
        {"stop", l_stop},
        {"on_signal", l_on_signal},
        {"handles", l_handles},
        {"after_poll", l_after_poll},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
