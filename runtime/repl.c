/* The terminal side of the REPL (sacm._repl): readline's callback interface driven by the loop, so
 * timers, processes and XMPP traffic go on while the prompt waits. Lua (sacm.repl) decides what a
 * line means; this file reads lines, keeps output from elsewhere above the prompt, hands Ctrl-C
 * to Lua, completes words through a Lua function and keeps the history file.
 *
 * On a terminal (stdin and stdout both) readline edits the line. Otherwise lines are read plainly,
 * as lua.c does without readline. Lines are always handed to Lua from an idle callback, never from
 * inside readline: the code a line runs (and prints, and prompts again) must not nest in
 * rl_callback_read_char.
 *
 * Built into sacmrun-repl.so, loaded on first require: mapping readline and its terminfo library
 * costs every start (docs/performance.md), and only interactive runs need it. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <readline/readline.h>
#include <readline/history.h>
#include "sacmrun.h"

#define REPL_MT "sacm.Repl"

/* One terminal per process, so one REPL: module-level state. The handles are static; they are
 * closed by stop() (or the module's __gc at exit) and only reopened after their close callbacks
 * ran. */
static struct {
    int started;
    int open_handles;   /* handles not yet through their close callback */
    int tty;            /* readline on a terminal; else plain lines */
    int reading;        /* a prompt is out and its line not yet delivered */
    int prompt_visible; /* readline's handler is installed: output must go around the prompt */
    int eof;
    int file_input;     /* stdin is a regular file: epoll refuses it, and reading never blocks */
    uv_poll_t poll;
    uv_idle_t idle;     /* delivers a ready line (or EOF) on the next turn of the loop */
    uv_signal_t winch;  /* also keeps the loop alive while a line runs and waits on nothing */
    int line_ref, interrupt_ref, complete_ref;
    char *ready;        /* the line to deliver; NULL with ready_set means EOF */
    int ready_set;
    char *pending;      /* plain mode: bytes read, not yet a whole line */
    size_t pending_len, pending_cap;
    char **matches;     /* completion candidates for the generator */
    size_t n_matches, next_match;
} repl = {.line_ref = LUA_NOREF, .interrupt_ref = LUA_NOREF, .complete_ref = LUA_NOREF};

/* ---- output around the prompt ---- */

static void write_all(FILE *f, const char *s, size_t len)
{
    fwrite(s, 1, len, f);
    fflush(f);
}

/* Writes s to f; when a prompt is on the screen, clears it (with the half-typed line) first and
 * draws it again below the output, so the line being typed is never garbled. */
static void repl_write(FILE *f, const char *s, size_t len)
{
    if (!repl.prompt_visible) {
        write_all(f, s, len);
        return;
    }
    rl_clear_visible_line();
    fflush(rl_outstream);
    write_all(f, s, len);
    if (len > 0 && s[len - 1] != '\n')
        write_all(f, "\n", 1); /* the prompt starts on a line of its own */
    rl_on_new_line();
    rl_redisplay();
}

static void log_sink(const char *record, size_t len)
{
    fflush(stdout);
    repl_write(stderr, record, len);
}

/* ---- delivering lines to Lua ---- */

static void deliver_ready(uv_idle_t *idle)
{
    uv_idle_stop(idle);
    if (!repl.ready_set || repl.line_ref == LUA_NOREF)
        return;
    char *line = repl.ready;
    repl.ready = NULL;
    repl.ready_set = 0;
    repl.reading = 0;
    lua_State *L = sacm_main_state();
    if (line) {
        lua_pushstring(L, line);
        free(line);
    } else {
        lua_pushnil(L);
    }
    sacm_invoke_ref(L, repl.line_ref, 1);
}

/* Takes ownership of line (NULL: end of input) and delivers it on the next turn of the loop. */
static void set_ready(char *line)
{
    free(repl.ready);
    repl.ready = line;
    repl.ready_set = 1;
    if (repl.file_input)
        return; /* on_file_idle, still running, delivers it */
    uv_poll_stop(&repl.poll);
    uv_idle_start(&repl.idle, deliver_ready);
}

static void on_readline_line(char *line)
{
    /* Off the screen while the line runs: the terminal goes back to its normal mode, so Ctrl-C
     * is a signal and output needs no redrawing. */
    rl_callback_handler_remove();
    repl.prompt_visible = 0;
    set_ready(line);
}

