/* Why an XMPP connection failed, for runtime/xmpp.c.
 *
 * libstrophe reports few causes in structured form: the stream error, an errno, and the
 * certificate that failed verification (the certfail callback). The rest it only logs: the
 * socket error of a failed connect, OpenSSL's error queue, the SASL mechanism the server refused.
 * Each connection has a libstrophe context of its own whose logger carries the connection, so
 * what is noted here belongs to that connection alone; it is kept on the link and handed to Lua
 * with the disconnect event, which words the error (lua/sacm/xmpp/init.lua).
 *
 * Also here: the check of the TLS files (CA file, CA directory, client certificate and key)
 * before any connection is attempted, with OpenSSL's reason. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include "xmpp_link.h"

int sacm_xmpp_activity;

#define COPY(dst, src) snprintf((dst), sizeof(dst), "%s", (src))

/* <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text>...</text></failure>:
 * the condition is the first child element, the text the <text/> child's content. */
static void note_sasl_failure(xmpp_diag_t *d, const char *p)
{
    const char *end = strchr(p, '>');
    if (end == NULL)
        return;
    const char *child = strchr(end, '<');
    while (child && strncmp(child, "<text", 5) == 0) {
        const char *close = strstr(child, "</text>");
        child = close ? strchr(close + 1, '<') : NULL;
    }
    if (child && child[1] != '/') {
        size_t n = strcspn(child + 1, " />");
        if (n > 0 && n < sizeof d->sasl_condition)
            snprintf(d->sasl_condition, sizeof d->sasl_condition, "%.*s", (int)n, child + 1);
    }
    const char *text = strstr(p, "<text");
    if (text && (text = strchr(text, '>')) != NULL) {
        const char *close = strstr(text, "</text>");
        if (close)
            snprintf(d->sasl_text, sizeof d->sasl_text, "%.*s", (int)(close - text - 1), text + 1);
    }
}

static void note(link_t *l, xmpp_log_level_t level, const char *area, const char *msg)
{
    xmpp_diag_t *d = &l->diag;
    const char *p;
    int err;
    /* Every stanza in and out comes by as "RECV: <text>" / "SENT: <text>". Only the server
     * speaks before the session is up, so only then is a received <failure/> the server's SASL
     * answer; after that, stanza text is never searched (a message body could forge anything). */
    if (strncmp(msg, "RECV:", 5) == 0) {
        if (l->session_up)
            return;
        if ((p = strstr(msg, "<failure")) && strstr(p, "urn:ietf:params:xml:ns:xmpp-sasl") && !d->sasl_condition[0])
            note_sasl_failure(d, p);
    } else if (strncmp(msg, "SENT:", 5) == 0) {
        return;
    } else if ((p = strstr(msg, "connection failed, error ")) && sscanf(p + 25, "%d", &err) == 1) {
        d->socket_error = err;
    } else if ((p = strstr(msg, "Certificate verification FAILED, result=")) != NULL) {
        COPY(d->verify_code, p + 40);
    } else if (strncmp(msg, "SASL ", 5) == 0 && (p = strstr(msg, " auth failed")) != NULL && p[12] == '\0') {
        snprintf(d->sasl_mechanism, sizeof d->sasl_mechanism, "%.*s", (int)(p - msg - 5), msg + 5);
    } else if (strstr(msg, "Cannot authenticate with known methods")) {
        d->auth_failed = 1;
    } else if (strcmp(area, "tls") == 0 && strncmp(msg, "error:", 6) == 0) {
        COPY(d->tls_text, msg);
    } else if (strstr(msg, "Unrecoverable TLS error")) {
        d->tls_failed = 1;
    } else if ((level == XMPP_LEVEL_ERROR && strcmp(area, "tls") == 0) || strstr(msg, "Couldn't start TLS") ||
               strstr(msg, "TLS is not supported")) {
        if (!d->tls_start[0])
            COPY(d->tls_start, msg);
    }
}

void sacm_xmpp_log_handler(void *userdata, xmpp_log_level_t level, const char *area, const char *msg)
{
    link_t *l = userdata;
    area = area ? area : "";
    /* libstrophe logs what it does (a socket connected, a stanza queued or written, TLS set up);
     * some of it queues data that xmpp_conn_send_queue_len does not count, written only in a
     * round of its own, so a round with any message is followed by another (xmpp.c: pump) */
    sacm_xmpp_activity++;
    if (l)
        note(l, level, area, msg);
    /* libstrophe's own words are for debugging: every failure it logs reaches the program as an
     * error object worded by the Lua layer, and the connection's life (connecting, connected,
     * lost, reconnected) is logged there at info and warn. Its error, warning and info messages
     * are debug here; its debug output (every stanza) is trace. */
    int ours = level == XMPP_LEVEL_DEBUG ? SACM_LOG_TRACE : SACM_LOG_DEBUG;
    if (!sacm_log_enabled(ours))
        return;
    char where[48];
    snprintf(where, sizeof where, "strophe.%s", area);
    sacm_log_write(ours, where, msg, strlen(msg));
}

