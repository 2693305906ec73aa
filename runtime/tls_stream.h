/* tls_stream.h: one TLS stream over a libuv socket, used by the HTTPS server (http_conn.c,
 * http_tls.c) and client (http_client.c), so that they speak only HTTP.
 *
 * OpenSSL never touches the socket: the owner hands the ciphertext libuv read to
 * tls_stream_input (a memory BIO), and OpenSSL's records go into an output buffer of the stream's
 * own (a BIO of ours) that tls_stream_flush hands to uv_write as it is. So neither a handshake nor
 * a slow peer ever blocks the loop, libuv stays the only thing doing socket I/O, and a response is
 * copied once on its way out (by OpenSSL, into a record) where a memory BIO would clear, fill and
 * copy it again. A step that fails records why (OpenSSL's reason) in the stream. */
#ifndef SACM_TLS_STREAM_H
#define SACM_TLS_STREAM_H

#include <stddef.h>
#include <lua.h>
#include <openssl/ssl.h>
#include <uv.h>

typedef struct tls_stream {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    struct tls_output *out; /* what OpenSSL wrote and tls_stream_flush has not sent yet */
    size_t out_len, out_cap;
    uv_stream_t *socket;
    void *owner;         /* req->data of every write, and the first argument of read callbacks */
    uv_write_cb on_write; /* the owner's: it must free(req) */
    int handshake_done;
    /* why the last handshake, read or write failed */
    char reason[200];
    long verify_result;  /* X509_V_OK, or why the peer's certificate did not verify */
    int peer_ended;      /* the transport ended in the handshake without a TLS alert */
} tls_stream;

enum {
    TLS_STREAM_FAILED = -1, /* see reason */
    TLS_STREAM_WANT = 0,    /* OpenSSL needs more ciphertext from the peer */
    TLS_STREAM_DONE = 1,    /* the handshake is complete */
    TLS_STREAM_STOPPED = 2, /* the read callback asked to stop */
    TLS_STREAM_CLOSED = 3,  /* the peer sent close_notify */
};

/* Sets up the session (server or client side) for socket; 0, or -1 when out of memory. */
int tls_stream_init(tls_stream *t, SSL_CTX *ctx, int server, uv_stream_t *socket, void *owner,
                    uv_write_cb on_write);
void tls_stream_free(tls_stream *t);

/* Ciphertext read from the socket: 0, or -1 when out of memory. */
int tls_stream_input(tls_stream *t, const char *data, size_t len);
/* Whether decrypted or undecrypted input waits inside the stream. */
int tls_stream_has_input(const tls_stream *t);

/* Advances the handshake: TLS_STREAM_DONE, TLS_STREAM_WANT, or TLS_STREAM_FAILED. */
int tls_stream_handshake(tls_stream *t);

/* Called with each piece of plaintext; returns nonzero to stop reading. */
typedef int (*tls_stream_read_cb)(void *owner, const char *data, size_t len);
/* Decrypts what has arrived into on_plain until it asks to stop (TLS_STREAM_STOPPED), OpenSSL
 * wants more input (TLS_STREAM_WANT), the peer's close_notify (TLS_STREAM_CLOSED) or a failure. */
int tls_stream_read(tls_stream *t, tls_stream_read_cb on_plain);

/* Encrypts data for the peer (tls_stream_flush sends it): 0, or TLS_STREAM_FAILED. */
int tls_stream_write(tls_stream *t, const char *data, size_t len);
/* Queues our close_notify (tls_stream_flush sends it). */
void tls_stream_shutdown(tls_stream *t);
/* Writes what OpenSSL produced to the socket as one uv_write. 1 when a write was started, 0 when
 * there was nothing to send, or a negative libuv error (UV_ENOMEM included) when none was. */
int tls_stream_flush(tls_stream *t);
/* Whether encrypted output is still waiting for tls_stream_flush. */
int tls_stream_has_output(const tls_stream *t);
/* Moves up to size bytes of that output into buf instead (streams joined in memory, as the C
 * tests do); how many. */
size_t tls_stream_take_output(tls_stream *t, char *buf, size_t size);

/* Pushes {version = "TLSv1.3", cipher = ...} with room for `extra` more fields. */
void tls_stream_push_info(lua_State *L, const tls_stream *t, int extra);

/* OpenSSL's last error as text (and clears the queue), or `fallback` when it holds none. */
const char *ssl_error_text(char *out, size_t size, const char *fallback);

#endif
