/* xml.c: the element model shared by sacm.xml and the XMPP code, and a namespace-aware parser
 * on expat that builds element tables as expat calls back. The serializer and clean_text are in
 * xml_write.c.
 *
 * An element is {name=, ns=, attr={}, child1, child2, ...} with the registry's SACM_ELEMENT_MT
 * as metatable; children are element tables or strings. See docs/api/xml.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <expat.h>
#include "sacmrun.h"
#include "options.h"
#include "xml_internal.h"

#define PARSER_MT "sacm.xml.parser"

#define DEFAULT_MAX_DEPTH 256
#define DEFAULT_MAX_BYTES (16 * 1024 * 1024)
/* The tree parse() builds may cost at most MEMORY_FACTOR times the document's size plus
 * MEMORY_SLACK (Lua bytes, counted by the allocator), unless opts.max_memory says otherwise.
 * Without a bound, 16 MiB of "<b/>" becomes 4 million tables, about 1 GB. A typical stanza
 * costs 5-11 times its size; the slack covers the fixed cost of small documents. */
#define MEMORY_FACTOR 8
#define MEMORY_SLACK (1024 * 1024)

/* ------------------------------------------------------------------------------------------ */
/* Metatables. Each is created on first use, so C code (the XMPP side) can push elements before
 * anyone has required sacm._xml. */

static void push_element_mt(lua_State *L)
{
    if (luaL_newmetatable(L, SACM_ELEMENT_MT)) {
        lua_newtable(L); /* the methods; lua/sacm/xml.lua fills them in */
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, sacm_xml_serialize);
        lua_setfield(L, -2, "__tostring");
    }
}

/* Pushes a metatable whose __gc and __close are both `closer` (one idempotent release). */
void sacm_xml_resource_mt(lua_State *L, const char *name, lua_CFunction closer)
{
    if (luaL_newmetatable(L, name)) {
        lua_pushcfunction(L, closer);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, closer);
        lua_setfield(L, -2, "__close");
    }
}

/* Expects the element metatable at mt_idx (0: look it up). */
static void element_push(lua_State *L, int mt_idx, const char *name, size_t namelen,
                         const char *ns, size_t nslen)
{
    lua_createtable(L, 0, ns ? 3 : 2); /* 2 hash slots instead of 4 for most elements */
    lua_pushlstring(L, name, namelen);
    lua_setfield(L, -2, "name");
    if (ns) {
        lua_pushlstring(L, ns, nslen);
        lua_setfield(L, -2, "ns");
    }
    lua_newtable(L);
    lua_setfield(L, -2, "attr");
    if (mt_idx)
        lua_pushvalue(L, mt_idx);
    else
        push_element_mt(L);
    lua_setmetatable(L, -2);
}

void sacm_element_mt_push(lua_State *L)
{
    push_element_mt(L);
}

