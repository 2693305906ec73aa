/* xml_write.c: the serializer behind sacm.xml.serialize (and elements' __tostring), the
 * checks that keep what it writes readable by parse() in xml.c, and clean_text. See
 * docs/api/xml.md. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <expat.h>
#include "sacmrun.h"
#include "xml_internal.h"

#define OUTBUF_MT "sacm.xml.buffer"

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
    if (depth >= SACM_XML_MAX_DEPTH) {
        snprintf(problem, sizeof problem, "nesting too deep or cyclic (over %d levels)",
                 SACM_XML_MAX_DEPTH);
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
int sacm_xml_serialize(lua_State *L)
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
    sacm_xml_resource_mt(L, OUTBUF_MT, outbuf_close);
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

int sacm_xml_clean_text(lua_State *L)
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

