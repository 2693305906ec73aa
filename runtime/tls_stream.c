/* tls_stream.c: TLS on a libuv socket, input through a memory BIO, output through a BIO of ours
 * into the buffer uv_write sends (see tls_stream.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include "tls_stream.h"

#define PLAIN_CHUNK 16384
#define RECORD_OVERHEAD 256 /* more than a TLS record adds to its 16 KiB: header, tag, padding */

/* The output buffer is handed to uv_write as it is, its request in front. */
struct tls_output {
    uv_write_t req; /* first: on_write frees the request */
    char data[];
};

/* Room for `more` bytes after what the buffer holds; -1 when out of memory. */
static int reserve_output(tls_stream *t, size_t more)
{
    if (t->out_cap - t->out_len >= more && t->out != NULL)
        return 0;
    /* doubling, but never far past what is asked: a response's records are reserved at once, and
     * a buffer rounded up past glibc's mmap threshold would be mapped and unmapped per response */
    size_t want = t->out_len + more, cap = t->out_cap * 2;
    if (cap < want)
        cap = want < 4096 ? 4096 : want;
    struct tls_output *grown = realloc(t->out, sizeof *grown + cap);
    if (grown == NULL)
        return -1;
    t->out = grown;
    t->out_cap = cap;
    return 0;
}

static int output_write(BIO *b, const char *data, int len)
{
    tls_stream *t = BIO_get_data(b);
    if (len <= 0)
        return 0;
    if (reserve_output(t, (size_t)len) < 0)
        return -1;
    memcpy(t->out->data + t->out_len, data, (size_t)len);
    t->out_len += (size_t)len;
    return len;
}

static long output_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num, (void)ptr;
    tls_stream *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* tls_stream_flush sends it */
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
        return t ? (long)t->out_len : 0;
    default:
        return 0;
    }
}

static int output_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* One method for every stream, made on first use and kept for the life of the process. */
static BIO_METHOD *output_method(void)
{
    static BIO_METHOD *method;
    if (method == NULL) {
        BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sacmrun TLS output");
        if (m == NULL || !BIO_meth_set_write(m, output_write) || !BIO_meth_set_ctrl(m, output_ctrl) ||
            !BIO_meth_set_create(m, output_create)) {
            BIO_meth_free(m);
            return NULL;
        }
        method = m;
    }
    return method;
}

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
    BIO_METHOD *out = output_method();
    BIO *r = BIO_new(BIO_s_mem()), *w = out ? BIO_new(out) : NULL;
    if (ssl == NULL || r == NULL || w == NULL) {
        SSL_free(ssl);
        BIO_free(r);
        BIO_free(w);
        return -1;
    }
    /* an empty read BIO means "wait for more", not the end of the stream */
    BIO_set_mem_eof_return(r, -1);
    BIO_set_data(w, t);
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
    free(t->out);
    t->out = NULL;
    t->out_len = t->out_cap = 0;
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
    return t->out_len > 0;
}

size_t tls_stream_take_output(tls_stream *t, char *buf, size_t size)
{
    size_t n = t->out_len < size ? t->out_len : size;
    if (n == 0)
        return 0;
    memcpy(buf, t->out->data, n);
    memmove(t->out->data, t->out->data + n, t->out_len - n);
    t->out_len -= n;
    return n;
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
    /* room for all the records at once, so the buffer is not grown (and copied) record by record;
     * past that, the output BIO refuses a write only when memory runs out */
    if (reserve_output(t, len + (len / 16384 + 1) * RECORD_OVERHEAD) < 0) {
        snprintf(t->reason, sizeof t->reason, "out of memory for %zu bytes of TLS output", len);
        return TLS_STREAM_FAILED;
    }
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

int tls_stream_flush(tls_stream *t)
{
    if (t->out_len == 0)
        return 0;
    struct tls_output *w = t->out;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned)t->out_len);
    w->req.data = t->owner;
    t->out = NULL; /* the write owns it now: on_write frees it */
    t->out_len = t->out_cap = 0;
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
