/* sacm._x509: private keys, certificate signing requests and certificate facts, from OpenSSL.
 *
 * What ccm2 enrollment (lua/sacm/xmpp/ccm2.lua) needs on the client: a new key pair made here and
 * never sent anywhere, a PKCS#10 request signed with it, and the facts of the certificate the
 * server returns (fingerprint, validity, xmppAddr, whether it is for our key). Signing
 * certificates is the CA's business (the server module) and is not offered here.
 *
 * Every OpenSSL call that can fail is checked; its error queue is read into the message (the
 * first reason is usually the useful one) and cleared, so a failure never leaks into the next,
 * unrelated call. Each function frees what it allocated on one exit path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include "sacmrun.h"

#define KEY_MT "sacm.PrivateKey"

typedef struct {
    EVP_PKEY *pkey;
} key_ud;

/* What a call has allocated from OpenSSL, owned by a userdata pushed before the first
 * allocation: a Lua error (out of memory under the runtime's memory limit, say) raised while the
 * results are built unwinds through __gc, which frees all of it. Each call frees it explicitly
 * too, as soon as it is done; guard_free is idempotent. */
#define GUARD_MT "sacm.x509.guard"

typedef struct {
    X509 *cert;
    X509_REQ *req;
    STACK_OF(X509_EXTENSION) *exts;
    GENERAL_NAMES *names;
    EXTENDED_KEY_USAGE *eku;
    BIO *bio;
    BIGNUM *bn;
    /* OPENSSL_malloc'd by i2d_*: always start from NULL, since i2d_* given a buffer writes into
     * it (and moves the pointer) instead of allocating */
    unsigned char *der;
    unsigned char *spki;
    char *text;         /* OPENSSL_malloc'd by BN_bn2hex */
} guard;

static void guard_free(guard *g)
{
    X509_free(g->cert);
    X509_REQ_free(g->req);
    sk_X509_EXTENSION_pop_free(g->exts, X509_EXTENSION_free);
    GENERAL_NAMES_free(g->names);
    EXTENDED_KEY_USAGE_free(g->eku);
    BIO_free(g->bio);
    BN_free(g->bn);
    OPENSSL_free(g->der);
    OPENSSL_free(g->spki);
    OPENSSL_free(g->text);
    memset(g, 0, sizeof *g);
}

static int l_guard_gc(lua_State *L)
{
    guard_free(luaL_checkudata(L, 1, GUARD_MT));
    return 0;
}

static guard *push_guard(lua_State *L)
{
    guard *g = lua_newuserdatauv(L, sizeof *g, 0);
    memset(g, 0, sizeof *g);
    luaL_setmetatable(L, GUARD_MT);
    return g;
}

/* The oldest error on the queue, as text, and the queue cleared. */
static const char *ssl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, size, "no detail from OpenSSL");
    } else {
        ERR_error_string_n(e, buf, size);
    }
    ERR_clear_error();
    return buf;
}

static int fail_ssl(lua_State *L, const char *condition, const char *what)
{
    char reason[256];
    return sacm_fail(L, condition, "%s: %s", what, ssl_reason(reason, sizeof reason));
}

/* ---- keys ---- */

static key_ud *push_key(lua_State *L)
{
    key_ud *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->pkey = NULL; /* created empty: __gc is safe whatever happens before the key is set */
    luaL_setmetatable(L, KEY_MT);
    return k;
}

static EVP_PKEY *check_key(lua_State *L, int idx)
{
    key_ud *k = luaL_checkudata(L, idx, KEY_MT);
    if (k->pkey == NULL)
        luaL_argerror(L, idx, "the key has been freed");
    return k->pkey;
}

static int l_key_gc(lua_State *L)
{
    key_ud *k = luaL_checkudata(L, 1, KEY_MT);
    EVP_PKEY_free(k->pkey); /* OpenSSL clears the private key material as it frees it */
    k->pkey = NULL;
    return 0;
}

