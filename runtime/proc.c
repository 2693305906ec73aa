/* sacm._proc: child processes with captured output.
 *
 * spawn(opts, callback) starts a program in its own session (so its whole process group can be
 * signalled), feeds it stdin and collects stdout and stderr through pipes. callback(result) runs
 * exactly once, after the process has exited and both pipes reached EOF, or after abandon().
 * lua/sacm/proc.lua turns this into a call that yields the task.
 *
 * Memory: a process owns up to five libuv handles (process, stdout, stderr, stdin pipes and a
 * timer used to deliver an abandoned result from a callback). The struct lives until the close
 * callback of the last one has run. The userdata only points at it. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include "sacmrun.h"
#include "options.h"

#define PROC_MT "sacm.Process"
#define DEFAULT_MAX_OUTPUT (1024 * 1024)

extern char **environ;

typedef struct {
    uv_pipe_t pipe;
    int inited;
    char *data;
    size_t len, cap;
    int truncated;
    int done; /* EOF, read error, or abandoned: nothing more will be read */
} out_stream;

typedef struct proc {
    uv_process_t process;
    uv_timer_t deliver_timer;
    uv_pipe_t in;
    out_stream out, err;
    uv_write_t write_req;
    int process_inited, timer_inited, in_inited;
    int open_handles; /* initialised handles whose close callback has not run yet */

    char *stdin_data;
    size_t stdin_len;
    size_t max_output;

    int spawned;   /* uv_spawn succeeded */
    int exited;
    int64_t exit_status;
    int term_signal;
    int abandoned;
    int delivered;
    int closed;    /* the userdata let go of it */

    int cb_ref, self_ref;
    int orphaned;             /* on the orphans list */
    struct proc *prev, *next; /* the orphans list */
} proc;

typedef struct {
    proc *p;
} proc_box;

/* Procs closed while their child was still running. Such a proc waits for the exit (so the child
 * is reaped, not left a zombie) with no Lua object pointing at it; the list keeps it reachable
 * (not a leak) should the program end before the exit arrives. */
static proc *orphans;

/* Reads go through one buffer: callbacks run one at a time on the loop thread and each read
 * callback consumes the buffer before the next allocation. */
static char read_scratch[64 * 1024];

static void proc_free(proc *p)
{
    if (p->orphaned) {
        if (p->prev)
            p->prev->next = p->next;
        else
            orphans = p->next;
        if (p->next)
            p->next->prev = p->prev;
    }
    free(p->out.data);
    free(p->err.data);
    free(p->stdin_data);
    free(p);
}

static void on_handle_closed(uv_handle_t *handle)
{
    proc *p = handle->data;
    if (--p->open_handles == 0)
        proc_free(p);
}

static void close_handle(uv_handle_t *handle, int inited)
{
    if (inited && !uv_is_closing(handle))
        uv_close(handle, on_handle_closed);
}

static void push_stream(lua_State *L, out_stream *s, const char *field, const char *trunc_field)
{
    lua_pushlstring(L, s->data ? s->data : "", s->len);
    lua_setfield(L, -2, field);
    lua_pushboolean(L, s->truncated);
    lua_setfield(L, -2, trunc_field);
}

/* Calls the Lua callback once every condition for the result holds. Runs only from libuv
 * callbacks, never from a Lua call, so Lua is entered through sacm_invoke on the main state. */
static void maybe_deliver(proc *p)
{
    if (p->delivered || p->closed || sacm_state_closing())
        return;
    if (!p->abandoned && !(p->exited && p->out.done && p->err.done))
        return;
    p->delivered = 1;
    lua_State *L = sacm_main_state();
    int cb_ref = p->cb_ref;
    p->cb_ref = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, cb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, p->process.pid);
    lua_setfield(L, -2, "pid");
    lua_pushboolean(L, p->exited);
    lua_setfield(L, -2, "exited");
    if (p->exited && p->term_signal == 0) {
        lua_pushinteger(L, (lua_Integer)p->exit_status);
        lua_setfield(L, -2, "code");
    }
    if (p->exited && p->term_signal != 0) {
        lua_pushinteger(L, p->term_signal);
        lua_setfield(L, -2, "signal");
    }
    if (p->abandoned) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "abandoned");
    }
    push_stream(L, &p->out, "stdout", "stdout_truncated");
    push_stream(L, &p->err, "stderr", "stderr_truncated");
    /* Delivered: the userdata no longer needs to stay alive for a callback. */
    luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    p->self_ref = LUA_NOREF;
    sacm_invoke(L, 1);
}

