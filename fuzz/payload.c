/* fuzz/payload.c: the grid's payload codecs (lua/sacm/grid/payload.lua): decoding posture,
 * posture sets, results, result sets and status from any element, checked by fuzz/payload.lua. */
#include "harness.h"

FUZZ_LUA_TARGET("payload.lua")
