/* libstrophe's stanzas as sacm.xml element tables: what every received stanza becomes before a
 * Lua handler sees it (runtime/xmpp.c's stanza handler, and fuzz/stanza_table.c). */
#include <string.h>
#include "xmpp_link.h"

#define MAX_STANZA_DEPTH 128

/* Every incoming stanza becomes a tree of element tables, so this is on the hot path of every
 * notification: tables are created at their final size, and the metatable and the field names
 * sit in stack slots for the whole tree (no registry or string-table lookups per element). */
enum { SLOT_MT = 2, SLOT_NAME, SLOT_NS, SLOT_ATTR, SLOT_FIRST_FREE };

/* lua_pushstring goes through Lua's cache of C string addresses, which rarely hits here (every
 * stanza's strings are new allocations) and costs two strcmp per miss: with the length, the
 * string goes straight to interning. */
static inline void push_text(lua_State *L, const char *s)
{
    lua_pushlstring(L, s, strlen(s));
}

/* Pushes the element for s. parent_ns: stack index of the inherited namespace string, or 0. */
static void push_stanza(lua_State *L, xmpp_stanza_t *s, int parent_ns, int depth)
{
    if (depth > MAX_STANZA_DEPTH)
        luaL_error(L, "stanza nested deeper than %d levels", MAX_STANZA_DEPTH);
    luaL_checkstack(L, 8, "stanza too deep");
    int nchildren = 0;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(s); c; c = xmpp_stanza_get_next(c))
        nchildren++;
    int count = xmpp_stanza_get_attribute_count(s);
    lua_createtable(L, nchildren, 3);
    int el = lua_gettop(L);
    const char *name = xmpp_stanza_get_name(s);
    lua_pushvalue(L, SLOT_NAME);
    push_text(L, name ? name : "");
    lua_rawset(L, el);

    const char *own_ns = xmpp_stanza_get_ns(s);
    /* libstrophe's parser takes any namespace; sacm.xml's, like XML Namespaces, takes URIs only
     * (no spaces). An element sacm.xml could neither parse nor serialize is not let in. */
    if (own_ns && strchr(own_ns, ' '))
        luaL_error(L, "namespace '%s' of <%s> is not a URI (it holds a space)", own_ns, name ? name : "");
    int ns = 0; /* stack index of this element's namespace, children inherit it */
    if (own_ns) {
        push_text(L, own_ns);
        ns = lua_gettop(L);
    } else if (parent_ns) {
        lua_pushvalue(L, parent_ns);
        ns = lua_gettop(L);
    }
    if (ns) {
        lua_pushvalue(L, SLOT_NS);
        lua_pushvalue(L, ns);
        lua_rawset(L, el);
    }

    lua_pushvalue(L, SLOT_ATTR);
    lua_createtable(L, 0, count);
    if (count > 0) {
        const char *small[32];
        const char **attrs = small;
        int size = count * 2;
        if (size > 32)
            attrs = lua_newuserdatauv(L, sizeof *attrs * (size_t)size, 0);
        int filled = xmpp_stanza_get_attributes(s, attrs, size);
        int attr = attrs != small ? -2 : -1;
        for (int i = 0; i + 1 < filled; i += 2) {
            const char *key = attrs[i];
            if (strcmp(key, "xmlns") == 0)
                continue;
            /* libstrophe drops attribute namespaces; in XMPP the only one in use is xml:lang */
            if (strcmp(key, "lang") == 0)
                key = "xml:lang";
            push_text(L, key);
            push_text(L, attrs[i + 1]);
            lua_rawset(L, attr - 2);
        }
        if (attrs != small)
            lua_pop(L, 1);
    }
    lua_rawset(L, el);
    lua_pushvalue(L, SLOT_MT);
    lua_setmetatable(L, el);

    lua_Integer n = 0;
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(s); c; c = xmpp_stanza_get_next(c)) {
        if (xmpp_stanza_is_text(c)) {
            const char *text = xmpp_stanza_get_text_ptr(c);
            if (text == NULL)
                continue;
            push_text(L, text);
        } else if (xmpp_stanza_is_tag(c)) {
            push_stanza(L, c, ns, depth + 1);
        } else {
            continue;
        }
        lua_rawseti(L, el, ++n);
    }
    lua_settop(L, el);
}

int sacm_xmpp_convert_stanza(lua_State *L)
{
    xmpp_stanza_t *s = lua_touserdata(L, 1);
    sacm_element_mt_push(L); /* SLOT_MT */
    lua_pushliteral(L, "name");
    lua_pushliteral(L, "ns");
    lua_pushliteral(L, "attr");
    push_stanza(L, s, 0, 0);
    return 1;
}
