/* sacm._crypto: digests, HMAC, base64 and randomness from OpenSSL. XEP-0115 verification strings
 * (SHA-1 + base64), content hashes of policies and files, and UUIDs are built on these. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include "sacmrun.h"

static const EVP_MD *check_digest(lua_State *L, int idx)
{
    const char *name = luaL_checkstring(L, idx);
    const EVP_MD *md = EVP_get_digestbyname(name);
    if (md == NULL)
        luaL_argerror(L, idx, lua_pushfstring(L, "unknown digest '%s'", name));
    return md;
}

/* digest(algorithm, data) -> raw digest bytes */
static int l_digest(lua_State *L)
{
    const EVP_MD *md = check_digest(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int out_len = 0;
    if (!EVP_Digest(data, len, out, &out_len, md, NULL))
        return luaL_error(L, "digest failed");
    lua_pushlstring(L, (const char *)out, out_len);
    return 1;
}

/* hmac(algorithm, key, data) -> raw MAC bytes */
static int l_hmac(lua_State *L)
{
    const EVP_MD *md = check_digest(L, 1);
    size_t key_len, len;
    const char *key = luaL_checklstring(L, 2, &key_len);
    const char *data = luaL_checklstring(L, 3, &len);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int out_len = 0;
    if (key_len > (size_t)0x7fffffff ||
        !HMAC(md, key, (int)key_len, (const unsigned char *)data, len, out, &out_len))
        return luaL_error(L, "hmac failed");
    lua_pushlstring(L, (const char *)out, out_len);
    return 1;
}

/* pbkdf2(algorithm, password, salt, iterations, length) -> raw derived key (RFC 8018) */
static int l_pbkdf2(lua_State *L)
{
    const EVP_MD *md = check_digest(L, 1);
    size_t pass_len, salt_len;
    const char *pass = luaL_checklstring(L, 2, &pass_len);
    const char *salt = luaL_checklstring(L, 3, &salt_len);
    lua_Integer iter = luaL_checkinteger(L, 4);
    lua_Integer len = luaL_checkinteger(L, 5);
    luaL_argcheck(L, iter >= 1 && iter <= 0x7fffffff, 4, "iterations out of range");
    luaL_argcheck(L, len >= 1 && len <= 1024, 5, "length must be 1 to 1024 bytes");
    luaL_argcheck(L, pass_len <= 0x7fffffff, 2, "password too long");
    luaL_argcheck(L, salt_len <= 0x7fffffff, 3, "salt too long");
    unsigned char out[1024];
    if (!PKCS5_PBKDF2_HMAC(pass, (int)pass_len, (const unsigned char *)salt, (int)salt_len, (int)iter, md,
                           (int)len, out))
        return luaL_error(L, "pbkdf2 failed");
    lua_pushlstring(L, (const char *)out, (size_t)len);
    return 1;
}

static int l_base64_encode(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    if (len > ((size_t)0x7fffffff / 4) * 3)
        return luaL_argerror(L, 1, "too long");
    luaL_Buffer b;
    size_t cap = 4 * ((len + 2) / 3) + 1;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, cap);
    int n = EVP_EncodeBlock(out, (const unsigned char *)data, (int)len);
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int is_b64(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* base64_decode(text) -> bytes, or nil, err. Whitespace is ignored (line-wrapped input);
 * anything else that is not base64 is an error rather than silently skipped. */
static int l_base64_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    luaL_Buffer clean;
    luaL_buffinit(L, &clean);
    size_t pad = 0, kept = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            pad++;
        } else if (!is_b64(c) || pad > 0) {
            return sacm_fail(L, "bad-format", "invalid base64 at byte %d", (int)i + 1);
        }
        luaL_addchar(&clean, (char)c);
        kept++;
    }
    luaL_pushresult(&clean);
    if (kept % 4 != 0 || pad > 2)
        return sacm_fail(L, "bad-format", "invalid base64 length");
    size_t clean_len;
    const char *s = lua_tolstring(L, -1, &clean_len);
    if (clean_len > 0x7fffffff)
        return sacm_fail(L, "bad-format", "base64 input too long");
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, clean_len / 4 * 3 + 1);
    int n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)clean_len);
    if (n < 0)
        return sacm_fail(L, "bad-format", "invalid base64");
    luaL_pushresultsize(&b, (size_t)n - pad); /* DecodeBlock counts padding as zero bytes */
    return 1;
}