/* Plain mode: a whole line from pending (without its newline), or NULL. */
static char *take_pending_line(void)
{
    char *nl = repl.pending_len ? memchr(repl.pending, '\n', repl.pending_len) : NULL;
    size_t len;
    if (nl)
        len = (size_t)(nl - repl.pending);
    else if (repl.eof && repl.pending_len > 0)
        len = repl.pending_len;
    else
        return NULL;
    char *line = malloc(len + 1);
    if (line == NULL)
        return NULL;
    memcpy(line, repl.pending, len);
    line[len] = '\0';
    size_t used = nl ? len + 1 : len;
    memmove(repl.pending, repl.pending + used, repl.pending_len - used);
    repl.pending_len -= used;
    return line;
}

/* Plain mode: reads what is there; returns 0, or -1 at end of input or on a read error. */
static int read_pending(void)
{
    if (repl.pending_cap - repl.pending_len < 4096) {
        size_t cap = repl.pending_cap ? repl.pending_cap * 2 : 8192;
        char *p = realloc(repl.pending, cap);
        if (p == NULL)
            return -1;
        repl.pending = p;
        repl.pending_cap = cap;
    }
    ssize_t n;
    do
        n = read(STDIN_FILENO, repl.pending + repl.pending_len, repl.pending_cap - repl.pending_len);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n <= 0)
        return -1;
    repl.pending_len += (size_t)n;
    return 0;
}

/* Plain mode: hands out the next line if one is complete (or the end of input). */
static int plain_try_line(void)
{
    char *line = take_pending_line();
    if (line) {
        set_ready(line);
        return 1;
    }
    if (repl.eof) {
        set_ready(NULL);
        return 1;
    }
    return 0;
}

static void on_stdin(uv_poll_t *poll, int status, int events)
{
    (void)poll;
    (void)events;
    if (!repl.reading)
        return;
    if (repl.tty) {
        if (status < 0) { /* the terminal went away */
            on_readline_line(NULL);
            return;
        }
        rl_callback_read_char();
        return;
    }
    if (status < 0 || read_pending() < 0)
        repl.eof = 1;
    plain_try_line();
}

/* A regular file as stdin: no poll, read on idle turns (a file read does not block). */
static void on_file_idle(uv_idle_t *idle)
{
    if (repl.ready_set) {
        deliver_ready(idle);
        return;
    }
    if (read_pending() < 0)
        repl.eof = 1;
    if (!plain_try_line() && !repl.reading)
        uv_idle_stop(idle);
}

static void on_winch(uv_signal_t *signal, int signum)
{
    (void)signal;
    (void)signum;
    if (!repl.tty)
        return;
    if (repl.prompt_visible)
        rl_resize_terminal();
    else
        rl_reset_screen_size();
}

/* ---- Ctrl-C ---- */

static void on_interrupt(void)
{
    if (repl.interrupt_ref == LUA_NOREF)
        return;
    sacm_invoke_ref(sacm_main_state(), repl.interrupt_ref, 0);
}

/* ---- completion ---- */

static char *next_match(const char *text, int state)
{
    (void)text;
    if (state == 0)
        repl.next_match = 0;
    if (repl.next_match >= repl.n_matches)
        return NULL;
    return strdup(repl.matches[repl.next_match++]);
}

static void free_matches(void)
{
    for (size_t i = 0; i < repl.n_matches; i++)
        free(repl.matches[i]);
    free(repl.matches);
    repl.matches = NULL;
    repl.n_matches = 0;
}

/* Asks the Lua completer (line, start, end) -> candidates, append; the candidates replace the
 * word from start to end, readline shows them and inserts their common prefix. */
