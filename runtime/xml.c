/* xml.c: the element model shared by sacm.xml and the XMPP code, a namespace-aware parser on
 * expat that builds element tables as expat calls back, and a validating serializer.
 *
 * An element is {name=, ns=, attr={}, child1, child2, ...} with the registry's SACM_ELEMENT_MT
 * as metatable; children are element tables or strings. See docs/api/xml.md. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <expat.h>
#include "sacmrun.h"

#define XML_NS_URI "http://www.w3.org/XML/1998/namespace"
#define XMLNS_NS_URI "http://www.w3.org/2000/xmlns/"
#define PARSER_MT "sacm.xml.parser"
#define OUTBUF_MT "sacm.xml.buffer"

#define DEFAULT_MAX_DEPTH 256
#define DEFAULT_MAX_BYTES (16 * 1024 * 1024)
/* Deep enough for any document, shallow enough for the C stack (the serializer recurses once
 * per level). parse() caps a caller's max_depth here too, so every tree it returns can be
 * serialized, and a huge max_depth still gives an error return instead of a Lua stack
 * overflow (parse keeps one stack slot per open element). */
#define SERIALIZE_MAX_DEPTH 1000
/* The tree parse() builds may cost at most MEMORY_FACTOR times the document's size plus
 * MEMORY_SLACK (Lua bytes, counted by the allocator), unless opts.max_memory says otherwise.
 * Without a bound, 16 MiB of "<b/>" becomes 4 million tables, about 1 GB. A typical stanza
 * costs 5-11 times its size; the slack covers the fixed cost of small documents. */
#define MEMORY_FACTOR 8
#define MEMORY_SLACK (1024 * 1024)

/* ------------------------------------------------------------------------------------------ */
/* Metatables. Each is created on first use, so C code (the XMPP side) can push elements before
 * anyone has required sacm._xml. */

static int l_serialize(lua_State *L);

static void push_element_mt(lua_State *L)
{
    if (luaL_newmetatable(L, SACM_ELEMENT_MT)) {
        lua_newtable(L); /* the methods; lua/sacm/xml.lua fills them in */
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_serialize);
        lua_setfield(L, -2, "__tostring");
    }
}

/* Pushes a metatable whose __gc and __close are both `closer` (one idempotent release). */
static void push_resource_mt(lua_State *L, const char *name, lua_CFunction closer)
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

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    parser_ud *p = ud;
    lua_State *L = p->L;
    if (p->stopped)
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

static lua_Integer opt_int_field(lua_State *L, int idx, const char *key, lua_Integer def,
                                 lua_Integer min)
{
    lua_getfield(L, idx, key);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        int ok;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min)
            luaL_error(L, "parse: opts.%s must be an integer >= %d", key, (int)min);
    }
    lua_pop(L, 1);
    return v;
}

/* parse(s [, opts]) -> element | nil, err */
static int l_parse(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer max_depth = DEFAULT_MAX_DEPTH, max_bytes = DEFAULT_MAX_BYTES, max_memory = -1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        max_depth = opt_int_field(L, 2, "max_depth", DEFAULT_MAX_DEPTH, 1);
        max_bytes = opt_int_field(L, 2, "max_bytes", DEFAULT_MAX_BYTES, 0);
        max_memory = opt_int_field(L, 2, "max_memory", -1, 0);
    }
    if (max_depth > SERIALIZE_MAX_DEPTH)
        max_depth = SERIALIZE_MAX_DEPTH;
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
    push_resource_mt(L, PARSER_MT, parser_close);
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

/* ------------------------------------------------------------------------------------------ */
/* Serializing.
 *
 * The output goes to a growable buffer in a to-be-closed userdata rather than a luaL_Buffer: a
 * luaL_Buffer must find its box at the top of the stack at every operation, while this walk keeps
 * the elements it is inside of on the stack. Errors (bad data is a programmer error) simply raise;
 * closing the slot frees the memory. */

typedef struct outbuf {
    char *p;
    size_t n, cap;
    XML_Parser probe; /* checks non-ASCII names (see name_parses), made on first need */
    char *probe_doc;
    size_t probe_cap;
} outbuf;

static int outbuf_close(lua_State *L)
{
    outbuf *b = luaL_checkudata(L, 1, OUTBUF_MT);
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    if (b->probe) {
        XML_ParserFree(b->probe);
        b->probe = NULL;
    }
    free(b->probe_doc);
    b->probe_doc = NULL;
    b->probe_cap = 0;
    return 0;
}

