/* Table-driven tests of C helpers that Lua cannot drive piece by piece: the options reader
 * (runtime/options.c) and the header accumulation the HTTP server and client share
 * (runtime/http_common.c), fed by the real http-parser with the message cut at every byte.
 * Run by `make test-c` (part of `make test`), built with ASan and UBSan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <http_parser.h>
#include <lauxlib.h>
#include <lualib.h>
#include "../../runtime/http_common.h"
#include "../../runtime/options.h"
#include "check.h"


/* ---- options ---- */

enum kind { INTEGER, STRING, BOOLEAN };

typedef struct {
    const char *name;
    const char *table;  /* Lua constructor of the options table */
    enum kind kind;
    const char *field;
    lua_Integer def, min;
    int required;
    const char *want;   /* the value as text, or the error message */
    int raises;
} option_case;

static const option_case option_cases[] = {
    {"integer given", "{port = 443}", INTEGER, "port", 0, 0, 0, "443", 0},
    {"integer absent takes the default", "{}", INTEGER, "port", 80, 0, 0, "80", 0},
    {"integer float with integer value", "{port = 8.0}", INTEGER, "port", 0, 0, 0, "8", 0},
    {"integer below min", "{n = 0}", INTEGER, "n", 5, 1, 0,
     "t: option n must be an integer >= 1, got 0", 1},
    {"integer fraction", "{n = 1.5}", INTEGER, "n", 5, 1, 0,
     "t: option n must be an integer >= 1, got 1.5", 1},
    {"integer as string", "{n = '3'}", INTEGER, "n", 5, 1, 0, "3", 0},
    {"integer of wrong type", "{n = {}}", INTEGER, "n", 5, 1, 0,
     "t: option n must be an integer >= 1, got table", 1},
    {"string given", "{host = 'a.example'}", STRING, "host", 0, 0, 0, "a.example", 0},
    {"string absent", "{}", STRING, "host", 0, 0, 0, "(null)", 0},
    {"string absent but required", "{}", STRING, "file", 0, 0, 1,
     "t: option file must be a string, got nil", 1},
    {"string with a NUL byte", "{file = 'a\\0b'}", STRING, "file", 0, 0, 0,
     "t: option file contains a NUL byte", 1},
    {"string given a number", "{file = 5}", STRING, "file", 0, 0, 0,
     "t: option file must be a string, got number", 1},
    {"boolean true", "{tls = true}", BOOLEAN, "tls", 0, 0, 0, "1", 0},
    {"boolean absent", "{}", BOOLEAN, "tls", 0, 0, 0, "0", 0},
    {"boolean any value is true", "{tls = 0}", BOOLEAN, "tls", 0, 0, 0, "1", 0},
};

static int run_option_case(lua_State *L)
{
    const option_case *c = lua_touserdata(L, 1);
    char out[64];
    switch (c->kind) {
    case INTEGER:
        snprintf(out, sizeof out, "%lld", (long long)sacm_opt_integer(L, 2, "t", c->field, c->def, c->min));
        break;
    case STRING: {
        const char *s = sacm_opt_string(L, 2, "t", c->field, c->required);
        snprintf(out, sizeof out, "%s", s ? s : "(null)");
        break;
    }
    case BOOLEAN:
        snprintf(out, sizeof out, "%d", sacm_opt_boolean(L, 2, c->field));
        break;
    }
    lua_pushstring(L, out);
    return 1;
}

static void test_options(void)
{
    lua_State *L = luaL_newstate();
    for (size_t i = 0; i < sizeof option_cases / sizeof *option_cases; i++) {
        const option_case *c = &option_cases[i];
        int top = lua_gettop(L);
        char chunk[128];
        snprintf(chunk, sizeof chunk, "return %s", c->table);
        if (luaL_dostring(L, chunk) != LUA_OK) {
            fail(c->name, lua_tostring(L, -1));
            lua_settop(L, top);
            continue;
        }
        lua_pushcfunction(L, run_option_case);
        lua_pushlightuserdata(L, (void *)c);
        lua_pushvalue(L, -3);
        int rc = lua_pcall(L, 2, 1, 0);
        const char *got = lua_tostring(L, -1);
        if ((rc != LUA_OK) != c->raises)
            fail(c->name, c->raises ? "did not raise" : got);
        else if (got == NULL || strcmp(got, c->want) != 0) {
            char detail[256];
            snprintf(detail, sizeof detail, "got '%s', want '%s'", got ? got : "?", c->want);
            fail(c->name, detail);
        }
        if (lua_gettop(L) != top + 2)
            fail(c->name, "the stack was left unbalanced");
        lua_settop(L, top);
    }
    lua_close(L);
}