static char **complete(const char *text, int start, int end)
{
    rl_attempted_completion_over = 1; /* never fall back to file names */
    if (repl.complete_ref == LUA_NOREF)
        return NULL;
    lua_State *L = sacm_main_state();
    int top = lua_gettop(L);
    lua_pushcfunction(L, sacm_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, repl.complete_ref);
    lua_pushstring(L, rl_line_buffer);
    lua_pushinteger(L, start);
    lua_pushinteger(L, end);
    if (lua_pcall(L, 3, 2, top + 1) != LUA_OK) {
        sacm_log(SACM_LOG_DEBUG, "repl", "completion failed: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        return NULL;
    }
    char **result = NULL;
    if (lua_istable(L, top + 2)) {
        size_t n = (size_t)lua_rawlen(L, top + 2);
        repl.matches = calloc(n + 1, sizeof *repl.matches);
        for (size_t i = 0; repl.matches && i < n; i++) {
            lua_rawgeti(L, top + 2, (lua_Integer)i + 1);
            const char *s = lua_tostring(L, -1);
            if (s && (repl.matches[repl.n_matches] = strdup(s)) != NULL)
                repl.n_matches++;
            lua_pop(L, 1);
        }
        const char *append = lua_tostring(L, top + 3);
        rl_completion_append_character = append && append[0] ? (unsigned char)append[0] : '\0';
        result = rl_completion_matches(text, next_match);
        free_matches();
    }
    lua_settop(L, top);
    return result;
}

/* ---- sacm._repl ---- */

static void on_handle_closed(uv_handle_t *handle)
{
    (void)handle;
    repl.open_handles--;
}

static void unref_callbacks(void)
{
    lua_State *L = sacm_main_state();
    if (!sacm_state_closing()) {
        luaL_unref(L, LUA_REGISTRYINDEX, repl.line_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, repl.interrupt_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, repl.complete_ref);
    }
    repl.line_ref = repl.interrupt_ref = repl.complete_ref = LUA_NOREF;
}

/* Puts the terminal and the runtime back as they were. Safe to call twice, and from __gc while
 * the state closes (it then leaves the registry alone). */
static void stop_repl(void)
{
    if (!repl.started)
        return;
    repl.started = 0;
    if (repl.tty && repl.prompt_visible) {
        rl_callback_handler_remove(); /* restores the terminal's mode */
        fputc('\n', rl_outstream);
        fflush(rl_outstream);
    }
    repl.prompt_visible = 0;
    repl.reading = 0;
    sacm_log_set_sink(NULL);
    sacm_loop_set_interrupt_handler(NULL);
    uv_close((uv_handle_t *)&repl.idle, on_handle_closed);
    uv_close((uv_handle_t *)&repl.winch, on_handle_closed);
    if (!repl.file_input)
        uv_close((uv_handle_t *)&repl.poll, on_handle_closed);
    unref_callbacks();
    free(repl.ready);
    repl.ready = NULL;
    repl.ready_set = 0;
    free(repl.pending);
    repl.pending = NULL;
    repl.pending_len = repl.pending_cap = 0;
}

static int ref_function(lua_State *L, int idx, const char *field)
{
    lua_getfield(L, idx, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    if (!lua_isfunction(L, -1))
        luaL_error(L, "start: '%s' must be a function", field);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* start{on_line = fn(line|nil), on_interrupt = fn(), complete = fn(line, start, end)} -> tty
 * Takes over stdin, the log sink and SIGINT until stop(). */
static int l_start(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (repl.started || repl.open_handles > 0)
        return luaL_error(L, "the REPL is already running");
    lua_getfield(L, 1, "on_line");
    luaL_argcheck(L, lua_isfunction(L, -1), 1, "on_line must be a function");
    lua_pop(L, 1);
    uv_loop_t *loop = sacm_loop();

    memset(&repl.poll, 0, sizeof repl.poll);
    repl.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    repl.eof = repl.reading = repl.prompt_visible = 0;
    /* uv_poll_init makes the descriptor non-blocking, and on a terminal that file description is
     * usually shared with stdout and stderr: keep it blocking so large output is never cut. */
    int flags = fcntl(STDIN_FILENO, F_GETFL);
    int rc = uv_poll_init(loop, &repl.poll, STDIN_FILENO);
    if (flags >= 0)
        fcntl(STDIN_FILENO, F_SETFL, flags);
    repl.file_input = 0;
    if (rc == UV_EPERM && !repl.tty) {
        repl.file_input = 1;
    } else if (rc < 0) {
        return sacm_fail_uv(L, rc, "cannot watch standard input");
    }
    uv_idle_init(loop, &repl.idle);
    uv_signal_init(loop, &repl.winch);
    uv_signal_start(&repl.winch, on_winch, SIGWINCH);
    repl.open_handles += repl.file_input ? 2 : 3;

    repl.line_ref = ref_function(L, 1, "on_line");
    repl.interrupt_ref = ref_function(L, 1, "on_interrupt");
    repl.complete_ref = ref_function(L, 1, "complete");

    if (repl.tty) {
        rl_readline_name = "sacmrun"; /* for $if sacmrun in ~/.inputrc */
        rl_instream = stdin;
        rl_outstream = stdout;
        rl_catch_signals = 0; /* libuv owns the signals */
        rl_catch_sigwinch = 0;
        rl_change_environment = 0;
        rl_attempted_completion_function = complete;
        /* '.', ':' and '[' end a word, so the completer sees the name after them */
        rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#.:";
        rl_completer_word_break_characters = rl_basic_word_break_characters;
    }
    sacm_log_set_sink(log_sink);
    sacm_loop_set_interrupt_handler(on_interrupt);
    repl.started = 1;
    lua_pushboolean(L, repl.tty);
    return 1;
}

static void check_started(lua_State *L)
{
    if (!repl.started)
        luaL_error(L, "the REPL is not running");
}

/* read(prompt): shows the prompt; the line (or nil at end of input) goes to on_line. */
static int l_read(lua_State *L)
{
    const char *prompt = luaL_checkstring(L, 1);
    check_started(L);
    if (repl.reading)
        return luaL_error(L, "a line is already being read");
    repl.reading = 1;
    if (repl.tty) {
        rl_callback_handler_install(prompt, on_readline_line);
        repl.prompt_visible = 1;
        uv_poll_start(&repl.poll, UV_READABLE, on_stdin);
        return 0;
    }
    write_all(stdout, prompt, strlen(prompt));
    if (repl.file_input)
        uv_idle_start(&repl.idle, on_file_idle);
    else if (!plain_try_line())
        uv_poll_start(&repl.poll, UV_READABLE, on_stdin);
    return 0;
}

/* cancel_input() -> true if a prompt was out: Ctrl-C at the prompt drops the typed line and takes
 * the prompt down; nothing is delivered. False when no prompt was out or its line is on its way. */
static int l_cancel_input(lua_State *L)
{
    check_started(L);
    lua_pushboolean(L, repl.reading && !repl.ready_set);
    if (!repl.reading || repl.ready_set)
        return 1;
    repl.reading = 0;
    if (repl.tty) {
        rl_point = rl_end;
        rl_redisplay(); /* so ^C follows what was typed */
        fputs("^C\n", rl_outstream);
        fflush(rl_outstream);
        rl_replace_line("", 1);
        rl_free_line_state();
        rl_callback_sigcleanup();
        rl_callback_handler_remove();
        repl.prompt_visible = 0;
    } else {
        write_all(stdout, "\n", 1);
    }
    if (!repl.file_input)
        uv_poll_stop(&repl.poll);
    uv_idle_stop(&repl.idle);
    return 1;
}

/* write(stream, s): stream 1 (stdout) or 2 (stderr); output goes above the prompt. */
static int l_write(lua_State *L)
{
    lua_Integer stream = luaL_checkinteger(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    luaL_argcheck(L, stream == 1 || stream == 2, 1, "stream must be 1 (stdout) or 2 (stderr)");
    if (stream == 2)
        fflush(stdout);
    repl_write(stream == 1 ? stdout : stderr, s, len);
    return 0;
}

static int l_stop(lua_State *L)
{
    (void)L;
    stop_repl();
    return 0;
}

static int l_is_tty(lua_State *L)
{
    lua_pushboolean(L, isatty(STDIN_FILENO) && isatty(STDOUT_FILENO));
    return 1;
}

static int history_fail(lua_State *L, int err, const char *path)
{
    return sacm_fail(L, err == ENOENT ? "ENOENT" : "EIO", "history file %s: %s", path, strerror(err));
}

/* load_history(path, max) -> true | nil, err: keeps at most max entries in memory. */
static int l_load_history(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer max = luaL_checkinteger(L, 2);
    luaL_argcheck(L, max > 0 && max <= 1000000, 2, "max must be between 1 and 1000000");
    using_history();
    stifle_history((int)max);
    int err = read_history(path);
    if (err != 0)
        return history_fail(L, err, path);
    lua_pushboolean(L, 1);
    return 1;
}

/* add_history(line [, path, max]) -> true | nil, err: remembers the line, and appends it to the
 * file (created mode 0600: lines may hold secrets), which is cut to its last max entries. */
static int l_add_history(lua_State *L)
{
    const char *line = luaL_checkstring(L, 1);
    const char *path = luaL_optstring(L, 2, NULL);
    lua_Integer max = luaL_optinteger(L, 3, 1000);
    add_history(line);
    if (path) {
        int err = append_history(1, path);
        if (err == ENOENT)
            err = write_history(path);
        if (err == 0)
            err = history_truncate_file(path, (int)max);
        if (err != 0)
            return history_fail(L, err, path);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_gc(lua_State *L)
{
    (void)L;
    stop_repl();
    return 0;
}

int luaopen_sacm__repl(lua_State *L);
int luaopen_sacm__repl(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"start", l_start},
        {"read", l_read},
        {"cancel_input", l_cancel_input},
        {"write", l_write},
        {"stop", l_stop},
        {"is_tty", l_is_tty},
        {"load_history", l_load_history},
        {"add_history", l_add_history},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    /* a sentinel whose finalizer puts the terminal back even if Lua never called stop() */
    lua_newuserdatauv(L, 0, 0);
    if (luaL_newmetatable(L, REPL_MT)) {
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "_sentinel");
    return 1;
}
