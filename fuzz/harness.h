/* fuzz/harness.h: what the libFuzzer targets share. Each target is one fuzz/<name>.c; those that
 * check Lua code run fuzz/<name>.lua in one Lua state set up as the runtime's (state.c), with the
 * modules of sacmrun-crypto.so, -xmpp.so and -http.so linked in, so the real lua/sacm modules run unchanged. */
#ifndef SACM_FUZZ_HARNESS_H
#define SACM_FUZZ_HARNESS_H
#include <stddef.h>
#include <stdint.h>
#include <lua.h>

/* The runtime's Lua state (made on first call): standard libraries, the C modules, the loop,
 * and lua/ of the source tree on package.path. */
lua_State *fuzz_state(void);

/* Runs fuzz/<file> (FUZZ_DIR) in the state; it must return a function (or, for targets that
 * drive C code which calls back into Lua, a table of them). Returns a registry reference to it. Exits the process with a message when the file does not load. */
int fuzz_lua_target(const char *file);

/* Targets that call Lua themselves call this first for each input (Lua's coverage counts edges
 * between lines, and an input's first line must not pair with the last input's last line). */
void fuzz_begin_input(void);

/* Calls the function at ref with the input as a Lua string. Any error it raises is a finding:
 * the message and its traceback go to stderr and the process aborts, so libFuzzer keeps the
 * input. */
void fuzz_lua_run(int ref, const uint8_t *data, size_t size);

/* A Lua error raised by C code the target drives (a traceback is on top of the stack) is a
 * finding too: prints it and aborts. */
void fuzz_fail(lua_State *L, const char *what);

/* The whole of a target that only runs a Lua file: FUZZ_LUA_TARGET("forms.lua") defines
 * libFuzzer's entry points, which load the file once and call its function per input. */
#define FUZZ_LUA_TARGET(file)                                                                     \
    static int fuzz_target_ref;                                                                   \
    int LLVMFuzzerInitialize(int *argc, char ***argv);                                            \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                                 \
    int LLVMFuzzerInitialize(int *argc, char ***argv)                                             \
    {                                                                                             \
        (void)argc;                                                                               \
        (void)argv;                                                                               \
        fuzz_target_ref = fuzz_lua_target(file);                                                  \
        return 0;                                                                                 \
    }                                                                                             \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                                  \
    {                                                                                             \
        fuzz_lua_run(fuzz_target_ref, data, size);                                                \
        return 0;                                                                                 \
    }

#endif