typedef struct ser {
    lua_State *L;
    outbuf *b;
    const char *indent; /* NULL: compact output */
    size_t indentlen;
} ser;

static void out_add(ser *S, const char *s, size_t n)
{
    outbuf *b = S->b;
    if (n == 0)
        return;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2)
                luaL_error(S->L, "serialize: output too large");
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        if (!np)
            luaL_error(S->L, "not enough memory");
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

#define out_lit(S, lit) out_add((S), (lit), sizeof(lit) - 1)

static void out_newline(ser *S, int depth)
{
    out_lit(S, "\n");
    for (int i = 0; i < depth; i++)
        out_add(S, S->indent, S->indentlen);
}

/* Decodes one UTF-8 sequence (shortest form, no surrogates, at most U+10FFFF).
 * Returns its length, or 0 when the bytes are not valid UTF-8. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* XML 1.0 Char production. */
static int is_xml_char(uint32_t c)
{
    return c == 0x9 || c == 0xA || c == 0xD || (c >= 0x20 && c <= 0xD7FF) ||
           (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

/* XML 1.0 (fifth edition) NameStartChar and NameChar, without ':' (names here are NCNames:
 * namespaces are carried by ns and attribute keys, never by prefixes). */
static int is_name_start(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
           (c >= 0xC0 && c <= 0xD6) || (c >= 0xD8 && c <= 0xF6) || (c >= 0xF8 && c <= 0x2FF) ||
           (c >= 0x370 && c <= 0x37D) || (c >= 0x37F && c <= 0x1FFF) ||
           (c >= 0x200C && c <= 0x200D) || (c >= 0x2070 && c <= 0x218F) ||
           (c >= 0x2C00 && c <= 0x2FEF) || (c >= 0x3001 && c <= 0xD7FF) ||
           (c >= 0xF900 && c <= 0xFDCF) || (c >= 0xFDF0 && c <= 0xFFFD) ||
           (c >= 0x10000 && c <= 0xEFFFF);
}

static int is_name_char(uint32_t c)
{
    return is_name_start(c) || c == '-' || c == '.' || (c >= '0' && c <= '9') || c == 0xB7 ||
           (c >= 0x300 && c <= 0x36F) || (c >= 0x203F && c <= 0x2040);
}

static int is_ncname(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    if (n == 0)
        return 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_decode(u + i, n - i, &cp);
        if (k == 0 || !(i == 0 ? is_name_start(cp) : is_name_char(cp)))
            return 0;
        i += k;
    }
    return 1;
}

/* Expat classifies non-ASCII name characters by the tables of XML 1.0 fourth edition, which
 * allow fewer than the fifth edition's ranges above (U+10000 and up, U+2070, U+F900, ... are
 * refused). So that everything serialize() writes parses back, a non-ASCII name that passes
 * is_ncname is also shown to expat itself, as "<name/>". Such names are rare; ASCII names never
 * get here. Returns 1 when expat accepts the name. */
static int name_parses(ser *S, const char *name, size_t n)
{
    outbuf *b = S->b;
    if (n > SIZE_MAX / 2 || n + 3 > (size_t)INT_MAX)
        return 0;
    if (!b->probe) {
        b->probe = XML_ParserCreate("UTF-8");
        if (!b->probe)
            luaL_error(S->L, "not enough memory");
    } else if (!XML_ParserReset(b->probe, "UTF-8")) {
        luaL_error(S->L, "serialize: cannot reset the name-checking parser");
    }
    if (b->probe_cap < n + 3) {
        char *d = realloc(b->probe_doc, n + 3);
        if (!d)
            luaL_error(S->L, "not enough memory");
        b->probe_doc = d;
        b->probe_cap = n + 3;
    }
    b->probe_doc[0] = '<';
    memcpy(b->probe_doc + 1, name, n);
    memcpy(b->probe_doc + 1 + n, "/>", 2);
    return XML_Parse(b->probe, b->probe_doc, (int)(n + 3), XML_TRUE) == XML_STATUS_OK;
}

/* A name serialize() may write: an NCName that expat will read back. */
static int ser_name_ok(ser *S, const char *s, size_t n)
{
    if (!is_ncname(s, n))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return name_parses(S, s, n);
    return 1;
}

/* A printable rendering of untrusted bytes for error messages: cut short, controls and
 * non-ASCII shown as \xHH so the message itself stays clean. */
static const char *shown(char *out, size_t outsz, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < outsz; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outsz - o, "\\x%02X", c);
    }
    if (o + 8 >= outsz && outsz > 4)
        memcpy(out + o, "...", 4), o += 3;
    out[o] = '\0';
    return out;
}