typedef struct {
    uv_work_t work;
    char type[8];       /* "ec" or "rsa" */
    char curve[16];     /* for ec */
    unsigned int bits;  /* for rsa */
    EVP_PKEY *pkey;     /* the result; owned here until handed to Lua */
    char error[256];
    int cb_ref;
} keygen_req;

static void keygen_work(uv_work_t *work)
{
    keygen_req *r = work->data;
    if (strcmp(r->type, "ec") == 0)
        r->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", r->curve);
    else
        r->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)r->bits);
    if (r->pkey == NULL) {
        char reason[200];
        snprintf(r->error, sizeof r->error, "generating a %s key: %s", r->type, ssl_reason(reason, sizeof reason));
    }
    /* Threadpool threads live until exit: free the per-thread state OpenSSL just made here. */
    OPENSSL_thread_stop();
}

static void keygen_done(uv_work_t *work, int status)
{
    keygen_req *r = work->data;
    lua_State *L = sacm_take_callback(&r->cb_ref);
    if (L != NULL) {
        if (status < 0) {
            lua_pushnil(L);
            sacm_push_uv_error(L, status, "generate_key");
        } else if (r->pkey == NULL) {
            lua_pushnil(L);
            sacm_push_error(L, "internal-server-error", "%s", r->error);
        } else {
            key_ud *k = push_key(L);
            k->pkey = r->pkey;
            r->pkey = NULL;
            lua_pushnil(L);
        }
        sacm_invoke(L, 2);
    }
    EVP_PKEY_free(r->pkey);
    free(r);
}

/* generate_key(type, curve_or_bits, callback): callback(key) or callback(nil, err). Key
 * generation runs on the threadpool: RSA can take a second, which the loop must not wait for. */
static int l_generate_key(lua_State *L)
{
    const char *type = luaL_checkstring(L, 1);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    /* every argument checked before anything is allocated: a raised argument error leaks nothing */
    const char *curve = NULL;
    lua_Integer bits = 0;
    if (strcmp(type, "ec") == 0) {
        curve = luaL_optstring(L, 2, "P-256");
        /* the NIST curves every XMPP server's TLS stack accepts for client certificates */
        if (strcmp(curve, "P-256") != 0 && strcmp(curve, "P-384") != 0 && strcmp(curve, "P-521") != 0)
            return luaL_argerror(L, 2, lua_pushfstring(L, "curve must be P-256, P-384 or P-521, not '%s'", curve));
    } else if (strcmp(type, "rsa") == 0) {
        bits = luaL_optinteger(L, 2, 3072);
        if (bits < 2048 || bits > 8192)
            return luaL_argerror(L, 2, "RSA keys must have 2048 to 8192 bits");
    } else {
        return luaL_argerror(L, 1, lua_pushfstring(L, "key type must be 'ec' or 'rsa', not '%s'", type));
    }
    keygen_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return luaL_error(L, "out of memory");
    if (curve != NULL)
        snprintf(r->curve, sizeof r->curve, "%s", curve);
    r->bits = (unsigned int)bits;
    snprintf(r->type, sizeof r->type, "%s", type);
    r->work.data = r;
    lua_pushvalue(L, 3);
    r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = uv_queue_work(sacm_loop(), &r->work, keygen_work, keygen_done);
    if (rc < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, r->cb_ref);
        free(r);
        return sacm_fail_uv(L, rc, "generate_key");
    }
    return 0;
}

/* Pushes the contents of a memory BIO as a string. */
static void push_bio(lua_State *L, BIO *bio)
{
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    lua_pushlstring(L, data, len > 0 ? (size_t)len : 0);
}

/* load_key(pem) -> key, or nil, err. Only unencrypted PEM: an encrypted key would need its
 * passphrase here, and sacmrun keeps keys protected by file mode instead. */
