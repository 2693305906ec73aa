/* Shared by the HTTPS server and client: see http_common.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lauxlib.h>
#include "http_common.h"

int buf_append(buffer *b, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + len)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

void buf_free(buffer *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int headers_add_field(header_list *h, buffer *head, const char *at, size_t len, int max)
{
    if (h->n == 0 || h->last_was_value) {
        if (h->n >= max)
            return HEADERS_TOO_MANY;
        if (h->n == h->cap) {
            int cap = h->cap ? h->cap * 2 : 16;
            header_span *spans = realloc(h->spans, sizeof *spans * (size_t)cap);
            if (spans == NULL)
                return HEADERS_NO_MEMORY;
            h->spans = spans;
            h->cap = cap;
        }
        header_span *s = &h->spans[h->n++];
        s->name_off = s->value_off = head->len;
        s->name_len = s->value_len = 0;
        h->last_was_value = 0;
    }
    size_t start = head->len;
    if (buf_append(head, at, len) < 0)
        return HEADERS_NO_MEMORY;
    /* field names are case-insensitive: Lua sees them lowercased */
    for (size_t i = start; i < head->len; i++)
        if (head->p[i] >= 'A' && head->p[i] <= 'Z')
            head->p[i] = (char)(head->p[i] + 32);
    h->spans[h->n - 1].name_len += len;
    return HEADERS_OK;
}

int headers_add_value(header_list *h, buffer *head, const char *at, size_t len)
{
    if (h->n == 0)
        return HEADERS_NO_NAME;
    header_span *s = &h->spans[h->n - 1];
    if (!h->last_was_value) {
        s->value_off = head->len;
        s->value_len = 0;
        h->last_was_value = 1;
    }
    if (buf_append(head, at, len) < 0)
        return HEADERS_NO_MEMORY;
    s->value_len += len;
    return HEADERS_OK;
}

void headers_clear(header_list *h)
{
    h->n = 0;
    h->last_was_value = 0;
}

void headers_free(header_list *h)
{
    free(h->spans);
    h->spans = NULL;
    h->n = h->cap = 0;
    h->last_was_value = 0;
}

void headers_push(lua_State *L, const header_list *h, const char *head)
{
    lua_createtable(L, 0, h->n);
    for (int i = 0; i < h->n; i++) {
        const header_span *s = &h->spans[i];
        lua_pushlstring(L, head + s->name_off, s->name_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, head + s->value_off, s->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, head + s->value_off, s->value_len);
        }
        lua_rawset(L, -3);
    }
}

void http_message_free(http_message *m)
{
    buf_free(&m->head);
    headers_free(&m->headers);
    buf_free(&m->body);
}