/* What a value belongs to, for error messages. */
typedef struct where {
    const char *elname;
    size_t elnamelen;
    const char *what; /* "text", "attribute", "namespace" */
    const char *key;  /* attribute name, or NULL */
    size_t keylen;
} where;

static int bad_value(ser *S, const where *w, const char *problem)
{
    char el[64], key[64];
    shown(el, sizeof el, w->elname, w->elnamelen);
    if (w->key) {
        shown(key, sizeof key, w->key, w->keylen);
        return luaL_error(S->L, "serialize: %s in %s '%s' of <%s>", problem, w->what, key, el);
    }
    return luaL_error(S->L, "serialize: %s in %s of <%s>", problem, w->what, el);
}

/* Appends s escaped as text (attr = 0) or as a double-quoted attribute value (attr = 1), raising
 * unless it is UTF-8 made of XML 1.0 characters. \r (and in attributes \t \n) become character
 * references so a parser's line-end and attribute normalisation gives back the same string. */
static void out_escaped(ser *S, const char *s, size_t n, int attr, const where *w)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = u[i];
        const char *rep = NULL;
        if (c >= 0x80) {
            uint32_t cp = 0;
            size_t k = utf8_decode(u + i, n - i, &cp);
            char problem[64];
            if (k == 0) {
                snprintf(problem, sizeof problem, "invalid UTF-8 at byte %zu", i + 1);
                bad_value(S, w, problem);
            }
            if (!is_xml_char(cp)) {
                snprintf(problem, sizeof problem, "character U+%04X not allowed in XML", cp);
                bad_value(S, w, problem);
            }
            i += k;
            continue;
        }
        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break; /* always, so "]]>" never appears */
        case '"': rep = attr ? "&quot;" : NULL; break;
        case '\r': rep = "&#13;"; break;
        case '\n': rep = attr ? "&#10;" : NULL; break;
        case '\t': rep = attr ? "&#9;" : NULL; break;
        default:
            if (c < 0x20) {
                char problem[64];
                snprintf(problem, sizeof problem, "character U+%04X not allowed in XML", c);
                bad_value(S, w, problem);
            }
        }
        i++;
        if (rep) {
            out_add(S, s + run, i - 1 - run);
            out_add(S, rep, strlen(rep));
            run = i;
        }
    }
    out_add(S, s + run, n - run);
}

static int is_ws_only(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return 0;
    return 1;
}

static int rawget_field(lua_State *L, int idx, const char *k)
{
    lua_pushstring(L, k);
    return lua_rawget(L, idx);
}

typedef struct akey {
    const char *s;
    size_t n;
} akey;

