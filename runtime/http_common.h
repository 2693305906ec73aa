/* What the HTTPS server (http.c) and client (http_client.c) share besides their TLS stream
 * (tls_stream.h): a growable byte buffer and the header fields http-parser hands over in pieces. */
#ifndef SACM_HTTP_COMMON_H
#define SACM_HTTP_COMMON_H

#include <stddef.h>
#include <lua.h>

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

/* A message as it is read: its head (the start line's text, then the header fields, as spans
 * into it) and its body. */
typedef struct {
    buffer head;
    header_list headers;
    buffer body;
} http_message;

void http_message_free(http_message *m);

#endif
