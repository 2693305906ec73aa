/* An XMPP connection trusts the anchors it names (cafile, capath), and only those.
 *
 * libstrophe 0.12's TLS set-up (tls_new in its tls_openssl.c) calls
 * SSL_CTX_set_default_verify_paths() and then loads the connection's cafile or capath on top, so
 * a connection given its grid's own CA would also accept a server certificate from any CA of the
 * system store. It also parses that whole bundle on every connect: about 480M instructions with
 * Debian's ca-certificates under OpenSSL 3, against a few million for one CA file. libstrophe
 * has no option against it, so this module defines the function libstrophe calls. The reference
 * is bound when sacmrun-xmpp.so is loaded (state.c: dlopen, RTLD_NOW | RTLD_LOCAL), looking in
 * the global scope (the binary, which links no OpenSSL) and then in this module's own group,
 * where the module comes before its dependencies, libssl among them. While the pump runs a link
 * that names its own anchors the definition here adds nothing; otherwise it does what OpenSSL's
 * does. Each link checks at its connected event that its TLS set-up came through here, and
 * refuses the session if it did not (a build that links libssl into the binary would bypass it).
 * spec/xmpp_spec.lua shows the effect with OpenSSL's default store pointed at the server's CA. */
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include "xmpp_link.h"

int SSL_CTX_set_default_verify_paths(SSL_CTX *ctx)
{
    link_t *running = sacm_xmpp_running;
    if (running) {
        running->tls_set_up_here = 1;
        if (running->own_anchors)
            return 1;
    }
    /* OpenSSL's own, for the default library context that libstrophe's SSL_CTX_new uses */
    return X509_STORE_set_default_paths(SSL_CTX_get_cert_store(ctx));
}