static int l_load_key(lua_State *L)
{
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    if (len > 64 * 1024)
        return sacm_fail(L, "bad-format", "load_key: %zu bytes is too long for a PEM private key", len);
    key_ud *k = push_key(L);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        return fail_ssl(L, "internal-server-error", "load_key");
    /* an empty passphrase: an encrypted key fails instead of prompting on the terminal */
    k->pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"");
    BIO_free(bio);
    if (k->pkey == NULL)
        return fail_ssl(L, "bad-format", "load_key: not an unencrypted PEM private key");
    return 1;
}

/* key:pem() -> the private key as unencrypted PKCS#8 PEM ("BEGIN PRIVATE KEY") */
static int l_key_pem(lua_State *L)
{
    EVP_PKEY *pkey = check_key(L, 1);
    guard *g = push_guard(L);
    g->bio = BIO_new(BIO_s_mem());
    if (g->bio == NULL || !PEM_write_bio_PKCS8PrivateKey(g->bio, pkey, NULL, NULL, 0, NULL, NULL)) {
        char reason[256];
        guard_free(g);
        return luaL_error(L, "key:pem(): %s", ssl_reason(reason, sizeof reason));
    }
    push_bio(L, g->bio);
    /* the BIO held the private key: clear its memory before it is freed */
    char *data = NULL;
    long len = BIO_get_mem_data(g->bio, &data);
    if (data != NULL && len > 0)
        OPENSSL_cleanse(data, (size_t)len);
    guard_free(g);
    return 1;
}

/* Pushes the DER SubjectPublicKeyInfo of pkey; returns 0 on failure (nothing pushed). The
 * encoding is the guard's while it is copied into Lua. */
static int push_spki(lua_State *L, guard *g, EVP_PKEY *pkey)
{
    OPENSSL_free(g->spki);
    g->spki = NULL;
    int len = i2d_PUBKEY(pkey, &g->spki);
    if (len > 0)
        lua_pushlstring(L, (const char *)g->spki, (size_t)len);
    OPENSSL_free(g->spki);
    g->spki = NULL;
    return len > 0;
}

/* key:public_der() -> the public key as DER SubjectPublicKeyInfo (to compare with a certificate's) */
static int l_key_public_der(lua_State *L)
{
    EVP_PKEY *pkey = check_key(L, 1);
    char reason[256];
    guard *g = push_guard(L);
    if (!push_spki(L, g, pkey))
        return luaL_error(L, "key:public_der(): %s", ssl_reason(reason, sizeof reason));
    return 1;
}

/* key:description() -> "EC P-256", "RSA 3072" */
static int l_key_description(lua_State *L)
{
    EVP_PKEY *pkey = check_key(L, 1);
    char group[64];
    size_t glen = 0;
    if (EVP_PKEY_is_a(pkey, "EC") &&
        EVP_PKEY_get_utf8_string_param(pkey, "group", group, sizeof group, &glen)) {
        /* OpenSSL names the curve by its SEC name (prime256v1); say it the way it was asked for */
        int nid = OBJ_sn2nid(group);
        const char *nist = nid != NID_undef ? EC_curve_nid2nist(nid) : NULL;
        lua_pushfstring(L, "EC %s", nist ? nist : group);
    } else {
        ERR_clear_error();
        lua_pushfstring(L, "%s %d", EVP_PKEY_get0_type_name(pkey), EVP_PKEY_get_bits(pkey));
    }
    return 1;
}

/* ---- parsing: PEM or DER in, objects out ---- */

static int is_pem(const char *data, size_t len)
{
    return len >= 11 && memmem(data, len, "-----BEGIN ", 11) != NULL;
}

/* The DER bytes in data: data itself, or the contents of its first PEM block of that label (as
 * OpenSSL matches labels); *owned is then what to OPENSSL_free. NULL when there is no such block. */