static int akey_cmp(const void *a, const void *b)
{
    const akey *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

static int bad_element(ser *S, const char *pname, size_t pnamelen, lua_Integer pos,
                       const char *problem)
{
    char p[64];
    if (!pname)
        return luaL_error(S->L, "serialize: %s (the root element)", problem);
    shown(p, sizeof p, pname, pnamelen);
    return luaL_error(S->L, "serialize: %s (child %I of <%s>)", problem, pos, p);
}

/* Attributes in sorted key order, so output is stable whatever the table's iteration order.
 * "URI local" keys get generated prefixes ns1, ns2... declared on this element; sorting keeps
 * keys with the same URI together. */
static void ser_attributes(ser *S, int attr_idx, const char *name, size_t namelen)
{
    lua_State *L = S->L;
    size_t count = 0;
    char buf[64], problem[160];
    lua_pushnil(L);
    while (lua_next(L, attr_idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            snprintf(problem, sizeof problem, "attribute key of type %s on <%s>",
                     luaL_typename(L, -2), shown(buf, sizeof buf, name, namelen));
            luaL_error(L, "serialize: %s", problem);
        }
        count++;
        lua_pop(L, 1);
    }
    if (count == 0)
        return;
    akey *keys = lua_newuserdatauv(L, count * sizeof *keys, 0);
    int keys_idx = lua_gettop(L);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, attr_idx)) {
        /* Pointers stay valid: the keys are held by the attr table, which is on the stack. */
        keys[i].s = lua_tolstring(L, -2, &keys[i].n);
        i++;
        lua_pop(L, 1);
    }
    qsort(keys, count, sizeof *keys, akey_cmp);

    const char *prev_uri = NULL;
    size_t prev_urilen = 0;
    int nprefix = 0;
    for (i = 0; i < count; i++) {
        const char *k = keys[i].s;
        size_t kn = keys[i].n;
        where w = { name, namelen, "attribute", k, kn };
        const char *sp = memchr(k, ' ', kn);
        char prefix[24];
        const char *local = k;
        size_t locallen = kn;
        prefix[0] = '\0';
        if (sp) {
            size_t urilen = (size_t)(sp - k);
            local = sp + 1;
            locallen = kn - urilen - 1;
            if (urilen == 0 || !ser_name_ok(S, local, locallen))
                bad_value(S, &w, "invalid namespaced attribute key (expected 'URI localname')");
            if (urilen == sizeof XML_NS_URI - 1 && memcmp(k, XML_NS_URI, urilen) == 0)
                bad_value(S, &w, "XML namespace attribute spelt out (use 'xml:name')");
            if (urilen == sizeof XMLNS_NS_URI - 1 && memcmp(k, XMLNS_NS_URI, urilen) == 0)
                bad_value(S, &w, "namespace declaration (set el.ns instead)");
            if (!prev_uri || prev_urilen != urilen || memcmp(prev_uri, k, urilen) != 0) {
                nprefix++;
                snprintf(prefix, sizeof prefix, "ns%d", nprefix);
                out_lit(S, " xmlns:");
                out_add(S, prefix, strlen(prefix));
                out_lit(S, "=\"");
                where wu = { name, namelen, "namespace of attribute", k, kn };
                out_escaped(S, k, urilen, 1, &wu);
                out_lit(S, "\"");
                prev_uri = k;
                prev_urilen = urilen;
            }
            snprintf(prefix, sizeof prefix, "ns%d", nprefix);
        } else if (kn > 4 && memcmp(k, "xml:", 4) == 0) {
            local = k + 4;
            locallen = kn - 4;
            if (!ser_name_ok(S, local, locallen))
                bad_value(S, &w, "invalid name");
            memcpy(prefix, "xml", 4);
        } else if (!ser_name_ok(S, k, kn)) {
            bad_value(S, &w, memchr(k, ':', kn)
                                 ? "invalid name (namespaced attributes are keyed 'URI localname')"
                                 : "invalid name");
        } else if (kn == 5 && memcmp(k, "xmlns", 5) == 0) {
            bad_value(S, &w, "namespace declaration (set el.ns instead)");
        }

        lua_pushlstring(L, k, kn);
        int t = lua_rawget(L, attr_idx);
        if (t != LUA_TSTRING && t != LUA_TNUMBER) {
            snprintf(problem, sizeof problem, "value of type %s", lua_typename(L, t));
            bad_value(S, &w, problem);
        }
        size_t vn;
        const char *v = lua_tolstring(L, -1, &vn); /* converts a number on the stack only */
        out_lit(S, " ");
        if (prefix[0]) {
            out_add(S, prefix, strlen(prefix));
            out_lit(S, ":");
        }
        out_add(S, local, locallen);
        out_lit(S, "=\"");
        out_escaped(S, v, vn, 1, &w);
        out_lit(S, "\"");
        lua_pop(L, 1);
    }
    lua_remove(L, keys_idx);
}

/* Writes the element at idx. pns is the default namespace in scope (NULL: none), inl is
 * set inside mixed content where pretty-printing must not add whitespace. */