void sacm_element_push(lua_State *L, const char *name, const char *ns)
{
    luaL_checkstack(L, 4, "sacm_element_push");
    element_push(L, 0, name, strlen(name), ns, ns ? strlen(ns) : 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Parsing.
 *
 * Expat is never unwound by a Lua error: every piece of Lua work a callback does runs inside
 * lua_pcall, and a failure only records itself and stops the parser. The open elements live on
 * parse()'s own stack frame (root lowest), so building needs no registry references. The
 * parser and the pending-text buffer sit in a userdata whose __gc/__close frees them, in case
 * parse() itself raises between creating the parser and finishing. */

typedef struct parser_ud {
    XML_Parser xp;
    lua_State *L;
    char *text; /* character data not yet stored: adjacent pieces merge here */
    size_t textlen, textcap;
    int depth, max_depth;
    size_t mem_base, max_memory; /* Lua bytes in use when parsing began, and the budget */
    int stopped;  /* no more callbacks may touch Lua */
    int mt_idx, result_idx, err_idx; /* slots in parse()'s frame */
    int lua_failed; /* a Lua error object waits at err_idx */
    int oom;
    const char *fail_cond; /* our own refusal (policy), message in fail_msg */
    char fail_msg[128];
    unsigned long fail_line, fail_col;
    const XML_Char *cur_name; /* the start tag being built, for build_start */
    const XML_Char **cur_atts;
} parser_ud;

static int parser_close(lua_State *L)
{
    parser_ud *p = luaL_checkudata(L, 1, PARSER_MT);
    if (p->xp) {
        XML_ParserFree(p->xp);
        p->xp = NULL;
    }
    free(p->text);
    p->text = NULL;
    p->textlen = p->textcap = 0;
    return 0;
}

/* Columns are reported 1-based like lines (expat counts columns from 0). */
static void parser_where(parser_ud *p, unsigned long *line, unsigned long *col)
{
    *line = (unsigned long)XML_GetCurrentLineNumber(p->xp);
    *col = (unsigned long)XML_GetCurrentColumnNumber(p->xp) + 1;
}

static void parser_refuse(parser_ud *p, const char *condition, const char *msg)
{
    if (p->stopped)
        return;
    p->stopped = 1;
    p->fail_cond = condition;
    snprintf(p->fail_msg, sizeof p->fail_msg, "%s", msg);
    parser_where(p, &p->fail_line, &p->fail_col);
    XML_StopParser(p->xp, XML_FALSE);
}

/* Called with the error object of a failed lua_pcall on top. */
static void parser_lua_failed(parser_ud *p)
{
    lua_State *L = p->L;
    lua_copy(L, -1, p->err_idx);
    lua_pop(L, 1);
    p->lua_failed = 1;
    p->stopped = 1;
    XML_StopParser(p->xp, XML_FALSE);
}

static size_t lua_bytes(lua_State *L)
{
    return (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
}

/* Refuses the document once the tree (plus the pending-text buffer) outgrows its budget. The
 * count can only overstate what the tree costs: anything else freed meanwhile lowers it. */
static int over_budget(parser_ud *p)
{
    size_t now = lua_bytes(p->L) + p->textcap;
    if (now <= p->mem_base || now - p->mem_base <= p->max_memory)
        return 0;
    char msg[128];
    snprintf(msg, sizeof msg, "the tree needs more than %zu bytes of memory (max_memory)",
             p->max_memory);
    parser_refuse(p, "policy-violation", msg);
    return 1;
}

/* Appends the pending text to the element at idx as one string child. May raise. */
static void flush_text(lua_State *L, parser_ud *p, int idx)
{
    if (p->textlen == 0)
        return;
    lua_pushlstring(L, p->text, p->textlen);
    lua_rawseti(L, idx, (lua_Integer)lua_rawlen(L, idx) + 1);
    p->textlen = 0;
}

/* Protected: (p, parent|nil, metatable) -> the element for p->cur_name/cur_atts, appended to
 * parent. The metatable comes as an argument: parse()'s slots are out of reach from this frame. */
static int build_start(lua_State *L)
{
    parser_ud *p = lua_touserdata(L, 1);
    int has_parent = !lua_isnil(L, 2);
    if (has_parent)
        flush_text(L, p, 2);

    /* expat joins namespace and local name with our ' ' separator; a URI cannot contain it
     * (expat rejects such declarations) and a local name cannot either. */
    const char *name = p->cur_name;
    const char *sep = strchr(name, ' ');
    if (sep)
        element_push(L, 3, sep + 1, strlen(sep + 1), name, (size_t)(sep - name));
    else
        element_push(L, 3, name, strlen(name), NULL, 0);

    const XML_Char **atts = p->cur_atts;
    if (atts[0]) {
        lua_getfield(L, -1, "attr");
        for (; atts[0]; atts += 2) {
            const char *key = atts[0];
            if (strncmp(key, XML_NS_URI " ", sizeof XML_NS_URI) == 0)
                lua_pushfstring(L, "xml:%s", key + sizeof XML_NS_URI);
            else
                lua_pushstring(L, key);
            lua_pushstring(L, atts[1]);
            lua_rawset(L, -3);
        }
        lua_pop(L, 1);
    }
    if (has_parent) {
        lua_pushvalue(L, -1);
        lua_rawseti(L, 2, (lua_Integer)lua_rawlen(L, 2) + 1);
    }
    return 1;
}

/* Protected: (p, element) stores the pending text in element. */
static int build_text(lua_State *L)
{
    flush_text(L, lua_touserdata(L, 1), 2);
    return 0;
}

/* Expat reads ISO-8859-1 documents with a table that takes U+00AA, U+00B5 and U+00BA (ª µ º) as
 * letters in names; XML 1.0 and expat's own UTF-8 tables do not, so serialize() could not write
 * such a name back. Returns the offending character of the local part of a name ("uri local" or
 * "local"), or 0. */
static unsigned latin1_only_name_char(const char *name)
{
    const char *sep = strchr(name, ' ');
    const unsigned char *u = (const unsigned char *)(sep ? sep + 1 : name);
    for (; *u; u++)
        if (u[0] == 0xC2 && (u[1] == 0xAA || u[1] == 0xB5 || u[1] == 0xBA))
            return u[1];
    return 0;
}

static int refuse_latin1_names(parser_ud *p, const XML_Char *name, const XML_Char **atts)
{
    const char *bad = latin1_only_name_char(name) ? name : NULL;
    for (; !bad && atts[0]; atts += 2)
        if (latin1_only_name_char(atts[0]))
            bad = atts[0];
    if (!bad)
        return 0;
    const char *sep = strchr(bad, ' ');
    char msg[160];
    snprintf(msg, sizeof msg, "the name '%.80s' holds U+00%02X, which XML 1.0 allows in no name", sep ? sep + 1 : bad,
             latin1_only_name_char(bad));
    parser_refuse(p, "not-well-formed", msg);
    return 1;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    parser_ud *p = ud;
    lua_State *L = p->L;
    if (p->stopped || refuse_latin1_names(p, name, atts))
        return;
    if (p->depth >= p->max_depth) {
        char msg[96];
        snprintf(msg, sizeof msg, "elements nested more than %d deep (max_depth)", p->max_depth);
        parser_refuse(p, "policy-violation", msg);
        return;
    }
    /* One slot stays per open element, plus room for the call below. lua_checkstack reports
     * failure instead of raising, which expat could not survive. */
    if (!lua_checkstack(L, 8)) {
        parser_refuse(p, "policy-violation", "elements nested too deeply for the Lua stack");
        return;
    }
    p->cur_name = name;
    p->cur_atts = atts;
    lua_pushcfunction(L, build_start);
    lua_pushlightuserdata(L, p);
    if (p->depth > 0)
        lua_pushvalue(L, -3);
    else
        lua_pushnil(L);
    lua_pushvalue(L, p->mt_idx);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        parser_lua_failed(p);
        return;
    }
    if (p->depth == 0)
        lua_copy(L, -1, p->result_idx);
    p->depth++;
    over_budget(p);
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    parser_ud *p = ud;
    lua_State *L = p->L;
    (void)name;
    if (p->stopped)
        return;
    if (p->textlen > 0) {
        if (!lua_checkstack(L, 4)) {
            parser_refuse(p, "policy-violation", "elements nested too deeply for the Lua stack");
            return;
        }
        lua_pushcfunction(L, build_text);
        lua_pushlightuserdata(L, p);
        lua_pushvalue(L, -3);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            parser_lua_failed(p);
            return;
        }
        if (over_budget(p))
            return;
    }
    lua_pop(L, 1);
    p->depth--;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    parser_ud *p = ud;
    if (p->stopped || p->depth == 0 || len <= 0)
        return;
    size_t need = p->textlen + (size_t)len;
    if (need > p->textcap) {
        size_t cap = p->textcap ? p->textcap : 256;
        while (cap < need)
            cap *= 2;
        char *t = realloc(p->text, cap);
        if (!t) {
            p->oom = 1;
            p->stopped = 1;
            XML_StopParser(p->xp, XML_FALSE);
            return;
        }
        p->text = t;
        p->textcap = cap;
    }
    memcpy(p->text + p->textlen, s, (size_t)len);
    p->textlen = need;
}

/* No DTDs at all: this rules out external entities (XXE) and entity-expansion bombs, and RFC
 * 6120 forbids them in XMPP anyway. Stopping at the DOCTYPE means no declaration is ever read. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
    parser_refuse(ud, "restricted-xml", "DOCTYPE declarations are not allowed");
}

/* Belt and braces: unreachable while on_doctype stops first. */
static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_param,
                                   const XML_Char *value, int value_len, const XML_Char *base,
                                   const XML_Char *sysid, const XML_Char *pubid,
                                   const XML_Char *notation)
{
    (void)name, (void)is_param, (void)value, (void)value_len, (void)base, (void)sysid;
    (void)pubid, (void)notation;
    parser_refuse(ud, "restricted-xml", "entity declarations are not allowed");
}

