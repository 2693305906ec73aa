/* tls_stream.c: TLS over memory BIOs on a libuv socket (see tls_stream.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include "tls_stream.h"

#define PLAIN_CHUNK 16384

const char *ssl_error_text(char *out, size_t size, const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(out, size, "%s", fallback);
    else
        ERR_error_string_n(e, out, size);
    ERR_clear_error();
    return out;
}

int tls_stream_init(tls_stream *t, SSL_CTX *ctx, int server, uv_stream_t *socket, void *owner,
                    uv_write_cb on_write)
{
    memset(t, 0, sizeof *t);
    t->socket = socket;
    t->owner = owner;
    t->on_write = on_write;
    t->verify_result = X509_V_OK;
    SSL *ssl = SSL_new(ctx);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    if (ssl == NULL || r == NULL || w == NULL) {
        SSL_free(ssl);
        BIO_free(r);
        BIO_free(w);
        return -1;
    }
    /* an empty read BIO means "wait for more", not the end of the stream */
    BIO_set_mem_eof_return(r, -1);
    SSL_set_bio(ssl, r, w);
    if (server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    t->ssl = ssl;
    t->rbio = r;
    t->wbio = w;
    return 0;
}

void tls_stream_free(tls_stream *t)
{
    SSL_free(t->ssl); /* frees both BIOs */
    t->ssl = NULL;
    t->rbio = t->wbio = NULL;
}

int tls_stream_input(tls_stream *t, const char *data, size_t len)
{
    return BIO_write(t->rbio, data, (int)len) == (int)len ? 0 : -1;
}

int tls_stream_has_input(const tls_stream *t)
{
    return BIO_ctrl_pending(t->rbio) > 0 || SSL_pending(t->ssl) > 0;
}

int tls_stream_has_output(const tls_stream *t)
{
    return BIO_ctrl_pending(t->wbio) > 0;
}

int tls_stream_handshake(tls_stream *t)
{
    if (t->handshake_done)
        return TLS_STREAM_DONE;
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->handshake_done = 1;
        return TLS_STREAM_DONE;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return TLS_STREAM_WANT;
    t->verify_result = SSL_get_verify_result(t->ssl);
    t->peer_ended = e == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0;
    ssl_error_text(t->reason, sizeof t->reason, "connection ended during the handshake");
    return TLS_STREAM_FAILED;
}

int tls_stream_read(tls_stream *t, tls_stream_read_cb on_plain)
{
    char plain[PLAIN_CHUNK];
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(t->ssl, plain, sizeof plain);
        if (n > 0) {
            if (on_plain(t->owner, plain, (size_t)n))
                return TLS_STREAM_STOPPED;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return TLS_STREAM_WANT;
        if (e == SSL_ERROR_ZERO_RETURN)
            return TLS_STREAM_CLOSED;
        ssl_error_text(t->reason, sizeof t->reason, "the connection ended unexpectedly");
        return TLS_STREAM_FAILED;
    }
}

int tls_stream_write(tls_stream *t, const char *data, size_t len)
{
    /* a memory BIO never refuses a write: SSL_write fails only when TLS does */
    while (len > 0) {
        ERR_clear_error();
        int n = SSL_write(t->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n <= 0) {
            ssl_error_text(t->reason, sizeof t->reason, "the connection ended unexpectedly");
            return TLS_STREAM_FAILED;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

void tls_stream_shutdown(tls_stream *t)
{
    ERR_clear_error();
    SSL_shutdown(t->ssl);
}

typedef struct {
    uv_write_t req; /* first: on_write frees the request */
    char data[];
} pending_write;

int tls_stream_flush(tls_stream *t)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    if (n == 0)
        return 0;
    pending_write *w = malloc(sizeof *w + n);
    if (w == NULL)
        return UV_ENOMEM;
    int got = BIO_read(t->wbio, w->data, (int)n);
    if (got <= 0) {
        free(w);
        return 0;
    }
    w->req.data = t->owner;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)got);
    int rc = uv_write(&w->req, t->socket, &buf, 1, t->on_write);
    if (rc < 0) {
        free(w);
        return rc;
    }
    return 1;
}

void tls_stream_push_info(lua_State *L, const tls_stream *t, int extra)
{
    lua_createtable(L, 0, 2 + extra);
    lua_pushstring(L, SSL_get_version(t->ssl));
    lua_setfield(L, -2, "version");
    lua_pushstring(L, SSL_get_cipher_name(t->ssl));
    lua_setfield(L, -2, "cipher");
}
