/* Internal interfaces shared by the files of the C core. Each file under runtime/ owns one concern;
 * this header is the only place they meet. */
#ifndef SACMRUN_H
#define SACMRUN_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#define SACMRUN_VERSION "0.1.0"

#if defined(__GNUC__)
#define SACM_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define SACM_PRINTF(fmt, args)
#endif

/* ---- log.c: one sink for the runtime, Lua code and (later) libstrophe ---- */
enum sacm_log_level {
    SACM_LOG_ERROR = 0,
    SACM_LOG_WARN,
    SACM_LOG_INFO,
    SACM_LOG_DEBUG,
    SACM_LOG_TRACE
};
void sacm_log(int level, const char *area, const char *fmt, ...) SACM_PRINTF(3, 4);
void sacm_log_write(int level, const char *area, const char *msg, size_t len);
/* Where formatted records go instead of stderr (the REPL, to keep its prompt intact); NULL
 * restores stderr. The record ends with a newline. */
typedef void (*sacm_log_sink)(const char *record, size_t len);
void sacm_log_set_sink(sacm_log_sink sink);
int sacm_log_enabled(int level);
int sacm_log_level_from_name(const char *name); /* -1 when the name is unknown */
void sacm_log_set_level(int level);
int luaopen_sacm__log(lua_State *L);

/* ---- error.c: the one error type expected failures carry ({condition, text, ...}) ---- */
#define SACM_ERROR_MT "sacm.Error"
/* Pushes an error object and returns it at the top; the caller usually wants sacm_fail. */
void sacm_push_error(lua_State *L, const char *condition, const char *fmt, ...) SACM_PRINTF(3, 4);
/* Pushes nil and an error object; returns 2 so a C function can `return sacm_fail(...)`. */
int sacm_fail(lua_State *L, const char *condition, const char *fmt, ...) SACM_PRINTF(3, 4);
/* The same for a libuv status: condition is uv_err_name (ECONNREFUSED), text names the context. */
int sacm_fail_uv(lua_State *L, int status, const char *context);
void sacm_push_uv_error(lua_State *L, int status, const char *context);
int luaopen_sacm__error(lua_State *L);

/* ---- state.c: the Lua state, module paths, protected calls ---- */
lua_State *sacm_state_new(const char *argv0);
lua_State *sacm_main_state(void);
/* Message handler for lua_pcall: turns the error into "message\nstack traceback:...". */
int sacm_msgh(lua_State *L);
/* Calls the function below the nargs arguments on top of the main state's stack through the
 * task dispatcher, so tasks it makes ready run before control returns to libuv. An error is
 * logged with its traceback and never propagates into libuv. Pops the function and arguments. */
void sacm_invoke(lua_State *L, int nargs);
/* Pushes the function stored at ref and calls it with nargs arguments already on the stack. */
void sacm_invoke_ref(lua_State *L, int ref, int nargs);
/* For a request the threadpool or resolver finished: the main state with the request's Lua
 * callback pushed and *ref released, or NULL while the state closes (nobody is left to tell). */
lua_State *sacm_take_callback(int *ref);

/* ---- memlimit.c: the state's counting allocator, with a temporary limit (sacm._mem) ---- */
/* A new Lua state whose every block comes from the counting allocator (with lauxlib's panic and
 * warning behaviour), or NULL. */
lua_State *sacm_memlimit_newstate(void);
int luaopen_sacm__mem(lua_State *L);


/* ---- loop.c: the libuv loop, signals, shutdown ---- */
uv_loop_t *sacm_loop(void);
int sacm_loop_init(void);
/* Runs the loop until no handle keeps it alive or a stop is requested. */
void sacm_loop_run(void);
/* Closes every handle still open and the loop itself; returns how many had to be closed forcibly. */
int sacm_loop_close(void);
/* While set, SIGINT calls fn instead of starting a shutdown (and a second one does not exit):
 * the REPL uses Ctrl-C to clear its line or cancel the running one. NULL restores the default. */
void sacm_loop_set_interrupt_handler(void (*fn)(void));
int luaopen_sacm__loop(lua_State *L);
/* True once lua_close has begun: finalizers must not touch the registry or call Lua then. */
int sacm_state_closing(void);
void sacm_state_set_closing(void);

/* ---- handle.c: a libuv handle owned by a Lua userdata ----
 * The userdata holds only a pointer. The handle's memory lives until libuv's close callback,
 * which may run after the userdata was collected, so callbacks never see freed memory. */
typedef struct sacm_handle {
    union {
        uv_handle_t handle;
        uv_timer_t timer;
        uv_signal_t signal;
        uv_fs_event_t fs_event;
    } uv;
    int self_ref; /* LUA_NOREF unless active: an active handle keeps its userdata alive */
    int cb_ref;   /* the Lua callback */
    uint64_t not_before_ns; /* one-shot timers: uv_hrtime() before which they must not fire */
} sacm_handle;

/* Pushes a new userdata of type tname pointing at a zeroed sacm_handle (not yet uv-initialised). */
sacm_handle *sacm_handle_new(lua_State *L, const char *tname);
/* Returns the open handle at idx or raises "attempt to use a closed <tname>". */
sacm_handle *sacm_handle_check(lua_State *L, int idx, const char *tname);
void sacm_handle_set_callback(lua_State *L, sacm_handle *h, int idx);
/* Keeps the userdata at idx alive (and so the handle) while it is active. */
void sacm_handle_hold(lua_State *L, sacm_handle *h, int idx);
void sacm_handle_release(lua_State *L, sacm_handle *h);
/* __gc / __close / :close(): idempotent; frees the memory once libuv is done with it. */
int sacm_handle_close_lua(lua_State *L);
/* Marks the handle for libuv's closing from C (for handles that failed to initialise). */
void sacm_handle_discard(sacm_handle *h, int uv_initialised);
/* Registers a userdata type: metatable tname with the methods as __index and `close` as both
 * __gc and __close. Leaves the metatable on the stack for further fields (__tostring). */
void sacm_define_type(lua_State *L, const char *tname, const luaL_Reg *methods, lua_CFunction close);

/* ---- the Lua modules implemented in C (preloaded by state.c) ---- */
int luaopen_sacm__timer(lua_State *L);
int luaopen_sacm__proc(lua_State *L);
int luaopen_sacm__fs(lua_State *L);
int luaopen_sacm__watch(lua_State *L);
int luaopen_sacm__xml(lua_State *L);
int luaopen_sacm__crypto(lua_State *L);
int luaopen_sacm__x509(lua_State *L);
int luaopen_sacm__dns(lua_State *L);
int luaopen_sacm__xmpp(lua_State *L);
int luaopen_sacm__sqlite(lua_State *L);
int luaopen_sacm__pg(lua_State *L);
int luaopen_sacm__http(lua_State *L);
int luaopen_sacm__http_client(lua_State *L);

/* ---- xml.c: the element model shared by sacm.xml and the XMPP code ----
 * An element is a plain table {name=, ns=, attr={}, child1, child2, ...}: ns is the effective
 * namespace URI (nil for none), attr holds plain attributes by name, namespaced ones keyed
 * "URI localname" and xml:lang as "xml:lang"; children are element tables or strings. */
#define SACM_ELEMENT_MT "sacm.Element"
/* Pushes a new element with an empty attr table and the element metatable; ns may be NULL. */
void sacm_element_push(lua_State *L, const char *name, const char *ns);
/* Pushes the metatable of elements (for C code that builds many, see xmpp.c). */
void sacm_element_mt_push(lua_State *L);

#endif