/* parse(s [, opts]) -> element | nil, err */
static int l_parse(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer max_depth = DEFAULT_MAX_DEPTH, max_bytes = DEFAULT_MAX_BYTES, max_memory = -1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        max_depth = sacm_opt_integer(L, 2, "xml.parse", "max_depth", DEFAULT_MAX_DEPTH, 1);
        max_bytes = sacm_opt_integer(L, 2, "xml.parse", "max_bytes", DEFAULT_MAX_BYTES, 0);
        max_memory = sacm_opt_integer(L, 2, "xml.parse", "max_memory", -1, 0);
    }
    /* Capped at the serializer's depth, so every tree parse() returns can be serialized, and a
     * huge max_depth still gives an error return instead of overflowing the Lua stack (parse
     * keeps one stack slot per open element). */
    if (max_depth > SACM_XML_MAX_DEPTH)
        max_depth = SACM_XML_MAX_DEPTH;
    if (max_memory < 0) /* len <= max_bytes, a lua_Integer: no overflow on 64-bit size_t */
        max_memory = (lua_Integer)(MEMORY_FACTOR * len + MEMORY_SLACK);
    lua_settop(L, 2);
    if ((lua_Unsigned)len > (lua_Unsigned)max_bytes) {
        char msg[96]; /* sacm_fail formats like lua_pushfstring, which has no %zu */
        snprintf(msg, sizeof msg, "document of %zu bytes exceeds the limit of %lld bytes", len,
                 (long long)max_bytes);
        return sacm_fail(L, "policy-violation", "%s", msg);
    }

    push_element_mt(L); /* 3 */
    lua_pushnil(L);     /* 4: the root element */
    lua_pushnil(L);     /* 5: a Lua error raised while building */
    parser_ud *p = lua_newuserdatauv(L, sizeof *p, 0); /* 6 */
    memset(p, 0, sizeof *p);
    sacm_xml_resource_mt(L, PARSER_MT, parser_close);
    lua_setmetatable(L, -2);
    lua_toclose(L, 6);
    p->L = L;
    p->max_depth = (int)max_depth;
    p->max_memory = (size_t)max_memory;
    p->mem_base = lua_bytes(L);
    p->mt_idx = 3;
    p->result_idx = 4;
    p->err_idx = 5;
    p->xp = XML_ParserCreateNS(NULL, ' ');
    if (!p->xp)
        return luaL_error(L, "not enough memory");
    XML_SetUserData(p->xp, p);
    XML_SetElementHandler(p->xp, on_start, on_end);
    XML_SetCharacterDataHandler(p->xp, on_text);
    XML_SetStartDoctypeDeclHandler(p->xp, on_doctype);
    XML_SetEntityDeclHandler(p->xp, on_entity_decl);
    XML_SetParamEntityParsing(p->xp, XML_PARAM_ENTITY_PARSING_NEVER);
    /* Comments and processing instructions have no handler, so expat drops them. */

    /* XML_Parse takes an int length; feed larger documents in pieces. */
    enum XML_Status st = XML_STATUS_OK;
    size_t off = 0;
    do {
        size_t chunk = len - off;
        if (chunk > (size_t)1 << 30)
            chunk = (size_t)1 << 30;
        st = XML_Parse(p->xp, s + off, (int)chunk, off + chunk == len);
        off += chunk;
    } while (st == XML_STATUS_OK && off < len);

    if (p->lua_failed) {
        lua_pushvalue(L, 5);
        return lua_error(L); /* closing slot 6 frees the parser */
    }
    if (p->oom || (st != XML_STATUS_OK && XML_GetErrorCode(p->xp) == XML_ERROR_NO_MEMORY))
        return luaL_error(L, "not enough memory"); /* not the document's fault */
    const char *cond = p->fail_cond;
    unsigned long line = p->fail_line, col = p->fail_col;
    if (!cond && st != XML_STATUS_OK) {
        cond = "not-well-formed";
        parser_where(p, &line, &col);
        snprintf(p->fail_msg, sizeof p->fail_msg, "%s", XML_ErrorString(XML_GetErrorCode(p->xp)));
    }
    if (cond) {
        char msg[sizeof p->fail_msg];
        memcpy(msg, p->fail_msg, sizeof msg);
        lua_settop(L, 6);
        lua_closeslot(L, 6); /* free expat now, before building the error */
        sacm_fail(L, cond, "%s at line %d, column %d", msg, (int)line, (int)col);
        lua_pushinteger(L, (lua_Integer)line);
        lua_setfield(L, -2, "line");
        lua_pushinteger(L, (lua_Integer)col);
        lua_setfield(L, -2, "column");
        return 2;
    }
    lua_pushvalue(L, 4);
    return 1;
}

int luaopen_sacm__xml(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "parse", l_parse },
        { "serialize", sacm_xml_serialize },
        { "clean_text", sacm_xml_clean_text },
        { NULL, NULL },
    };
    luaL_newlib(L, fns);
    push_element_mt(L);
    lua_setfield(L, -2, "metatable");
    lua_pushstring(L, XML_ExpatVersion());
    lua_setfield(L, -2, "expat_version");
    return 1;
}
