/* xml_internal.h: what xml.c (element model, parser) and xml_write.c (serializer) share. */
#ifndef SACM_XML_INTERNAL_H
#define SACM_XML_INTERNAL_H
#include <lua.h>

#define XML_NS_URI "http://www.w3.org/XML/1998/namespace"
#define XMLNS_NS_URI "http://www.w3.org/2000/xmlns/"

/* Deep enough for any document, shallow enough for the C stack: the serializer recurses once
 * per level, and parse() caps a caller's max_depth here so that everything it returns
 * serializes. */
#define SACM_XML_MAX_DEPTH 1000

/* Pushes a metatable whose __gc and __close are both `closer` (one idempotent release). */
void sacm_xml_resource_mt(lua_State *L, const char *name, lua_CFunction closer);

/* serialize(el [, opts]) -> string; also the elements' __tostring. */
int sacm_xml_serialize(lua_State *L);

/* clean_text(s [, max_bytes]) -> string, replaced, cut */
int sacm_xml_clean_text(lua_State *L);

#endif