static void on_process_exit(uv_process_t *process, int64_t exit_status, int term_signal)
{
    proc *p = process->data;
    p->exited = 1;
    p->exit_status = exit_status;
    p->term_signal = term_signal;
    if (p->closed) {
        /* Closed while running: it was killed and waited for only so that it is reaped. */
        close_handle((uv_handle_t *)&p->process, p->process_inited);
        return;
    }
    maybe_deliver(p);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)handle;
    (void)suggested;
    buf->base = read_scratch;
    buf->len = sizeof read_scratch;
}

static void stream_append(proc *p, out_stream *s, const char *data, size_t n)
{
    size_t room = p->max_output > s->len ? p->max_output - s->len : 0;
    size_t take = n < room ? n : room;
    if (take < n)
        s->truncated = 1;
    if (take == 0)
        return;
    if (s->len + take > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + take)
            cap *= 2;
        if (cap > p->max_output)
            cap = p->max_output;
        char *grown = realloc(s->data, cap);
        if (grown == NULL) {
            /* Keep what fits; the rest is lost like output past max_output. */
            s->truncated = 1;
            return;
        }
        s->data = grown;
        s->cap = cap;
    }
    memcpy(s->data + s->len, data, take);
    s->len += take;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    proc *p = stream->data;
    out_stream *s = (uv_pipe_t *)stream == &p->out.pipe ? &p->out : &p->err;
    if (nread > 0) {
        stream_append(p, s, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return; /* EAGAIN */
    /* EOF, or an error (ECONNRESET): either way nothing more will come. */
    s->done = 1;
    close_handle((uv_handle_t *)stream, s->inited);
    maybe_deliver(p);
}

static void on_written(uv_write_t *req, int status)
{
    (void)status; /* a child that exits without reading its input gives EPIPE: not an error */
    proc *p = req->data;
    close_handle((uv_handle_t *)&p->in, p->in_inited);
}

static void on_deliver_timer(uv_timer_t *timer)
{
    maybe_deliver(timer->data);
}

/* ---- signals ---- */

static const struct {
    const char *name;
    int number;
} signal_names[] = {
    {"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},     {"SIGQUIT", SIGQUIT}, {"SIGILL", SIGILL},
    {"SIGTRAP", SIGTRAP}, {"SIGABRT", SIGABRT},   {"SIGBUS", SIGBUS},   {"SIGFPE", SIGFPE},
    {"SIGKILL", SIGKILL}, {"SIGUSR1", SIGUSR1},   {"SIGSEGV", SIGSEGV}, {"SIGUSR2", SIGUSR2},
    {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM},   {"SIGTERM", SIGTERM}, {"SIGCHLD", SIGCHLD},
    {"SIGCONT", SIGCONT}, {"SIGSTOP", SIGSTOP},   {"SIGTSTP", SIGTSTP}, {"SIGTTIN", SIGTTIN},
    {"SIGTTOU", SIGTTOU}, {"SIGURG", SIGURG},     {"SIGXCPU", SIGXCPU}, {"SIGXFSZ", SIGXFSZ},
    {"SIGVTALRM", SIGVTALRM}, {"SIGPROF", SIGPROF}, {"SIGWINCH", SIGWINCH}, {"SIGIO", SIGIO},
    {"SIGPWR", SIGPWR},   {"SIGSYS", SIGSYS},
};

#define N_SIGNALS (sizeof signal_names / sizeof signal_names[0])

static int check_signal(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, idx);
        luaL_argcheck(L, n >= 0 && n < 65, idx, "not a signal number");
        return (int)n;
    }
    const char *name = luaL_checkstring(L, idx);
    for (size_t i = 0; i < N_SIGNALS; i++) {
        /* "SIGTERM" or "TERM" */
        if (strcmp(name, signal_names[i].name) == 0 || strcmp(name, signal_names[i].name + 3) == 0)
            return signal_names[i].number;
    }
    return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
}

