/* sacm._dns: name resolution on libuv's threadpool. libstrophe's own getaddrinfo would block
 * the loop, so connections resolve here first and hand libstrophe a numeric address. */
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <arpa/inet.h>
#include "sacmrun.h"

typedef struct {
    uv_getaddrinfo_t req;
    int cb_ref;
} resolve_req;

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_req *r = req->data;
    lua_State *L = sacm_take_callback(&r->cb_ref);
    if (L == NULL) {
        /* the state is closing: the answer goes with the request */
    } else if (status < 0) {
        lua_pushnil(L);
        sacm_push_uv_error(L, status, "resolve");
        sacm_invoke(L, 2);
    } else {
        /* Unique addresses in resolver order (it already sorts by RFC 6724 preference). */
        lua_newtable(L);
        int n = 0;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            char text[INET6_ADDRSTRLEN];
            const void *addr = ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                                                         : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                inet_ntop(ai->ai_family, addr, text, sizeof text) == NULL)
                continue;
            int seen = 0;
            for (int i = 1; i <= n && !seen; i++) {
                lua_rawgeti(L, -1, i);
                seen = strcmp(lua_tostring(L, -1), text) == 0;
                lua_pop(L, 1);
            }
            if (!seen) {
                lua_pushstring(L, text);
                lua_rawseti(L, -2, ++n);
            }
        }
        sacm_invoke(L, 1);
    }
    uv_freeaddrinfo(res);
    free(r);
}

/* resolve(host, callback): callback({addresses}) or callback(nil, err) */
static int l_resolve(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    resolve_req *r = malloc(sizeof *r);
    if (r == NULL)
        return luaL_error(L, "out of memory");
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    lua_pushvalue(L, 2);
    r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    r->req.data = r;
    int rc = uv_getaddrinfo(sacm_loop(), &r->req, on_resolved, host, NULL, &hints);
    if (rc < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, r->cb_ref);
        free(r);
        return sacm_fail_uv(L, rc, host);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* is_ip(text) -> "ipv4" | "ipv6" | nil */
static int l_is_ip(lua_State *L)
{
    const char *text = luaL_checkstring(L, 1);
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, text, buf) == 1)
        lua_pushliteral(L, "ipv4");
    else if (inet_pton(AF_INET6, text, buf) == 1)
        lua_pushliteral(L, "ipv6");
    else
        lua_pushnil(L);
    return 1;
}

int luaopen_sacm__dns(lua_State *L)
{
    static const luaL_Reg fns[] = {{"resolve", l_resolve}, {"is_ip", l_is_ip}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
