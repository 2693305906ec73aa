/* fuzz/xml_roundtrip.c: sacm.xml's parser and serializer (runtime/xml.c, xml_write.c), checked
 * as a pair by fuzz/xml_roundtrip.lua: parse, serialize, re-parse, compare. */
#include "harness.h"

FUZZ_LUA_TARGET("xml_roundtrip.lua")