static const unsigned char *der_bytes(const char *data, size_t len, const char *label, long *der_len,
                                      unsigned char **owned)
{
    *owned = NULL;
    if (len > 0x7fffffff)
        return NULL;
    if (!is_pem(data, len)) {
        *der_len = (long)len;
        return (const unsigned char *)data;
    }
    BIO *bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL)
        return NULL;
    char *name = NULL;
    int ok = PEM_bytes_read_bio(owned, der_len, &name, label, bio, NULL, NULL);
    BIO_free(bio);
    OPENSSL_free(name);
    return ok ? *owned : NULL;
}

/* Trailing bytes after the structure mean it is not one DER object: refused. */
static X509 *parse_cert(const char *data, size_t len)
{
    long n = 0;
    unsigned char *owned;
    const unsigned char *der = der_bytes(data, len, PEM_STRING_X509, &n, &owned), *p = der;
    X509 *c = der ? d2i_X509(NULL, &p, n) : NULL;
    if (c != NULL && p != der + n) {
        X509_free(c);
        c = NULL;
    }
    OPENSSL_free(owned);
    return c;
}

static X509_REQ *parse_req(const char *data, size_t len)
{
    long n = 0;
    unsigned char *owned;
    const unsigned char *der = der_bytes(data, len, PEM_STRING_X509_REQ, &n, &owned), *p = der;
    X509_REQ *r = der ? d2i_X509_REQ(NULL, &p, n) : NULL;
    if (r != NULL && p != der + n) {
        X509_REQ_free(r);
        r = NULL;
    }
    OPENSSL_free(owned);
    return r;
}

/* Pushes a distinguished name in RFC 2253 form ("CN=collector,O=grid"). The BIO is the
 * guard's while the string is pushed. */
static void push_name(lua_State *L, guard *g, const X509_NAME *name)
{
    g->bio = BIO_new(BIO_s_mem());
    if (g->bio == NULL || X509_NAME_print_ex(g->bio, name, 0, XN_FLAG_RFC2253) < 0) {
        ERR_clear_error();
        lua_pushliteral(L, "");
    } else {
        push_bio(L, g->bio);
    }
    BIO_free(g->bio);
    g->bio = NULL;
}

/* Pushes the list of id-on-xmppAddr values (UTF8String) in a subjectAltName. */
static void push_xmpp_addrs(lua_State *L, const GENERAL_NAMES *names)
{
    lua_newtable(L);
    int n = 0;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_OTHERNAME || OBJ_obj2nid(g->d.otherName->type_id) != NID_XmppAddr)
            continue;
        const ASN1_TYPE *v = g->d.otherName->value;
        if (v == NULL || v->type != V_ASN1_UTF8STRING)
            continue; /* RFC 6120 13.7.1.4: UTF8String only */
        lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(v->value.utf8string),
                        (size_t)ASN1_STRING_length(v->value.utf8string));
        lua_rawseti(L, -2, ++n);
    }
}

/* Seconds since the epoch of an ASN1_TIME; returns 0 on failure. */
static int asn1_epoch(const ASN1_TIME *t, lua_Integer *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    *out = (lua_Integer)timegm(&tm);
    return 1;
}

static void push_hex(lua_State *L, const unsigned char *bytes, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, len * 2);
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    luaL_pushresultsize(&b, len * 2);
}

/* cert_info(pem_or_der) -> {subject, issuer, serial, not_before, not_after, fingerprint,
 * xmpp_addrs, der, public_der}, or nil, err. fingerprint: SHA-256 of the DER, lowercase hex. */
