/* Table-driven tests of the TLS stream the HTTPS server and client share (runtime/tls_stream.c),
 * two streams talking in memory: what a handshake ends in (done, or failed with OpenSSL's reason
 * or the verification result), the read pump (callback, stop, want, close_notify) and writes.
 * The bytes one stream wants sent are handed to the other directly, as the loop would after
 * uv_write and uv_read. Run by `make test-c`, built with ASan and UBSan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include "../../runtime/tls_stream.h"
#include "check.h"


/* A self-signed P-256 certificate for "localhost", made here so the test needs no files. */
static SSL_CTX *server_context(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    if (key == NULL || cert == NULL)
        abort();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    if (X509_sign(cert, key, EVP_sha256()) == 0)
        abort();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)
        abort();
    X509_free(cert);
    EVP_PKEY_free(key);
    return ctx;
}

/* Moves what `from` wants sent into `to`; whether anything moved. */
static int deliver(tls_stream *from, tls_stream *to)
{
    char buf[16384];
    int moved = 0, n;
    while ((n = (int)tls_stream_take_output(from, buf, sizeof buf)) > 0) {
        if (tls_stream_input(to, buf, (size_t)n) < 0)
            abort();
        moved = 1;
    }
    return moved;
}

/* Steps both handshakes until neither has anything to say; the client's and server's results. */
static void handshake(tls_stream *client, tls_stream *server, int *client_rc, int *server_rc)
{
    *client_rc = *server_rc = TLS_STREAM_WANT;
    for (int round = 0; round < 20; round++) {
        if (*client_rc == TLS_STREAM_WANT)
            *client_rc = tls_stream_handshake(client);
        int sent = deliver(client, server);
        if (*server_rc == TLS_STREAM_WANT)
            *server_rc = tls_stream_handshake(server);
        sent |= deliver(server, client);
        if (!sent)
            break;
    }
}

/* ---- handshakes ---- */

typedef struct {
    const char *name;
    int client_verifies;     /* the client checks the server against an empty trust store */
    const char *client_says; /* instead of a client: these bytes arrive at the server */
    size_t says_len;
    int want_server, want_client;
    const char *want_reason; /* in the failing side's reason */
    long want_verify;        /* the client's verify_result */
} handshake_case;

static const handshake_case handshake_cases[] = {
    {"handshake completes", 0, NULL, 0, TLS_STREAM_DONE, TLS_STREAM_DONE, NULL, X509_V_OK},
    {"plain HTTP to a TLS server", 0, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, TLS_STREAM_FAILED, 0,
     "http request", X509_V_OK},
    /* a fatal handshake_failure alert record where the ClientHello belongs */
    {"an alert instead of a ClientHello", 0, "\x15\x03\x01\x00\x02\x02\x28", 7, TLS_STREAM_FAILED, 0,
     "unexpected message", X509_V_OK},
    {"a server the client cannot verify", 1, NULL, 0, TLS_STREAM_FAILED, TLS_STREAM_FAILED,
     "certificate verify failed", X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT},
};

