/* fuzz/stanza_table.c: received stanzas as Lua tables (runtime/xmpp.c). libstrophe parses the
 * input with the parser its streams use (xmpp_stanza_new_from_string), the runtime's
 * conversion turns the stanza into an element table, and fuzz/stanza_table.lua checks the table
 * and what the runtime does with stanzas (serialize, reply, error replies). A conversion may
 * refuse a stanza only for its depth or a namespace that is no URI (stanza_handler then drops it
 * with a warning). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strophe.h>
#include "../runtime/xmpp_link.h"
#include "harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static xmpp_ctx_t *ctx;
static int target;
static char *text;
static size_t text_cap;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL); /* no logger: libstrophe's complaints are not findings */
    if (ctx == NULL)
        abort();
    target = fuzz_lua_target("stanza_table.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_begin_input();
    if (size + 1 > text_cap) {
        text_cap = size + 1;
        text = realloc(text, text_cap);
        if (text == NULL)
            abort();
    }
    memcpy(text, data, size); /* libstrophe takes a C string: a NUL ends the input */
    text[size] = '\0';
    xmpp_stanza_t *stanza = xmpp_stanza_new_from_string(ctx, text);
    if (stanza == NULL)
        return 0;
    lua_State *L = fuzz_state();
    int top = lua_gettop(L);
    lua_pushcfunction(L, sacm_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, target);
    lua_pushcfunction(L, sacm_xmpp_convert_stanza);
    lua_pushlightuserdata(L, stanza);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL || (strstr(msg, "stanza nested deeper than") == NULL && strstr(msg, "is not a URI") == NULL))
            fuzz_fail(L, "converting a stanza");
        lua_settop(L, top);
        xmpp_stanza_release(stanza);
        return 0;
    }
    xmpp_stanza_release(stanza);
    lua_pushlstring(L, text, strlen(text)); /* what libstrophe parsed, for the messages */
    if (lua_pcall(L, 2, 0, top + 1) != LUA_OK)
        fuzz_fail(L, "stanza_table.lua");
    lua_settop(L, top);
    return 0;
}