static int l_cert_info(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    guard *g = push_guard(L);
    g->cert = parse_cert(data, len);
    if (g->cert == NULL)
        return fail_ssl(L, "bad-format", "cert_info: not a PEM or DER X.509 certificate");
    X509 *c = g->cert;
    int der_len = i2d_X509(c, &g->der);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    lua_Integer nb = 0, na = 0;
    EVP_PKEY *pub = X509_get0_pubkey(c); /* owned by c */
    if (der_len <= 0 || !X509_digest(c, EVP_sha256(), md, &md_len) ||
        !asn1_epoch(X509_get0_notBefore(c), &nb) || !asn1_epoch(X509_get0_notAfter(c), &na) || pub == NULL) {
        guard_free(g);
        return fail_ssl(L, "bad-format", "cert_info: the certificate's encoding, dates or key cannot be read");
    }
    lua_createtable(L, 0, 9);
    lua_pushlstring(L, (const char *)g->der, (size_t)der_len);
    lua_setfield(L, -2, "der");
    push_hex(L, md, md_len);
    lua_setfield(L, -2, "fingerprint");
    push_name(L, g, X509_get_subject_name(c));
    lua_setfield(L, -2, "subject");
    push_name(L, g, X509_get_issuer_name(c));
    lua_setfield(L, -2, "issuer");
    lua_pushinteger(L, nb);
    lua_setfield(L, -2, "not_before");
    lua_pushinteger(L, na);
    lua_setfield(L, -2, "not_after");
    g->bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(c), NULL);
    g->text = g->bn ? BN_bn2hex(g->bn) : NULL;
    lua_pushstring(L, g->text ? g->text : "");
    lua_setfield(L, -2, "serial");
    g->names = X509_get_ext_d2i(c, NID_subject_alt_name, NULL, NULL);
    push_xmpp_addrs(L, g->names);
    lua_setfield(L, -2, "xmpp_addrs");
    if (push_spki(L, g, pub))
        lua_setfield(L, -2, "public_der");
    ERR_clear_error(); /* a certificate without a SAN leaves "not found" on the queue */
    guard_free(g);
    return 1;
}

/* csr_info(pem_or_der) -> {subject, xmpp_addrs, signature_ok, public_der, der}, or nil, err.
 * signature_ok: the request is signed by the key it carries (proof of possession). */
static int l_csr_info(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    guard *g = push_guard(L);
    g->req = parse_req(data, len);
    if (g->req == NULL)
        return fail_ssl(L, "bad-format", "csr_info: not a PEM or DER PKCS#10 certificate request");
    EVP_PKEY *pub = X509_REQ_get0_pubkey(g->req); /* owned by the request */
    if (pub == NULL) {
        guard_free(g);
        return fail_ssl(L, "bad-format", "csr_info: the request's public key cannot be read");
    }
    lua_createtable(L, 0, 5);
    lua_pushboolean(L, X509_REQ_verify(g->req, pub) == 1);
    lua_setfield(L, -2, "signature_ok");
    push_name(L, g, X509_REQ_get_subject_name(g->req));
    lua_setfield(L, -2, "subject");
    g->exts = X509_REQ_get_extensions(g->req);
    g->names = g->exts ? X509V3_get_d2i(g->exts, NID_subject_alt_name, NULL, NULL) : NULL;
    push_xmpp_addrs(L, g->names);
    lua_setfield(L, -2, "xmpp_addrs");
    if (push_spki(L, g, pub))
        lua_setfield(L, -2, "public_der");
    int der_len = i2d_X509_REQ(g->req, &g->der);
    if (der_len > 0) {
        lua_pushlstring(L, (const char *)g->der, (size_t)der_len);
        lua_setfield(L, -2, "der");
    }
    ERR_clear_error();
    guard_free(g);
    return 1;
}

/* ---- making a request ---- */

/* The subject attributes csr() accepts, in the order they go into the name. */
static const char *const SUBJECT_FIELDS[] = {"C", "ST", "L", "O", "OU", "CN", NULL};

/* A request being built: the guard owns its parts; error says what failed. */
typedef struct {
    guard *g;
    char error[256];
} csr_build;

static int build_error(csr_build *b, const char *what)
{
    char reason[200];
    snprintf(b->error, sizeof b->error, "%s: %s", what, ssl_reason(reason, sizeof reason));
    return 0;
}

