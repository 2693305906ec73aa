/* Two calls libstrophe 0.12 makes that sacmrun-xmpp.so answers itself, to learn what libstrophe
 * does not say and to skip work nobody reads. Both are bound the way xmpp_trust.c explains (the
 * module comes before libstrophe and libssl in its dlopen group, the binary links neither) and
 * hand over to the library's own function, found with dlsym(RTLD_NEXT).
 *
 * SSL_read: whether OpenSSL still holds decrypted bytes after the read. libstrophe reads at most
 * 4096 bytes per xmpp_run_once and OpenSSL decrypts whole records (up to 16 KiB), so bytes can
 * wait inside OpenSSL with the socket empty and no poll event to say so. The pump runs another
 * round exactly while some link has such bytes (xmpp.c), instead of a fixed count of rounds.
 *
 * xmpp_stanza_to_text: libstrophe renders every received stanza to text for its debug log
 * before any handler sees it (_handle_stream_stanza), logger or not: in the pubsub benchmark 72k
 * instructions per item, a sixth of the client. Once a session is up its received text is read
 * by nobody unless trace logging is on (xmpp_error.c stops looking at it), so that render is
 * declined there; libstrophe then logs nothing for the stanza and goes on. The render is known by
 * its call site, learnt at run time: it is the one call whose stanza the stanza handler receives
 * next (nothing is rendered between the two), which no call that sends a stanza can be, since
 * sent stanzas are never delivered. Every other call, sends among them, renders as before. */
#include <dlfcn.h>
#include <openssl/ssl.h>
#include "xmpp_link.h"

link_t *sacm_xmpp_running;

typedef int (*ssl_read_fn)(SSL *ssl, void *buf, int num);
typedef int (*to_text_fn)(xmpp_stanza_t *stanza, char **buf, size_t *buflen);

static void *library_function(const char *name)
{
    void *fn = dlsym(RTLD_NEXT, name);
    if (fn == NULL)
        sacm_log(SACM_LOG_ERROR, "xmpp", "cannot find %s after sacmrun-xmpp.so (%s): report it with `sacmrun -v`",
                 name, dlerror());
    return fn;
}

int SSL_read(SSL *ssl, void *buf, int num)
{
    static ssl_read_fn real;
    if (real == NULL && (real = (ssl_read_fn)library_function("SSL_read")) == NULL)
        return -1;
    int n = real(ssl, buf, num);
    if (sacm_xmpp_running)
        sacm_xmpp_running->tls_buffered = SSL_pending(ssl) > 0;
    return n;
}

static void *recv_log_site;        /* the call in _handle_stream_stanza, once learnt */
static void *last_site;            /* where the latest render was called from */
static const xmpp_stanza_t *last_stanza;

int xmpp_stanza_to_text(xmpp_stanza_t *stanza, char **buf, size_t *buflen)
{
    static to_text_fn real;
    void *site = __builtin_return_address(0);
    link_t *l = sacm_xmpp_running;
    if (site == recv_log_site && l && l->session_up && !sacm_log_enabled(SACM_LOG_TRACE))
        return XMPP_EMEM; /* libstrophe logs the text only if rendering succeeded */
    last_site = site;
    last_stanza = stanza;
    if (real == NULL && (real = (to_text_fn)library_function("xmpp_stanza_to_text")) == NULL)
        return XMPP_EMEM;
    return real(stanza, buf, buflen);
}

void sacm_xmpp_stanza_delivered(const xmpp_stanza_t *stanza)
{
    if (recv_log_site == NULL && stanza == last_stanza)
        recv_log_site = last_site;
    last_stanza = NULL;
}
