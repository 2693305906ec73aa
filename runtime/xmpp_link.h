/* What runtime/xmpp.c (the libstrophe connections on the loop) and runtime/xmpp_error.c (why a
 * connection failed) share: the per-connection link. */
#ifndef SACM_XMPP_LINK_H
#define SACM_XMPP_LINK_H
#include <strophe.h>
#include "sacmrun.h"

/* Why the current connection attempt failed, as libstrophe, OpenSSL and the server told it,
 * gathered at the source: each link has a libstrophe context of its own, so its log messages and
 * certificate callbacks are about this connection only. Cleared when an attempt starts and after
 * each disconnect event. */
typedef struct xmpp_diag {
    char setup[256];          /* the socket could not be set up (sockopt callback) */
    int socket_error;         /* errno of a failed TCP connect */
    int tls_failed;           /* the TLS layer ended the stream ("Unrecoverable TLS error") */
    char tls_text[160];       /* OpenSSL's last error text */
    char tls_start[160];      /* TLS could not start (negotiation or context set-up failed) */
    char verify_error[128];   /* OpenSSL's verify result: "unable to get local issuer certificate" */
    char verify_code[80];     /* ... and its name: "X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY(20)" */
    char cert_subject[160];   /* the certificate that did not verify */
    char cert_issuer[160];
    char sasl_mechanism[32];  /* the SASL mechanism the server refused */
    char sasl_condition[48];  /* the condition of the server's <failure/> (RFC 6120 6.5) */
    char sasl_text[160];      /* and its <text/> */
    int auth_failed;          /* libstrophe gave up authenticating */
} xmpp_diag_t;

typedef struct link {
    xmpp_ctx_t *ctx; /* this connection's own libstrophe context */
    xmpp_log_t logger;
    xmpp_conn_t *conn;
    uv_poll_t *poll; /* NULL when not watching a socket */
    int poll_events;
    int event_ref, stanza_ref, self_ref;
    int release_when_disconnected;
    int released;
    int session_up; /* between the connected and the disconnected event */
    uint64_t last_read; /* uv_now() when the socket last became readable, or the attempt began */
    xmpp_sm_state_t *sm_state; /* XEP-0198 state kept across a drop, to resume the session */
    int own_anchors; /* cafile or capath given: the system store is not trusted (xmpp_trust.c) */
    int tls_set_up_here; /* this attempt's TLS set-up went through xmpp_trust.c */
    int tls_buffered; /* OpenSSL held decrypted bytes after libstrophe's last read (xmpp_hooks.c) */
    xmpp_diag_t diag;
    struct link *next;
} link_t;

/* xmpp_stanza.c: a received stanza (light userdata at 1) as an element table; raises when it is nested
 * deeper than the runtime takes. Called in protected mode (fuzz/stanza_table.c drives it too). */
int sacm_xmpp_convert_stanza(lua_State *L);

/* xmpp_error.c */
extern int sacm_xmpp_activity; /* stanzas, events and libstrophe log messages in the current round */
void sacm_xmpp_log_handler(void *userdata, xmpp_log_level_t level, const char *area, const char *msg);
int sacm_xmpp_certfail(const xmpp_tlscert_t *cert, const char *const errormsg);
link_t *sacm_xmpp_link_of_ctx(const xmpp_ctx_t *ctx); /* xmpp.c */
/* Pushes the "disconnected" event's info table for l, then clears l's diagnosis. */
void sacm_xmpp_push_disconnect_info(lua_State *L, link_t *l, int error, const xmpp_stream_error_t *stream_error);
int sacm_xmpp_check_tls_files(lua_State *L);

/* xmpp_hooks.c: the link xmpp_run_once is running (NULL outside the pump), which the TLS set-up
 * (xmpp_trust.c) and the reads and renders libstrophe does meanwhile are for. */
extern link_t *sacm_xmpp_running;
/* Called first by the stanza handler: teaches xmpp_hooks.c which render is libstrophe's log's. */
void sacm_xmpp_stanza_delivered(const xmpp_stanza_t *stanza);

#endif
