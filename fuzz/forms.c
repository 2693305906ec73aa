/* fuzz/forms.c: data-form parsing and validation (lua/sacm/xmpp/forms.lua) as command providers do
 * it, checked by fuzz/forms.lua against the grid's command forms. */
#include "harness.h"

FUZZ_LUA_TARGET("forms.lua")
