/* http_tls.c: the HTTPS server's use of its connections' TLS streams (tls_stream.c: TLS over
 * memory BIOs, so nothing ever blocks): what a finished write means for the connection, what a
 * failed handshake or write does to it, the server's TLS context and the peer certificate as
 * Lua sees it (req.tls). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "http_server.h"

/* A write finished: the slow-reader deadline may become the idle one, and a connection that
 * stopped reading because the kernel held too much of its output may read again. */
static void on_write(uv_write_t *req, int status)
{
    conn_t *c = req->data;
    free(req);
    c->writes_pending--;
    if (c->closed)
        return;
    if (status < 0) {
        sacm_log(SACM_LOG_DEBUG, "http", "writing to %s:%d failed: %s", c->remote, c->remote_port,
                 uv_strerror(status));
        hs_conn_close(c);
        return;
    }
    if (c->writes_pending == 0 && c->state == ST_IDLE)
        hs_arm_timer(c); /* the slow-reader deadline becomes the idle deadline */
    if (c->write_blocked && c->tcp.write_queue_size <= WRITE_HIGH_WATER) {
        c->write_blocked = 0;
        hs_schedule(c);
    }
}

/* Sends whatever OpenSSL produced. */
void hs_flush(conn_t *c)
{
    if (c->closed)
        return;
    int rc = tls_stream_flush(&c->tls);
    if (rc < 0)
        hs_conn_close(c);
    else if (rc > 0)
        c->writes_pending++;
}

int hs_tls_write(conn_t *c, const char *data, size_t len)
{
    if (tls_stream_write(&c->tls, data, len) < 0) {
        sacm_log(SACM_LOG_DEBUG, "http", "TLS write to %s:%d failed: %s", c->remote, c->remote_port, c->tls.reason);
        return -1;
    }
    return 0;
}

int hs_handshake(conn_t *c)
{
    int rc = tls_stream_handshake(&c->tls);
    if (rc != TLS_STREAM_FAILED)
        return rc == TLS_STREAM_DONE;
    c->srv->tls_failures++;
    sacm_log(SACM_LOG_INFO, "http", "TLS handshake with %s:%d failed: %s", c->remote, c->remote_port, c->tls.reason);
    hs_flush(c); /* the alert tells the client why */
    hs_conn_finish(c);
    return 0;
}

void hs_push_tls_info(lua_State *L, conn_t *c)
{
    tls_stream_push_info(L, &c->tls, 1);
    X509 *cert = SSL_get0_peer_certificate(c->tls.ssl);
    if (cert == NULL || SSL_get_verify_result(c->tls.ssl) != X509_V_OK)
        return;
    lua_createtable(L, 0, 8);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "verified");

    BIO *mem = BIO_new(BIO_s_mem());
    if (mem) {
        char *data;
        X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
        long n = BIO_get_mem_data(mem, &data);
        lua_pushlstring(L, data, (size_t)n);
        lua_setfield(L, -2, "subject");
        (void)BIO_reset(mem);
        X509_NAME_print_ex(mem, X509_get_issuer_name(cert), 0, XN_FLAG_RFC2253);
        n = BIO_get_mem_data(mem, &data);
        lua_pushlstring(L, data, (size_t)n);
        lua_setfield(L, -2, "issuer");
        BIO_free(mem);
    }

    X509_NAME *subject = X509_get_subject_name(cert);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx >= 0) {
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
        if (n >= 0) {
            lua_pushlstring(L, (const char *)utf8, (size_t)n);
            lua_setfield(L, -2, "cn");
        }
        OPENSSL_free(utf8);
    }

    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (bn) {
        char *hex = BN_bn2hex(bn);
        if (hex) {
            lua_pushstring(L, hex);
            lua_setfield(L, -2, "serial");
            OPENSSL_free(hex);
        }
        BN_free(bn);
    }

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(cert, EVP_sha256(), md, &mdlen)) {
        char hex[EVP_MAX_MD_SIZE * 2 + 1];
        for (unsigned int i = 0; i < mdlen; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        lua_pushlstring(L, hex, mdlen * 2);
        lua_setfield(L, -2, "fingerprint");
    }

    /* subjectAltName entries as "TYPE:value", the way openssl x509 -text prints them; the
     * XMPP address (id-on-xmppAddr) is how the grid names its members. */
    lua_newtable(L);
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int k = 0;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const char *prefix = NULL;
        const ASN1_STRING *str = NULL;
        char ip[INET6_ADDRSTRLEN];
        switch (g->type) {
        case GEN_DNS: prefix = "DNS:"; str = g->d.dNSName; break;
        case GEN_EMAIL: prefix = "email:"; str = g->d.rfc822Name; break;
        case GEN_URI: prefix = "URI:"; str = g->d.uniformResourceIdentifier; break;
        case GEN_IPADD: {
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            if ((len == 4 && inet_ntop(AF_INET, a, ip, sizeof ip)) ||
                (len == 16 && inet_ntop(AF_INET6, a, ip, sizeof ip))) {
                lua_pushfstring(L, "IP:%s", ip);
                lua_rawseti(L, -2, ++k);
            }
            break;
        }
        case GEN_OTHERNAME:
            if (OBJ_obj2nid(g->d.otherName->type_id) == NID_XmppAddr &&
                g->d.otherName->value->type == V_ASN1_UTF8STRING) {
                prefix = "xmpp:";
                str = g->d.otherName->value->value.utf8string;
            }
            break;
        default: break;
        }
        if (prefix && str) {
            lua_pushstring(L, prefix);
            lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(str), (size_t)ASN1_STRING_length(str));
            lua_concat(L, 2);
            lua_rawseti(L, -2, ++k);
        }
    }
    GENERAL_NAMES_free(names);
    lua_setfield(L, -2, "sans");
    lua_setfield(L, -2, "peer");
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h11[] = "\x08http/1.1";
    if (SSL_select_next_proto((unsigned char **)out, outlen, h11, sizeof h11 - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK; /* no ALPN: HTTP/1.1 anyway */
}

static int tls_fail(lua_State *L, SSL_CTX *ctx, const char *what, const char *path)
{
    char text[200];
    SSL_CTX_free(ctx);
    return sacm_fail(L, "tls-config", "%s %s: %s", what, path, ssl_error_text(text, sizeof text, "OpenSSL gave no reason"));
}

SSL_CTX *hs_tls_context(lua_State *L, const hs_tls_opts *o)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        tls_fail(L, NULL, "cannot create a TLS context", "");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* renegotiation is a CPU-exhaustion lever for clients and HTTP/1.1 never needs it */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
    const char *key = o->key ? o->key : o->cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
        tls_fail(L, ctx, "cannot load the certificate", o->cert);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        tls_fail(L, ctx, "cannot load the private key", key);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_fail(L, ctx, "the private key does not match the certificate", o->cert);
        return NULL;
    }
    if (o->ca) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
            tls_fail(L, ctx, "cannot load the CA file", o->ca);
            return NULL;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);
        if (names == NULL) {
            tls_fail(L, ctx, "no CA names in", o->ca);
            return NULL;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    SSL_CTX_set_verify(ctx, o->verify_mode, NULL);
    /* sessions resumed with client certificates need a context id, or resumption fails */
    static const unsigned char sid_ctx[] = "sacmrun-http";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

int hs_tls_start(conn_t *c)
{
    return tls_stream_init(&c->tls, c->srv->ctx, 1, (uv_stream_t *)&c->tcp, c, on_write);
}