static void ser_element(ser *S, int idx, const char *pns, size_t pnslen, int depth, int inl,
                        const char *pname, size_t pnamelen, lua_Integer pos)
{
    lua_State *L = S->L;
    char problem[160], buf[64];
    if (depth >= SERIALIZE_MAX_DEPTH) {
        snprintf(problem, sizeof problem, "nesting too deep or cyclic (over %d levels)",
                 SERIALIZE_MAX_DEPTH);
        luaL_error(L, "serialize: %s", problem);
    }
    luaL_checkstack(L, 12, "serialize");
    int top = lua_gettop(L);

    if (lua_type(L, idx) != LUA_TTABLE) {
        snprintf(problem, sizeof problem, "expected an element, got %s", luaL_typename(L, idx));
        bad_element(S, pname, pnamelen, pos, problem);
    }
    size_t namelen;
    if (rawget_field(L, idx, "name") != LUA_TSTRING)
        bad_element(S, pname, pnamelen, pos, "element without a string name");
    const char *name = lua_tolstring(L, -1, &namelen);
    if (!ser_name_ok(S, name, namelen)) {
        snprintf(problem, sizeof problem, "invalid element name '%s'",
                 shown(buf, sizeof buf, name, namelen));
        bad_element(S, pname, pnamelen, pos, problem);
    }

    const char *ns = NULL;
    size_t nslen = 0;
    int t = rawget_field(L, idx, "ns");
    if (t == LUA_TSTRING) {
        ns = lua_tolstring(L, -1, &nslen);
        if (nslen == 0)
            ns = NULL; /* "" is no namespace, as in xmlns="" */
    } else if (t != LUA_TNIL) {
        snprintf(problem, sizeof problem, "ns of <%s> is a %s, not a string",
                 shown(buf, sizeof buf, name, namelen), lua_typename(L, t));
        luaL_error(L, "serialize: %s", problem);
    }

    /* dns: the default namespace in scope for the children. An element in the XML namespace
     * (parse() gives one for <xml:e/>) is written with the prefix xml, which is bound by
     * definition: Namespaces in XML 1.0 forbids declaring that namespace as the default, and
     * parsers refuse xmlns="http://www.w3.org/XML/1998/namespace". It leaves the default as
     * it was. The xmlns namespace cannot hold elements at all (no prefix may be bound to it),
     * so parse() never returns one and serialize() refuses it. */
    const char *dns = ns;
    size_t dnslen = nslen;
    int xml_prefix = ns && nslen == sizeof XML_NS_URI - 1 && memcmp(ns, XML_NS_URI, nslen) == 0;
    out_lit(S, "<");
    if (xml_prefix) {
        dns = pns;
        dnslen = pnslen;
        out_lit(S, "xml:");
        out_add(S, name, namelen);
    } else if (ns && (!pns || pnslen != nslen || memcmp(pns, ns, nslen) != 0)) {
        out_add(S, name, namelen);
        where w = { name, namelen, "namespace", NULL, 0 };
        if (memchr(ns, ' ', nslen))
            bad_value(S, &w, "space character");
        if (nslen == sizeof XMLNS_NS_URI - 1 && memcmp(ns, XMLNS_NS_URI, nslen) == 0)
            bad_value(S, &w, "reserved namespace name (no element can be in the xmlns namespace)");
        out_lit(S, " xmlns=\"");
        out_escaped(S, ns, nslen, 1, &w);
        out_lit(S, "\"");
    } else if (!ns && pns) {
        out_add(S, name, namelen);
        out_lit(S, " xmlns=\"\"");
    } else {
        out_add(S, name, namelen);
    }

    t = rawget_field(L, idx, "attr");
    if (t == LUA_TTABLE) {
        ser_attributes(S, lua_gettop(L), name, namelen);
    } else if (t != LUA_TNIL) {
        snprintf(problem, sizeof problem, "attr of <%s> is a %s, not a table",
                 shown(buf, sizeof buf, name, namelen), lua_typename(L, t));
        luaL_error(L, "serialize: %s", problem);
    }
    lua_pop(L, 1);

    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    int mixed = 0, has_elements = 0;
    if (S->indent && !inl) {
        for (lua_Integer i = 1; i <= n && !mixed; i++) {
            int ct = lua_rawgeti(L, idx, i);
            if (ct == LUA_TTABLE) {
                has_elements = 1;
            } else if (ct == LUA_TSTRING || ct == LUA_TNUMBER) {
                size_t sn;
                const char *s = lua_tolstring(L, -1, &sn);
                mixed = !is_ws_only(s, sn);
            }
            lua_pop(L, 1);
        }
    }
    /* Block layout only for element-only content: whitespace text there is replaced by our
     * indentation. Anything with real text is written exactly as it is. */
    int block = S->indent && !inl && has_elements && !mixed;

    if (n == 0) {
        out_lit(S, "/>");
        lua_settop(L, top);
        return;
    }
    out_lit(S, ">");
    for (lua_Integer i = 1; i <= n; i++) {
        int ct = lua_rawgeti(L, idx, i);
        if (ct == LUA_TSTRING || ct == LUA_TNUMBER) {
            size_t sn;
            const char *s = lua_tolstring(L, -1, &sn);
            if (!(block && is_ws_only(s, sn))) {
                where w = { name, namelen, "text", NULL, 0 };
                out_escaped(S, s, sn, 0, &w);
            }
        } else if (ct == LUA_TTABLE) {
            if (block)
                out_newline(S, depth + 1);
            ser_element(S, lua_gettop(L), dns, dnslen, depth + 1, inl || mixed, name, namelen, i);
        } else {
            snprintf(problem, sizeof problem, "child %d of <%s> is a %s (expected an element or a string)",
                     (int)i, shown(buf, sizeof buf, name, namelen), lua_typename(L, ct));
            luaL_error(L, "serialize: %s", problem);
        }
        lua_pop(L, 1);
    }
    if (block)
        out_newline(S, depth);
    out_lit(S, "</");
    if (xml_prefix)
        out_lit(S, "xml:");
    out_add(S, name, namelen);
    out_lit(S, ">");
    lua_settop(L, top);
}