/* ---- HTTP headers ---- */

typedef struct {
    buffer head;
    header_list headers;
    int max, status;
} parse_state;

static int on_field(http_parser *p, const char *at, size_t len)
{
    parse_state *s = p->data;
    s->status = headers_add_field(&s->headers, &s->head, at, len, s->max);
    return s->status != HEADERS_OK;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    parse_state *s = p->data;
    s->status = headers_add_value(&s->headers, &s->head, at, len);
    return s->status != HEADERS_OK;
}

typedef struct {
    const char *name;
    const char *message;
    int max_headers;
    int want_status;   /* HEADERS_OK, HEADERS_TOO_MANY, ... */
    const char *want;  /* the headers as Lua sees them: "name=value;" in order of first appearance */
} header_case;

static const header_case header_cases[] = {
    {"names lowercased", "GET / HTTP/1.1\r\nHost: a\r\nX-Long-Name: Value\r\n\r\n", 10, HEADERS_OK,
     "host=a;x-long-name=Value;"},
    {"repeated fields joined", "GET / HTTP/1.1\r\nAccept: a\r\nHost: h\r\nACCEPT: b\r\n\r\n", 10, HEADERS_OK,
     "accept=a, b;host=h;"},
    {"empty value", "GET / HTTP/1.1\r\nX-Empty:\r\nHost: h\r\n\r\n", 10, HEADERS_OK, "x-empty=;host=h;"},
    {"at the limit", "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", 2, HEADERS_OK, "a=1;b=2;"},
    {"one beyond the limit", "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 2, HEADERS_TOO_MANY, NULL},
};

/* The headers of s as "name=value;" pairs, through headers_push (what Lua receives). */
static void render(lua_State *L, parse_state *s, char *out, size_t size)
{
    headers_push(L, &s->headers, s->head.p);
    out[0] = '\0';
    /* walk names in the order of the message (a Lua table has none) */
    char seen[256] = "";
    for (int i = 0; i < s->headers.n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)s->headers.spans[i].name_len, s->head.p + s->headers.spans[i].name_off);
        char key[70];
        snprintf(key, sizeof key, "|%s|", name);
        if (strstr(seen, key))
            continue;
        strncat(seen, key, sizeof seen - strlen(seen) - 1);
        lua_getfield(L, -1, name);
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s=%s;", name, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void test_headers(void)
{
    lua_State *L = luaL_newstate();
    http_parser_settings settings;
    memset(&settings, 0, sizeof settings);
    settings.on_header_field = on_field;
    settings.on_header_value = on_value;
    for (size_t i = 0; i < sizeof header_cases / sizeof *header_cases; i++) {
        const header_case *c = &header_cases[i];
        size_t len = strlen(c->message);
        /* the same message cut in two at every byte: pieces of names and values must join */
        for (size_t cut = 0; cut <= len; cut++) {
            parse_state s;
            memset(&s, 0, sizeof s);
            s.max = c->max_headers;
            http_parser p;
            http_parser_init(&p, HTTP_REQUEST);
            p.data = &s;
            size_t n = http_parser_execute(&p, &settings, c->message, cut);
            if (n == cut && s.status == HEADERS_OK)
                http_parser_execute(&p, &settings, c->message + cut, len - cut);
            char detail[512];
            if (s.status != c->want_status) {
                snprintf(detail, sizeof detail, "cut at %zu: status %d, want %d", cut, s.status, c->want_status);
                fail(c->name, detail);
            } else if (c->want) {
                char got[256];
                render(L, &s, got, sizeof got);
                if (strcmp(got, c->want) != 0) {
                    snprintf(detail, sizeof detail, "cut at %zu: got '%s', want '%s'", cut, got, c->want);
                    fail(c->name, detail);
                }
            }
            headers_free(&s.headers);
            buf_free(&s.head);
        }
    }
    lua_close(L);
}

int main(void)
{
    test_options();
    test_headers();
    char passed[120];
    snprintf(passed, sizeof passed, "%zu option cases, %zu header cases (each cut at every byte)",
             sizeof option_cases / sizeof *option_cases, sizeof header_cases / sizeof *header_cases);
    return finish("runtime_test", passed);
}