int sacm_xmpp_certfail(const xmpp_tlscert_t *cert, const char *const errormsg)
{
    /* libstrophe 0.12 leaves the certificate's connection unset; its context is ours alone */
    link_t *l = sacm_xmpp_link_of_ctx(xmpp_tlscert_get_ctx(cert));
    if (l && !l->diag.verify_error[0]) {
        const char *subject = xmpp_tlscert_get_string(cert, XMPP_CERT_SUBJECT);
        const char *issuer = xmpp_tlscert_get_string(cert, XMPP_CERT_ISSUER);
        COPY(l->diag.verify_error, errormsg ? errormsg : "certificate verification failed");
        COPY(l->diag.cert_subject, subject ? subject : "?");
        COPY(l->diag.cert_issuer, issuer ? issuer : "?");
    }
    return 0; /* reject: verification is never skipped silently */
}

static void set_string(lua_State *L, const char *field, const char *value)
{
    if (value && value[0]) {
        lua_pushstring(L, value);
        lua_setfield(L, -2, field);
    }
}

/* What kind of verification failure, from OpenSSL's code (the number libstrophe logs with its
 * name) or, when only the certfail callback spoke, from OpenSSL's own string for that code. */
static const char *verify_kind(const xmpp_diag_t *d)
{
    static const struct {
        long code;
        const char *kind;
    } kinds[] = {
        {X509_V_ERR_HOSTNAME_MISMATCH, "hostname-mismatch"},
        {X509_V_ERR_CERT_HAS_EXPIRED, "expired"},
        {X509_V_ERR_CERT_NOT_YET_VALID, "not-yet-valid"},
    };
    const char *open = strrchr(d->verify_code, '(');
    long code = -1;
    if (open == NULL || sscanf(open + 1, "%ld", &code) != 1)
        code = -1;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (code == kinds[i].code || (code < 0 && strcmp(d->verify_error, X509_verify_cert_error_string(kinds[i].code)) == 0))
            return kinds[i].kind;
    }
    return "untrusted";
}

/* The condition and reason of the failure, decided here where the causes are known: the first
 * cause in the order they can happen (socket set-up, TLS verification, SASL, a stream error, TLS,
 * the socket). Lua words the message from these fields and never reads libstrophe's text; a
 * session that was up is "connection-lost" there, with this reason. */
static void set_condition(lua_State *L, const xmpp_diag_t *d, int error,
                          const char *stream_condition, const xmpp_stream_error_t *stream_error)
{
    const char *condition = "remote-connection-failed", *reason = NULL;
    if (d->setup[0]) {
        reason = d->setup;
    } else if (d->verify_error[0] || d->verify_code[0]) {
        condition = "tls-verification-failed";
        reason = d->verify_error[0] ? d->verify_error : "certificate verification failed";
        set_string(L, "verify_kind", verify_kind(d));
    } else if (d->sasl_condition[0] || d->sasl_mechanism[0] || d->auth_failed) {
        condition = "not-authorized";
        reason = d->sasl_text[0] ? d->sasl_text : d->sasl_condition[0] ? d->sasl_condition : "refused";
    } else if (stream_condition) {
        condition = stream_condition;
        reason = stream_error->text;
    } else if (d->tls_failed || d->tls_start[0]) {
        condition = "tls-failed";
        reason = d->tls_text[0] ? d->tls_text : d->tls_start[0] ? d->tls_start : "the server closed the TLS session";
    } else if (error) {
        condition = uv_err_name(-error);
        reason = strerror(error);
    }
    set_string(L, "condition", condition);
    set_string(L, "reason", reason);
}