/* serialize(el [, opts]) -> string; also the elements' __tostring. */
static int l_serialize(lua_State *L)
{
    ser S;
    S.L = L;
    S.indent = NULL;
    S.indentlen = 0;
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_getfield(L, 2, "indent");
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "serialize: opts.indent must be a string");
            S.indent = lua_tolstring(L, -1, &S.indentlen);
            for (size_t i = 0; i < S.indentlen; i++)
                if (S.indent[i] != ' ' && S.indent[i] != '\t')
                    return luaL_error(L, "serialize: opts.indent may only hold spaces and tabs");
        }
    } else if (!lua_isnoneornil(L, 2)) {
        /* __tostring passes only the element; anything else here is a mistake */
        return luaL_typeerror(L, 2, "table or nil");
    }
    int el_idx = 1;
    S.b = lua_newuserdatauv(L, sizeof *S.b, 0);
    memset(S.b, 0, sizeof *S.b);
    push_resource_mt(L, OUTBUF_MT, outbuf_close);
    lua_setmetatable(L, -2);
    lua_toclose(L, -1);
    ser_element(&S, el_idx, NULL, 0, 0, 0, NULL, 0, 0);
    lua_pushlstring(L, S.b->p ? S.b->p : "", S.b->n);
    return 1; /* returning closes the buffer */
}

/* ------------------------------------------------------------------------------------------ */
/* clean_text(s [, max_bytes]) -> string, replaced, cut
 *
 * Makes any string valid XML 1.0 character data, so content never makes serialize() raise:
 * each byte that is not part of a valid UTF-8 sequence, and each character XML 1.0 forbids
 * (C0 controls other than tab, LF and CR; U+FFFE, U+FFFF), becomes U+FFFD. With max_bytes the
 * result is cut to at most that many bytes, at a character boundary. replaced counts the
 * substitutions; cut says whether anything was left off. */
#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

static int l_clean_text(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer max = luaL_optinteger(L, 2, -1);
    if (!lua_isnoneornil(L, 2) && max < 0)
        return luaL_argerror(L, 2, "max_bytes must be >= 0");
    size_t limit = max < 0 ? SIZE_MAX : (size_t)max;
    const unsigned char *u = (const unsigned char *)s;

    /* The common case, text that is already clean and short enough, is returned as it is. */
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_decode(u + i, n - i, &cp);
        if (k == 0 || !is_xml_char(cp))
            break;
        i += k;
    }
    if (i == n && n <= limit) {
        lua_settop(L, 1);
        lua_pushinteger(L, 0);
        lua_pushboolean(L, 0);
        return 3;
    }

    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t out = 0, replaced = 0;
    int cut = 0;
    i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_decode(u + i, n - i, &cp);
        const char *piece = s + i;
        size_t plen = k;
        int bad = k == 0 || !is_xml_char(cp);
        if (bad) {
            piece = REPLACEMENT;
            plen = sizeof REPLACEMENT - 1;
            k = k ? k : 1; /* an invalid byte is replaced on its own; the next may start a char */
        }
        if (plen > limit - out) {
            cut = 1;
            break;
        }
        replaced += (size_t)bad;
        luaL_addlstring(&b, piece, plen);
        out += plen;
        i += k;
    }
    luaL_pushresult(&b);
    lua_pushinteger(L, (lua_Integer)replaced);
    lua_pushboolean(L, cut);
    return 3;
}

int luaopen_sacm__xml(lua_State *L)
{
    static const luaL_Reg fns[] = {
        { "parse", l_parse },
        { "serialize", l_serialize },
        { "clean_text", l_clean_text },
        { NULL, NULL },
    };
    luaL_newlib(L, fns);
    push_element_mt(L);
    lua_setfield(L, -2, "metatable");
    lua_pushstring(L, XML_ExpatVersion());
    lua_setfield(L, -2, "expat_version");
    return 1;
}