/* ---- spawn ---- */

/* Turns the array at opts[field] into a NULL-terminated char* array kept alive by a userdata
 * pushed on the stack (freed by the GC if anything raises). Returns NULL when the field is nil. */
static char **opt_string_array(lua_State *L, int opts, const char *field, int required)
{
    int t = lua_getfield(L, opts, field);
    if (t == LUA_TNIL && !required) {
        lua_pop(L, 1);
        lua_pushnil(L); /* keep the stack shape the same either way */
        return NULL;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "spawn: %s must be a table, got %s", field, lua_typename(L, t));
    lua_Integer n = luaL_len(L, -1);
    if (required && n < 1)
        luaL_error(L, "spawn: %s must not be empty", field);
    char **arr = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, -2, i) != LUA_TSTRING)
            luaL_error(L, "spawn: %s[%d] must be a string, got %s", field, (int)i, luaL_typename(L, -1));
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (strlen(s) != len)
            luaL_error(L, "spawn: %s[%d] contains a NUL byte", field, (int)i);
        arr[i - 1] = (char *)s; /* alive: the table holds the string */
        lua_pop(L, 1);
    }
    arr[n] = NULL;
    lua_remove(L, -2); /* the table; the userdata stays on the stack */
    return arr;
}

/* spawn(opts, callback) -> process | nil, err */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    const char *file = sacm_opt_string(L, 1, "spawn", "file", 1);
    const char *cwd = sacm_opt_string(L, 1, "spawn", "cwd", 0);
    char **args = opt_string_array(L, 1, "args", 1);   /* stack 3 */
    char **env = opt_string_array(L, 1, "env", 0);     /* stack 4 */
    size_t stdin_len = 0;
    const char *stdin_data = NULL;
    int t = lua_getfield(L, 1, "stdin");
    if (t == LUA_TSTRING)
        stdin_data = lua_tolstring(L, -1, &stdin_len);
    else if (t != LUA_TNIL)
        return luaL_error(L, "spawn: stdin must be a string, got %s", lua_typename(L, t));
    lua_pop(L, 1);
    lua_Integer max_output = sacm_opt_integer(L, 1, "spawn", "max_output", DEFAULT_MAX_OUTPUT, 0);
    if (stdin_len > UINT32_MAX)
        return luaL_error(L, "spawn: stdin is too large");

    /* The userdata exists, closed, before anything is acquired. */
    proc_box *box = lua_newuserdatauv(L, sizeof *box, 0); /* stack 5 */
    box->p = NULL;
    luaL_setmetatable(L, PROC_MT);
    proc *p = calloc(1, sizeof *p);
    char *stdin_copy = NULL;
    if (stdin_data != NULL && stdin_len > 0) {
        stdin_copy = malloc(stdin_len);
        if (stdin_copy == NULL) {
            free(p);
            return luaL_error(L, "out of memory");
        }
        memcpy(stdin_copy, stdin_data, stdin_len);
    }
    if (p == NULL) {
        free(stdin_copy);
        return luaL_error(L, "out of memory");
    }
    p->stdin_data = stdin_copy;
    p->stdin_len = stdin_len;
    p->max_output = (size_t)max_output;
    p->cb_ref = p->self_ref = LUA_NOREF;
    box->p = p;

    uv_loop_t *loop = sacm_loop();
    p->process.data = p;
    p->deliver_timer.data = p;
    p->in.data = p;
    p->out.pipe.data = p;
    p->err.pipe.data = p;
    p->write_req.data = p;
    uv_timer_init(loop, &p->deliver_timer);
    p->timer_inited = 1;
    p->open_handles++;
    uv_pipe_init(loop, &p->out.pipe, 0);
    p->out.inited = 1;
    p->open_handles++;
    uv_pipe_init(loop, &p->err.pipe, 0);
    p->err.inited = 1;
    p->open_handles++;
    if (stdin_data != NULL) {
        uv_pipe_init(loop, &p->in, 0);
        p->in_inited = 1;
        p->open_handles++;
    }

    uv_stdio_container_t stdio[3];
    if (stdin_data != NULL) {
        stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
        stdio[0].data.stream = (uv_stream_t *)&p->in;
    } else {
        stdio[0].flags = UV_IGNORE; /* libuv gives the child /dev/null */
    }
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&p->out.pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&p->err.pipe;

    uv_process_options_t options;
    memset(&options, 0, sizeof options);
    options.exit_cb = on_process_exit;
    options.file = file;
    options.args = args;
    options.env = env;
    options.cwd = cwd;
    options.flags = UV_PROCESS_DETACHED; /* setsid: its own process group, no controlling tty */
    options.stdio_count = 3;
    options.stdio = stdio;

    int rc = uv_spawn(loop, &p->process, &options);
    /* uv_spawn initialises the handle even when it fails, so it is always closed later. */
    p->process_inited = 1;
    p->open_handles++;
    if (rc < 0) {
        box->p = NULL;
        p->closed = 1;
        close_handle((uv_handle_t *)&p->process, p->process_inited);
        close_handle((uv_handle_t *)&p->deliver_timer, p->timer_inited);
        close_handle((uv_handle_t *)&p->out.pipe, p->out.inited);
        close_handle((uv_handle_t *)&p->err.pipe, p->err.inited);
        close_handle((uv_handle_t *)&p->in, p->in_inited);
        if (cwd)
            lua_pushfstring(L, "spawn %s (in %s)", file, cwd);
        else
            lua_pushfstring(L, "spawn %s", file);
        return sacm_fail_uv(L, rc, lua_tostring(L, -1));
    }
    p->spawned = 1;

    if (uv_read_start((uv_stream_t *)&p->out.pipe, on_alloc, on_read) < 0) {
        p->out.done = 1;
        close_handle((uv_handle_t *)&p->out.pipe, p->out.inited);
    }
    if (uv_read_start((uv_stream_t *)&p->err.pipe, on_alloc, on_read) < 0) {
        p->err.done = 1;
        close_handle((uv_handle_t *)&p->err.pipe, p->err.inited);
    }
    if (p->in_inited) {
        int wrc = -1;
        if (p->stdin_len > 0) {
            uv_buf_t buf = uv_buf_init(p->stdin_data, (unsigned int)p->stdin_len);
            wrc = uv_write(&p->write_req, (uv_stream_t *)&p->in, &buf, 1, on_written);
        }
        if (wrc < 0) /* nothing to write (EOF at once), or the write could not start */
            close_handle((uv_handle_t *)&p->in, p->in_inited);
    }

    lua_pushvalue(L, 2);
    p->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 5);
    p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 5);
    return 1;
}