/* Adds one GENERAL_NAME to the request's names: an id-on-xmppAddr otherName (UTF8String) or a dNSName. */
static int add_name(csr_build *b, const char *value, size_t len, int xmpp)
{
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_STRING *s = ASN1_STRING_type_new(xmpp ? V_ASN1_UTF8STRING : V_ASN1_IA5STRING);
    if (gen == NULL || s == NULL || !ASN1_STRING_set(s, value, (int)len)) {
        GENERAL_NAME_free(gen);
        ASN1_STRING_free(s);
        return build_error(b, "building the subjectAltName");
    }
    if (xmpp) {
        ASN1_TYPE *t = ASN1_TYPE_new();
        ASN1_OBJECT *oid = OBJ_nid2obj(NID_XmppAddr); /* a static object: freeing it is a no-op */
        if (t == NULL || oid == NULL) {
            ASN1_TYPE_free(t);
            ASN1_STRING_free(s);
            GENERAL_NAME_free(gen);
            return build_error(b, "building an xmppAddr");
        }
        ASN1_TYPE_set(t, V_ASN1_UTF8STRING, s); /* t owns s */
        if (!GENERAL_NAME_set0_othername(gen, oid, t)) {
            ASN1_TYPE_free(t);
            GENERAL_NAME_free(gen);
            return build_error(b, "building an xmppAddr");
        }
    } else {
        GENERAL_NAME_set0_value(gen, GEN_DNS, s); /* gen owns s */
    }
    if (!sk_GENERAL_NAME_push(b->g->names, gen)) {
        GENERAL_NAME_free(gen);
        return build_error(b, "building the subjectAltName");
    }
    return 1;
}

static int add_checked_name(csr_build *b, lua_State *L, const char *field, int i, int xmpp)
{
    size_t len;
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (v == NULL || len == 0 || len > 3071) { /* 3071: RFC 7622's limit on a JID */
        if (i > 0)
            snprintf(b->error, sizeof b->error, "%s[%d] must be a non-empty string of at most 3071 bytes", field, i);
        else
            snprintf(b->error, sizeof b->error, "%s must be a non-empty string of at most 3071 bytes", field);
        return 0;
    }
    return add_name(b, v, len, xmpp);
}

/* Adds the strings at opts[field] (a string or a list of strings) as names. */
static int add_names(lua_State *L, csr_build *b, const char *field, int xmpp)
{
    int type = lua_getfield(L, 2, field);
    int ok = 1;
    if (type == LUA_TSTRING) {
        ok = add_checked_name(b, L, field, 0, xmpp);
    } else if (type == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer i = 1; ok && i <= n; i++) {
            lua_rawgeti(L, -1, i);
            ok = add_checked_name(b, L, field, (int)i, xmpp);
            lua_pop(L, 1);
        }
    } else if (type != LUA_TNIL) {
        snprintf(b->error, sizeof b->error, "%s must be a string or a list of strings", field);
        ok = 0;
    }
    lua_pop(L, 1);
    return ok;
}

static int build_subject(lua_State *L, csr_build *b)
{
    X509_NAME *name = X509_REQ_get_subject_name(b->g->req); /* owned by the request */
    int type = lua_getfield(L, 2, "subject");
    int ok = 1;
    if (type == LUA_TTABLE) {
        for (int i = 0; ok && SUBJECT_FIELDS[i]; i++) {
            if (lua_getfield(L, -1, SUBJECT_FIELDS[i]) == LUA_TSTRING) {
                size_t len;
                const char *v = lua_tolstring(L, -1, &len);
                if (len == 0 || len > 64 || !X509_NAME_add_entry_by_txt(name, SUBJECT_FIELDS[i], MBSTRING_UTF8,
                                                                        (const unsigned char *)v, (int)len, -1, 0)) {
                    ok = build_error(b, "the subject (each value 1 to 64 bytes)");
                }
            }
            lua_pop(L, 1);
        }
    } else if (type != LUA_TNIL) {
        snprintf(b->error, sizeof b->error, "subject must be a table such as {CN = \"collector\"}");
        ok = 0;
    }
    lua_pop(L, 1);
    return ok;
}