void sacm_xmpp_push_disconnect_info(lua_State *L, link_t *l, int error, const xmpp_stream_error_t *stream_error)
{
    xmpp_diag_t *d = &l->diag;
    const char *stream_condition = NULL;
    lua_createtable(L, 0, 10);
    if (d->tls_failed)
        error = 0; /* the error number is an OpenSSL code, not errno */
    if (error == 0)
        error = d->socket_error;
    if (error != 0) {
        set_string(L, "errno", uv_err_name(-error));
        set_string(L, "errno_text", strerror(error));
    }
    if (stream_error) {
        static const char *const names[] = {
            [XMPP_SE_BAD_FORMAT] = "bad-format",
            [XMPP_SE_BAD_NS_PREFIX] = "bad-namespace-prefix",
            [XMPP_SE_CONFLICT] = "conflict",
            [XMPP_SE_CONN_TIMEOUT] = "connection-timeout",
            [XMPP_SE_HOST_GONE] = "host-gone",
            [XMPP_SE_HOST_UNKNOWN] = "host-unknown",
            [XMPP_SE_IMPROPER_ADDR] = "improper-addressing",
            [XMPP_SE_INTERNAL_SERVER_ERROR] = "internal-server-error",
            [XMPP_SE_INVALID_FROM] = "invalid-from",
            [XMPP_SE_INVALID_ID] = "invalid-id",
            [XMPP_SE_INVALID_NS] = "invalid-namespace",
            [XMPP_SE_INVALID_XML] = "invalid-xml",
            [XMPP_SE_NOT_AUTHORIZED] = "not-authorized",
            [XMPP_SE_POLICY_VIOLATION] = "policy-violation",
            [XMPP_SE_REMOTE_CONN_FAILED] = "remote-connection-failed",
            [XMPP_SE_RESOURCE_CONSTRAINT] = "resource-constraint",
            [XMPP_SE_RESTRICTED_XML] = "restricted-xml",
            [XMPP_SE_SEE_OTHER_HOST] = "see-other-host",
            [XMPP_SE_SYSTEM_SHUTDOWN] = "system-shutdown",
            [XMPP_SE_UNDEFINED_CONDITION] = "undefined-condition",
            [XMPP_SE_UNSUPPORTED_ENCODING] = "unsupported-encoding",
            [XMPP_SE_UNSUPPORTED_STANZA_TYPE] = "unsupported-stanza-type",
            [XMPP_SE_UNSUPPORTED_VERSION] = "unsupported-version",
            [XMPP_SE_XML_NOT_WELL_FORMED] = "not-well-formed",
        };
        int type = (int)stream_error->type;
        int known = type >= 0 && (size_t)type < sizeof names / sizeof names[0] && names[type];
        stream_condition = known ? names[type] : "undefined-condition";
        set_string(L, "stream_error", stream_condition);
        set_string(L, "stream_text", stream_error->text);
    }
    set_condition(L, d, error, stream_condition, stream_error);
    set_string(L, "setup_failure", d->setup);
    set_string(L, "verify_error", d->verify_error);
    set_string(L, "verify_code", d->verify_code);
    set_string(L, "cert_subject", d->cert_subject);
    set_string(L, "cert_issuer", d->cert_issuer);
    set_string(L, "tls_start", d->tls_start);
    set_string(L, "tls_text", d->tls_text);
    if (d->tls_failed) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "tls_failed");
    }
    set_string(L, "sasl_mechanism", d->sasl_mechanism);
    set_string(L, "sasl_condition", d->sasl_condition);
    set_string(L, "sasl_text", d->sasl_text);
    if (d->auth_failed) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "auth_failed");
    }
    memset(d, 0, sizeof *d);
}

/* OpenSSL's reason for the last failure, without its numeric prefix, or the fallback. */
static const char *openssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : fallback;
}

static int fail_file(lua_State *L, const char *what, const char *path, const char *reason, const char *option)
{
    return sacm_fail(L, "tls-config", "cannot load %s %s: %s (check the %s option)", what, path, reason, option);
}

/* A readable file holding at least one PEM certificate (a CA file or a client certificate). */
static int check_pem_certs(lua_State *L, const char *path, const char *what, const char *option)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return fail_file(L, what, path, strerror(errno), option);
    fclose(f);
    X509_STORE *store = X509_STORE_new();
    X509_LOOKUP *lookup = store ? X509_STORE_add_lookup(store, X509_LOOKUP_file()) : NULL;
    ERR_clear_error();
    int n = lookup ? X509_load_cert_crl_file(lookup, path, X509_FILETYPE_PEM) : 0;
    X509_STORE_free(store);
    if (n <= 0)
        return fail_file(L, what, path, openssl_reason("no PEM certificate in it"), option);
    return 0;
}

/* options[name]: nil or a string path (kept alive by the options table) */
static const char *file_option(lua_State *L, const char *name)
{
    int type = lua_getfield(L, 1, name);
    const char *s = type == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    if (type != LUA_TNIL && type != LUA_TSTRING)
        luaL_error(L, "the %s option must be a file name (a string), got %s", name, lua_typename(L, type));
    return s;
}

/* check_tls_files(options) -> true, or nil, err (tls-config) naming the file and the reason.
 * options: cafile, capath, client_cert, client_key, as given to new(). libstrophe would only
 * log such a failure and drop the connection after TCP was up, as if the server had. */
int sacm_xmpp_check_tls_files(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *cafile = file_option(L, "cafile");
    const char *capath = file_option(L, "capath");
    const char *cert = file_option(L, "client_cert");
    const char *key = file_option(L, "client_key");
    int r;
    if (cafile && (r = check_pem_certs(L, cafile, "CA file", "cafile")) != 0)
        return r;
    if (capath) {
        struct stat sb;
        if (stat(capath, &sb) != 0)
            return fail_file(L, "CA directory", capath, strerror(errno), "capath");
        if (!S_ISDIR(sb.st_mode))
            return fail_file(L, "CA directory", capath, "not a directory", "capath");
    }
    if (cert && key && (r = check_pem_certs(L, cert, "client certificate", "client_cert")) != 0)
        return r;
    const char *readable[] = {cert, key};
    const char *option[] = {"client_cert", "client_key"};
    for (int i = 0; i < 2; i++) {
        FILE *f = readable[i] ? fopen(readable[i], "r") : NULL;
        if (readable[i] && f == NULL)
            return fail_file(L, i == 0 ? "client certificate" : "client key", readable[i], strerror(errno), option[i]);
        if (f)
            fclose(f);
    }
    lua_pushboolean(L, 1);
    return 1;
}
