/* What the HTTPS server (http.c) and client (http_client.c) share: a growable byte buffer, the
 * header fields http-parser hands over in pieces, and OpenSSL's error text. */
#ifndef SACM_HTTP_COMMON_H
#define SACM_HTTP_COMMON_H

#include <stddef.h>
#include <lua.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <uv.h>

typedef struct {
    char *p;
    size_t len, cap;
} buffer;

/* 0, or -1 when out of memory (the buffer is unchanged). */
int buf_append(buffer *b, const char *data, size_t len);
void buf_free(buffer *b);

/* A header field as offsets into the message's head buffer (names lowercased there). */
typedef struct {
    size_t name_off, name_len, value_off, value_len;
} header_span;

typedef struct {
    header_span *spans;
    int n, cap;
    int last_was_value;
} header_list;

enum { HEADERS_OK = 0, HEADERS_TOO_MANY, HEADERS_NO_MEMORY, HEADERS_NO_NAME };

/* http-parser's on_header_field / on_header_value: append the piece to head and record it.
 * A field piece after a value starts a new header (refused beyond max). */
int headers_add_field(header_list *h, buffer *head, const char *at, size_t len, int max);
int headers_add_value(header_list *h, buffer *head, const char *at, size_t len);
void headers_clear(header_list *h);
void headers_free(header_list *h);
/* Pushes {name = value}; a repeated field becomes one comma-separated value (RFC 9110 5.3). */
void headers_push(lua_State *L, const header_list *h, const char *head);

/* A TLS session over a pair of memory BIOs, so that the loop does all socket I/O: ciphertext read
 * from the socket goes into *rbio, what OpenSSL wants sent comes out of *wbio (see
 * tls_send_pending). The session owns both BIOs. NULL when out of memory. */
SSL *tls_memory_session(SSL_CTX *ctx, int server, BIO **rbio, BIO **wbio);

/* Writes what OpenSSL left in the write BIO to stream as one uv_write whose req->data is `data`;
 * on_write must free(req). Returns 1 when a write was started, 0 when there was nothing to send,
 * or a negative libuv error (UV_ENOMEM included) when none was started. */
int tls_send_pending(BIO *wbio, uv_stream_t *stream, void *data, uv_write_cb on_write);

/* OpenSSL's last error as text (and clears the queue), or `fallback` when it holds none. */
const char *ssl_error_text(char *out, size_t size, const char *fallback);

#endif
