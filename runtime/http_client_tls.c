/* The HTTPS client's TLS: contexts (CA file or the system store, a client certificate, or no
 * verification at all) and, per connection, the name or address the server must prove. Kept
 * apart from http_client.c, which only moves bytes through whatever SSL it is given, so that
 * what the client trusts can be read in one place. See http_client_tls.h. */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "sacmrun.h"
#include "options.h"
#include "http_client_tls.h"

#define CONTEXT_MT "sacm.HttpClientContext"

static int tls_config_fail(lua_State *L, SSL_CTX *ctx, const char *what, const char *path)
{
    char text[200];
    SSL_CTX_free(ctx);
    return sacm_fail(L, "tls-config", "%s %s: %s", what, path, SSL_FAILURE_TEXT(text));
}

static int l_context_gc(lua_State *L)
{
    context_box *box = luaL_checkudata(L, 1, CONTEXT_MT);
    SSL_CTX_free(box->ctx); /* requests hold their own reference through their SSL */
    box->ctx = NULL;
    return 0;
}

/* context{cafile=, cert=, key=, insecure=} -> ctx, or nil, err (tls-config). Without cafile the
 * system's trust store is used; insecure skips verification entirely. */
int client_tls_context(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *cafile = sacm_opt_string(L, 1, "http.client_tls", "cafile", 0);
    const char *cert = sacm_opt_string(L, 1, "http.client_tls", "cert", 0);
    const char *key = sacm_opt_string(L, 1, "http.client_tls", "key", 0);
    lua_getfield(L, 1, "insecure");
    int insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (key && cert == NULL)
        return luaL_error(L, "http: a client key needs its certificate (cert)");

    context_box *box = lua_newuserdatauv(L, sizeof *box, 0);
    box->ctx = NULL;
    box->verify = !insecure;
    luaL_setmetatable(L, CONTEXT_MT);

    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return tls_config_fail(L, NULL, "cannot create a TLS context", "");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cafile) {
            if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1)
                return tls_config_fail(L, ctx, "cannot load the CA file", cafile);
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            return tls_config_fail(L, ctx, "cannot load the system trust store", "");
        }
    }
    if (cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
            return tls_config_fail(L, ctx, "cannot load the client certificate", cert);
        if (SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1)
            return tls_config_fail(L, ctx, "cannot load the client key", key ? key : cert);
        if (SSL_CTX_check_private_key(ctx) != 1)
            return tls_config_fail(L, ctx, "the client key does not match the certificate", cert);
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    box->ctx = ctx;
    return 1;
}

void client_tls_define_context(lua_State *L)
{
    static const luaL_Reg no_methods[] = {{NULL, NULL}};
    sacm_define_type(L, CONTEXT_MT, no_methods, l_context_gc);
    lua_pop(L, 1);
}

context_box *client_tls_check_context(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CONTEXT_MT);
}

int client_tls_expect(SSL *ssl, const context_box *box, const char *host)
{
    unsigned char ip[sizeof(struct in6_addr)];
    int host_is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!host_is_ip && SSL_set_tlsext_host_name(ssl, host) != 1) /* SNI is for names only (RFC 6066 3) */
        return -1;
    if (!box->verify)
        return 0;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (host_is_ip)
        return X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1 ? 0 : -1;
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(ssl, host) == 1 ? 0 : -1;
}
