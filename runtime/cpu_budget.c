/* sacm._cpu_budget: a CPU-time budget for one run of sandboxed Lua (lua/sacm/policy/sandbox.lua).
 *
 * A count hook makes the VM stop at every instruction to decrement the count (luaG_traceexec),
 * which halved the speed of sandboxed checks. Instead, a POSIX CPU-time timer of the loop thread
 * is armed for the run; only when it expires does its signal handler set a hook on the running
 * coroutine, as lua.c's SIGINT handler does (lua_sethook is safe to call from a signal handler).
 * The hook raises the budget error, and keeps raising it at every instruction, so a pcall in the
 * sandboxed code cannot swallow it. Until the deadline passes the run costs nothing but one
 * timer_settime to arm it.
 *
 * The signal goes to this thread only (SIGEV_THREAD_ID), so the handler runs on the thread whose
 * Lua state it touches, between two of its instructions. Kernel CPU timers are checked at the
 * scheduler tick, so a budget ends a few milliseconds late at most. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "sacmrun.h"

#define BUDGET_SIGNAL SIGVTALRM
#define BUDGET_MESSAGE "instruction budget exceeded" /* what sandbox.lua reports on */

static int timer_ready;          /* 1: created; -1: cannot be (arm then says so) */
static timer_t budget_timer;
static lua_State *volatile armed; /* the coroutine of the run in progress, or NULL */
static volatile sig_atomic_t fired;
static double armed_seconds;     /* the run's budget, to tell what it used at disarm */

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1); /* again at every instruction from here on */
    luaL_error(L, BUDGET_MESSAGE);
}

static void on_budget_signal(int sig)
{
    (void)sig;
    lua_State *co = armed;
    if (co == NULL)
        return; /* the run ended before the signal came */
    fired = 1;
    lua_sethook(co, budget_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static int ensure_timer(void)
{
    if (timer_ready != 0)
        return timer_ready > 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_budget_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = BUDGET_SIGNAL;
    sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (sigaction(BUDGET_SIGNAL, &sa, NULL) != 0 || timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &budget_timer) != 0) {
        sacm_log(SACM_LOG_WARN, "sandbox", "no CPU-time timer (%s): sandboxed code is bounded by a count hook instead",
                 strerror(errno));
        timer_ready = -1;
        return 0;
    }
    timer_ready = 1;
    return 1;
}

/* arm(co, seconds) -> true | false (no timer here: the caller bounds the run another way).
 * Clears any hook on co, then runs the timer for seconds of this thread's CPU time. */
static int l_arm(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argcheck(L, co != NULL, 1, "a coroutine");
    lua_Number seconds = luaL_checknumber(L, 2);
    luaL_argcheck(L, seconds > 0, 2, "must be positive");
    if (!ensure_timer()) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_sethook(co, NULL, 0, 0);
    fired = 0;
    armed = co;
    armed_seconds = (double)seconds;
    struct itimerspec when;
    memset(&when, 0, sizeof when);
    when.it_value.tv_sec = (time_t)seconds;
    when.it_value.tv_nsec = (long)((seconds - (lua_Number)(time_t)seconds) * 1e9);
    if (when.it_value.tv_sec == 0 && when.it_value.tv_nsec == 0)
        when.it_value.tv_nsec = 1;
    if (timer_settime(budget_timer, 0, &when, NULL) != 0) {
        armed = NULL;
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* disarm() -> ran_out, seconds: whether the budget ran out during the run, and the CPU time the
 * run used (the budget less what the timer had left). The timer is left running: a late signal
 * finds nothing armed and does nothing, and the next arm sets it afresh. A hook the signal set
 * on a run that finished anyway is taken off, so the coroutine can serve the next. */
static int l_disarm(lua_State *L)
{
    lua_State *co = armed;
    armed = NULL;
    int ran_out = fired;
    if (ran_out && co != NULL)
        lua_sethook(co, NULL, 0, 0);
    fired = 0;
    double used = armed_seconds;
    struct itimerspec left;
    if (!ran_out && timer_ready > 0 && timer_gettime(budget_timer, &left) == 0) {
        double rest = (double)left.it_value.tv_sec + (double)left.it_value.tv_nsec / 1e9;
        used = rest < armed_seconds ? armed_seconds - rest : 0;
    }
    lua_pushboolean(L, ran_out);
    lua_pushnumber(L, used);
    return 2;
}

int luaopen_sacm__cpu_budget(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"arm", l_arm},
        {"disarm", l_disarm},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