static void test_handshakes(SSL_CTX *server_ctx)
{
    for (size_t i = 0; i < sizeof handshake_cases / sizeof *handshake_cases; i++) {
        const handshake_case *k = &handshake_cases[i];
        SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(client_ctx, k->client_verifies ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        tls_stream server, client;
        if (tls_stream_init(&server, server_ctx, 1, NULL, NULL, NULL) < 0 ||
            tls_stream_init(&client, client_ctx, 0, NULL, NULL, NULL) < 0)
            abort();
        int client_rc = 0, server_rc;
        if (k->client_says) {
            tls_stream_input(&server, k->client_says, k->says_len ? k->says_len : strlen(k->client_says));
            server_rc = tls_stream_handshake(&server);
        } else {
            handshake(&client, &server, &client_rc, &server_rc);
        }
        char detail[400];
        const char *reason = client_rc == TLS_STREAM_FAILED ? client.reason : server.reason;
        snprintf(detail, sizeof detail, "server %d client %d (want %d %d), reason \"%s\", verify %ld", server_rc,
                 client_rc, k->want_server, k->want_client, reason, client.verify_result);
        if (server_rc != k->want_server || (!k->client_says && client_rc != k->want_client))
            fail(k->name, detail);
        else if (k->want_reason && strstr(reason, k->want_reason) == NULL)
            fail(k->name, detail);
        else if (client.verify_result != k->want_verify)
            fail(k->name, detail);
        else if ((server_rc == TLS_STREAM_DONE) != server.handshake_done)
            fail(k->name, "handshake_done does not match the result");
        tls_stream_free(&server);
        tls_stream_free(&client);
        SSL_CTX_free(client_ctx);
        ERR_clear_error();
    }
}

/* ---- the read pump ---- */

typedef struct {
    char got[256];
    size_t len;
    size_t stop_after; /* the callback asks to stop once it has this many bytes (0: never) */
} reader;

static int on_plain(void *owner, const char *data, size_t len)
{
    reader *r = owner;
    if (r->len + len < sizeof r->got) {
        memcpy(r->got + r->len, data, len);
        r->len += len;
    }
    return r->stop_after && r->len >= r->stop_after;
}

typedef struct {
    const char *name;
    const char *const sent[3]; /* records the client writes, in order */
    int close_notify;          /* then the client shuts down */
    size_t stop_after;
    const char *want;          /* what the server's callback got */
    int want_rc;
} read_case;

static const read_case read_cases[] = {
    {"one record", {"hello"}, 0, 0, "hello", TLS_STREAM_WANT},
    {"several records in one pump", {"GET ", "/ HTTP/1.1", "\r\n"}, 0, 0, "GET / HTTP/1.1\r\n", TLS_STREAM_WANT},
    {"the callback stops the pump", {"first", "second"}, 0, 5, "first", TLS_STREAM_STOPPED},
    {"close_notify after data", {"bye"}, 1, 0, "bye", TLS_STREAM_CLOSED},
    {"nothing arrived", {NULL}, 0, 0, "", TLS_STREAM_WANT},
};

static void test_reads(SSL_CTX *server_ctx)
{
    SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
    for (size_t i = 0; i < sizeof read_cases / sizeof *read_cases; i++) {
        const read_case *k = &read_cases[i];
        tls_stream server, client;
        reader r = {.stop_after = k->stop_after};
        if (tls_stream_init(&server, server_ctx, 1, NULL, &r, NULL) < 0 ||
            tls_stream_init(&client, client_ctx, 0, NULL, NULL, NULL) < 0)
            abort();
        int client_rc, server_rc;
        handshake(&client, &server, &client_rc, &server_rc);
        if (client_rc != TLS_STREAM_DONE || server_rc != TLS_STREAM_DONE) {
            fail(k->name, "the handshake did not complete");
            tls_stream_free(&server);
            tls_stream_free(&client);
            continue;
        }
        tls_stream_read(&server, on_plain); /* the client's session tickets, if any: nothing to read */
        for (int j = 0; j < 3 && k->sent[j]; j++)
            if (tls_stream_write(&client, k->sent[j], strlen(k->sent[j])) != 0)
                fail(k->name, client.reason);
        if (k->close_notify)
            tls_stream_shutdown(&client);
        if (!tls_stream_has_output(&client) && k->sent[0])
            fail(k->name, "a write left nothing to send");
        deliver(&client, &server);
        int rc = tls_stream_read(&server, on_plain);
        char detail[400];
        snprintf(detail, sizeof detail, "got \"%.*s\" and %d, want \"%s\" and %d", (int)r.len, r.got, rc, k->want,
                 k->want_rc);
        if (rc != k->want_rc || r.len != strlen(k->want) || memcmp(r.got, k->want, r.len) != 0)
            fail(k->name, detail);
        tls_stream_free(&server);
        tls_stream_free(&client);
    }
    SSL_CTX_free(client_ctx);
}

int main(void)
{
    SSL_CTX *server_ctx = server_context();
    test_handshakes(server_ctx);
    test_reads(server_ctx);
    SSL_CTX_free(server_ctx);
    char passed[80];
    snprintf(passed, sizeof passed, "%zu handshake cases, %zu read cases",
             sizeof handshake_cases / sizeof *handshake_cases, sizeof read_cases / sizeof *read_cases);
    return finish("tls_stream_test", passed);
}
