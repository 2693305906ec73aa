/* sacm._timer: libuv timers for Lua. Task sleep, timeouts and periodic work are built on this in
 * lua/sacm/task.lua and timer.lua. */
#include "sacmrun.h"

#define TIMER_MT "sacm.Timer"
#define MAX_EXACT_MS (366ULL * 24 * 3600 * 1000)

static void on_timer(uv_timer_t *timer)
{
    sacm_handle *h = timer->data;
    /* libuv measures timeouts on its millisecond loop clock, which lags the monotonic clock by up
     * to a millisecond or more (it is truncated, and may be the coarse clock): a one-shot timer
     * can come due early by that much. Wait out the rest rather than fire early. */
    if (h->not_before_ns) {
        uint64_t now = uv_hrtime();
        if (now < h->not_before_ns) {
            uv_update_time(sacm_loop());
            uv_timer_start(timer, on_timer, (h->not_before_ns - now + 999999) / 1000000, 0);
            return;
        }
        h->not_before_ns = 0;
    }
    lua_State *L = sacm_main_state();
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->cb_ref);
    /* A one-shot timer is done: let its userdata be collected once Lua drops it. The pushed
     * callback stays valid, and the memory lives until close_cb. */
    if (!uv_is_active((uv_handle_t *)timer))
        sacm_handle_release(L, h);
    sacm_invoke(L, 0);
}

static int l_new(lua_State *L)
{
    sacm_handle *h = sacm_handle_new(L, TIMER_MT);
    int rc = uv_timer_init(sacm_loop(), &h->uv.timer);
    if (rc < 0)
        return luaL_error(L, "uv_timer_init: %s", uv_strerror(rc));
    h->uv.timer.data = h;
    return 1;
}

static uint64_t check_ms(lua_State *L, int idx)
{
    lua_Integer ms = luaL_checkinteger(L, idx);
    luaL_argcheck(L, ms >= 0, idx, "must not be negative");
    return (uint64_t)ms;
}

/* timer:start(timeout_ms, repeat_ms, callback) */
static int l_start(lua_State *L)
{
    sacm_handle *h = sacm_handle_check(L, 1, TIMER_MT);
    uint64_t timeout = check_ms(L, 2);
    uint64_t repeat = check_ms(L, 3);
    sacm_handle_set_callback(L, h, 4);
    /* Lua may have run for a long time since the loop cached its clock: without this a timer
     * would be measured from that stale time and fire early. */
    uv_update_time(sacm_loop());
    /* (timeouts beyond a year stand for "never": no deadline, and no overflow in nanoseconds) */
    h->not_before_ns = (repeat == 0 && timeout > 0 && timeout < MAX_EXACT_MS) ? uv_hrtime() + timeout * 1000000 : 0;
    int rc = uv_timer_start(&h->uv.timer, on_timer, timeout, repeat);
    if (rc < 0)
        return luaL_error(L, "uv_timer_start: %s", uv_strerror(rc));
    sacm_handle_hold(L, h, 1);
    return 0;
}

static int l_stop(lua_State *L)
{
    sacm_handle *h = sacm_handle_check(L, 1, TIMER_MT);
    uv_timer_stop(&h->uv.timer);
    sacm_handle_release(L, h);
    return 0;
}

static int l_active(lua_State *L)
{
    luaL_checkudata(L, 1, TIMER_MT);
    sacm_handle *h = *(sacm_handle **)lua_touserdata(L, 1);
    lua_pushboolean(L, h != NULL && uv_is_active(&h->uv.handle));
    return 1;
}

/* timer:due_in() -> milliseconds until it fires (0 when inactive) */
static int l_due_in(lua_State *L)
{
    sacm_handle *h = sacm_handle_check(L, 1, TIMER_MT);
    lua_pushinteger(L, (lua_Integer)uv_timer_get_due_in(&h->uv.timer));
    return 1;
}

/* A background timer (a keepalive, say) need not keep the program running. */
static int l_unref(lua_State *L)
{
    sacm_handle *h = sacm_handle_check(L, 1, TIMER_MT);
    uv_unref(&h->uv.handle);
    return 0;
}

static int l_ref(lua_State *L)
{
    sacm_handle *h = sacm_handle_check(L, 1, TIMER_MT);
    uv_ref(&h->uv.handle);
    return 0;
}

int luaopen_sacm__timer(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"start", l_start},
        {"stop", l_stop},
        {"active", l_active},
        {"due_in", l_due_in},
        {"ref", l_ref},
        {"unref", l_unref},
        {"close", sacm_handle_close_lua},
        {NULL, NULL},
    };
    sacm_define_type(L, TIMER_MT, methods, sacm_handle_close_lua);
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {{"new", l_new}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