/* random(n) -> n bytes from a cryptographically secure generator */
static int l_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= 1024 * 1024, 1, "must be between 0 and 1 MiB");
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
    if (n > 0 && RAND_bytes(out, (int)n) != 1)
        return luaL_error(L, "random number generator failed");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* ---- hash_file: a file's digest computed on the threadpool, streamed, never loaded whole ---- */

typedef struct {
    uv_work_t work;
    char *path;
    const EVP_MD *md;
    int cb_ref;
    int err;          /* errno of the failure */
    const char *what; /* the call that failed */
    char hex[EVP_MAX_MD_SIZE * 2 + 1];
} hash_req;

static void hash_work(uv_work_t *work)
{
    hash_req *r = work->data;
    /* O_NONBLOCK for the open only: a FIFO without a writer must not hang a worker thread */
    int fd = open(r->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0) {
        r->err = errno, r->what = "open";
        return;
    }
    if (fstat(fd, &st) != 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        r->err = errno, r->what = "stat";
    } else if (S_ISDIR(st.st_mode)) {
        r->err = EISDIR, r->what = "read";
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        char *buf = malloc(64 * 1024);
        if (ctx == NULL || buf == NULL || EVP_DigestInit_ex(ctx, r->md, NULL) != 1) {
            r->err = ENOMEM, r->what = "hash";
        } else {
            for (;;) {
                ssize_t n = read(fd, buf, 64 * 1024);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0) {
                    r->err = errno, r->what = "read";
                    break;
                }
                if (n == 0)
                    break;
                EVP_DigestUpdate(ctx, buf, (size_t)n);
            }
            unsigned char digest[EVP_MAX_MD_SIZE];
            unsigned int len = 0;
            if (r->err == 0 && EVP_DigestFinal_ex(ctx, digest, &len) == 1) {
                static const char hex[] = "0123456789abcdef";
                for (unsigned int i = 0; i < len; i++) {
                    r->hex[2 * i] = hex[digest[i] >> 4];
                    r->hex[2 * i + 1] = hex[digest[i] & 15];
                }
                r->hex[2 * len] = '\0';
            } else if (r->err == 0) {
                r->err = EIO, r->what = "hash";
            }
        }
        free(buf);
        EVP_MD_CTX_free(ctx);
    }
    close(fd);
    /* Threadpool threads live until exit: free the per-thread state OpenSSL just made here. */
    OPENSSL_thread_stop();
}

static void hash_done(uv_work_t *work, int status)
{
    hash_req *r = work->data;
    lua_State *L = sacm_take_callback(&r->cb_ref);
    if (L != NULL) {
        if (status < 0) {
            lua_pushnil(L);
            sacm_push_uv_error(L, status, r->path);
        } else if (r->err != 0) {
            char context[PATH_MAX + 16];
            snprintf(context, sizeof context, "%s %s", r->what, r->path);
            lua_pushnil(L);
            sacm_push_uv_error(L, -r->err, context);
        } else {
            lua_pushstring(L, r->hex);
            lua_pushnil(L);
        }
        sacm_invoke(L, 2);
    }
    free(r->path);
    free(r);
}

/* hash_file(path, algorithm, callback): callback(hex) or callback(nil, err) */
static int l_hash_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const EVP_MD *md = check_digest(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    hash_req *r = calloc(1, sizeof *r);
    if (r == NULL || (r->path = strdup(path)) == NULL) {
        free(r);
        return luaL_error(L, "out of memory");
    }
    r->md = md;
    r->work.data = r;
    lua_pushvalue(L, 3);
    r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = uv_queue_work(sacm_loop(), &r->work, hash_work, hash_done);
    if (rc < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, r->cb_ref);
        free(r->path);
        free(r);
        return sacm_fail_uv(L, rc, "hash");
    }
    return 0;
}

int luaopen_sacm__crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"digest", l_digest},
        {"hmac", l_hmac},
        {"pbkdf2", l_pbkdf2},
        {"base64_encode", l_base64_encode},
        {"base64_decode", l_base64_decode},
        {"random", l_random},
        {"hash_file", l_hash_file},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
