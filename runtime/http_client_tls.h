/* The HTTPS client's TLS configuration (http_client_tls.c), apart from the byte pump in
 * http_client.c: which CAs and client certificate a context carries, and which server name or
 * address a connection's certificate must show. */
#ifndef SACM_HTTP_CLIENT_TLS_H
#define SACM_HTTP_CLIENT_TLS_H

#include <lua.h>
#include <openssl/ssl.h>
#include "tls_stream.h"

typedef struct {
    SSL_CTX *ctx;
    int verify;
} context_box;

/* The client's OpenSSL failures: any step may see the peer go away. */
#define SSL_FAILURE_TEXT(out) ssl_error_text(out, sizeof out, "the connection ended unexpectedly")

/* Lua: context{cafile=, cert=, key=, insecure=} -> ctx, or nil, err (tls-config) */
int client_tls_context(lua_State *L);
/* Registers the context type (call once, from luaopen). */
void client_tls_define_context(lua_State *L);
context_box *client_tls_check_context(lua_State *L, int idx);
/* Sets SNI and what the server's certificate must name (host: a DNS name or an IP literal) on a
 * new connection's SSL; -1 with OpenSSL's error queue set when host is not usable. */
int client_tls_expect(SSL *ssl, const context_box *box, const char *host);

#endif