static proc *check_proc(lua_State *L)
{
    proc_box *box = luaL_checkudata(L, 1, PROC_MT);
    if (box->p == NULL)
        luaL_error(L, "attempt to use a closed process");
    return box->p;
}

static void kill_group(proc *p, int sig)
{
    if (!p->spawned)
        return;
    if (kill(-p->process.pid, sig) != 0 && !p->exited)
        uv_process_kill(&p->process, sig);
}

/* process:kill(sig) -> true | nil, err. Signals the process group (the child is its leader);
 * falls back to the child alone. After the child exited only the group is tried: its pid may
 * belong to someone else by now, but a group id is not reused while any member is alive. */
static int l_kill(lua_State *L)
{
    proc *p = check_proc(L);
    int sig = lua_isnoneornil(L, 2) ? SIGTERM : check_signal(L, 2);
    if (!p->spawned)
        return sacm_fail_uv(L, UV_ESRCH, "kill process");
    if (kill(-p->process.pid, sig) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    int rc = -errno;
    if (!p->exited) {
        rc = uv_process_kill(&p->process, sig);
        if (rc == 0) {
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    return sacm_fail_uv(L, rc, lua_pushfstring(L, "kill process %d", p->process.pid));
}

static int l_pid(lua_State *L)
{
    proc *p = check_proc(L);
    lua_pushinteger(L, p->process.pid);
    return 1;
}

/* process:abandon(): stop waiting for the pipes (a grandchild that left the process group may
 * hold them open forever) and deliver what was read so far, from a loop callback. */
static int l_abandon(lua_State *L)
{
    proc *p = check_proc(L);
    if (p->delivered || p->abandoned)
        return 0;
    p->abandoned = 1;
    if (!p->out.done) {
        p->out.done = 1;
        close_handle((uv_handle_t *)&p->out.pipe, p->out.inited);
    }
    if (!p->err.done) {
        p->err.done = 1;
        close_handle((uv_handle_t *)&p->err.pipe, p->err.inited);
    }
    close_handle((uv_handle_t *)&p->in, p->in_inited);
    uv_timer_start(&p->deliver_timer, on_deliver_timer, 0, 0);
    return 0;
}

/* close(), __gc, __close: idempotent. A child still running is killed with its group. */
static int l_close(lua_State *L)
{
    proc_box *box = luaL_checkudata(L, 1, PROC_MT);
    proc *p = box->p;
    if (p == NULL)
        return 0;
    box->p = NULL;
    p->closed = 1;
    if (!sacm_state_closing()) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->cb_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    }
    p->cb_ref = p->self_ref = LUA_NOREF;
    close_handle((uv_handle_t *)&p->deliver_timer, p->timer_inited);
    close_handle((uv_handle_t *)&p->out.pipe, p->out.inited);
    close_handle((uv_handle_t *)&p->err.pipe, p->err.inited);
    close_handle((uv_handle_t *)&p->in, p->in_inited);
    if (p->spawned && !p->exited) {
        kill_group(p, SIGKILL);
        /* Normally wait for the exit so the child is reaped (on_process_exit closes the handle);
         * while the runtime ends there is no loop left to wait with. */
        if (!sacm_state_closing()) {
            p->orphaned = 1;
            p->prev = NULL;
            p->next = orphans;
            if (orphans)
                orphans->prev = p;
            orphans = p;
            return 0;
        }
    }
    close_handle((uv_handle_t *)&p->process, p->process_inited);
    return 0;
}

static int l_tostring(lua_State *L)
{
    proc_box *box = luaL_checkudata(L, 1, PROC_MT);
    if (box->p == NULL)
        lua_pushliteral(L, "process (closed)");
    else
        lua_pushfstring(L, "process %d", box->p->process.pid);
    return 1;
}

/* environ() -> {NAME = value, ...}: the current environment */
static int l_environ(lua_State *L)
{
    lua_newtable(L);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL || eq == *e)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

int luaopen_sacm__proc(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"kill", l_kill},
        {"pid", l_pid},
        {"abandon", l_abandon},
        {"close", l_close},
        {NULL, NULL},
    };
    sacm_define_type(L, PROC_MT, methods, l_close);
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {
        {"spawn", l_spawn},
        {"environ", l_environ},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    /* signals: {SIGTERM = 15, ...} for names in results and for validation in Lua */
    lua_createtable(L, 0, (int)N_SIGNALS);
    for (size_t i = 0; i < N_SIGNALS; i++) {
        lua_pushinteger(L, signal_names[i].number);
        lua_setfield(L, -2, signal_names[i].name);
    }
    lua_setfield(L, -2, "signals");
    return 1;
}