/* csr(key, {subject = {CN = ...}, xmpp_addrs = jid | {jid...}, dns = name | {names}})
 *   -> pem, der; or nil, err.
 * A PKCS#10 request signed with SHA-256 by key, asking for those names in subjectAltName (JIDs as
 * id-on-xmppAddr, RFC 6120 13.7.1.4) and for extendedKeyUsage clientAuth. */
static int l_csr(lua_State *L)
{
    EVP_PKEY *pkey = check_key(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    csr_build b;
    memset(&b, 0, sizeof b);
    guard *g = b.g = push_guard(L);
    g->req = X509_REQ_new();
    g->names = GENERAL_NAMES_new();
    g->eku = EXTENDED_KEY_USAGE_new();
    g->exts = sk_X509_EXTENSION_new_null();
    ASN1_OBJECT *client_auth = OBJ_nid2obj(NID_client_auth); /* static: EKU's free leaves it */
    int ok = g->req && g->names && g->eku && g->exts && client_auth ? 1 : build_error(&b, "allocating the request");
    ok = ok && (X509_REQ_set_version(g->req, 0) || build_error(&b, "setting the version")); /* v1, the only one */
    ok = ok && build_subject(L, &b);
    ok = ok && add_names(L, &b, "xmpp_addr", 1);
    ok = ok && add_names(L, &b, "dns", 0);
    if (ok && sk_GENERAL_NAME_num(g->names) == 0) {
        snprintf(b.error, sizeof b.error, "the request names nobody: give xmpp_addr (the JID) or dns");
        ok = 0;
    }
    ok = ok && (X509V3_add1_i2d(&g->exts, NID_subject_alt_name, g->names, 0, X509V3_ADD_DEFAULT) == 1 ||
                build_error(&b, "adding subjectAltName"));
    ok = ok && (sk_ASN1_OBJECT_push(g->eku, client_auth) || build_error(&b, "building extendedKeyUsage"));
    ok = ok && (X509V3_add1_i2d(&g->exts, NID_ext_key_usage, g->eku, 0, X509V3_ADD_DEFAULT) == 1 ||
                build_error(&b, "adding extendedKeyUsage"));
    ok = ok && (X509_REQ_add_extensions(g->req, g->exts) || build_error(&b, "adding the extension request"));
    ok = ok && (X509_REQ_set_pubkey(g->req, pkey) || build_error(&b, "setting the public key"));
    ok = ok && (X509_REQ_sign(g->req, pkey, EVP_sha256()) > 0 || build_error(&b, "signing the request"));
    if (!ok) {
        guard_free(g);
        return sacm_fail(L, "bad-request", "csr: %s", b.error);
    }
    g->bio = BIO_new(BIO_s_mem());
    int der_len = i2d_X509_REQ(g->req, &g->der);
    if (g->bio == NULL || der_len <= 0 || !PEM_write_bio_X509_REQ(g->bio, g->req)) {
        guard_free(g);
        return fail_ssl(L, "internal-server-error", "csr: encoding the request");
    }
    push_bio(L, g->bio);
    lua_pushlstring(L, (const char *)g->der, (size_t)der_len);
    guard_free(g);
    return 2;
}

int luaopen_sacm__x509(lua_State *L)
{
    static const luaL_Reg key_methods[] = {
        {"pem", l_key_pem},
        {"public_der", l_key_public_der},
        {"description", l_key_description},
        {NULL, NULL},
    };
    sacm_define_type(L, KEY_MT, key_methods, l_key_gc);
    lua_pop(L, 1);
    static const luaL_Reg no_methods[] = {{NULL, NULL}};
    sacm_define_type(L, GUARD_MT, no_methods, l_guard_gc);
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"generate_key", l_generate_key},
        {"load_key", l_load_key},
        {"csr", l_csr},
        {"csr_info", l_csr_info},
        {"cert_info", l_cert_info},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
