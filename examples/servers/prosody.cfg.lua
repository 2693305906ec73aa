-- Prosody 0.12 configuration for a SACM grid over XMPP-Grid (sacmrun).
--
-- Install as /etc/prosody/prosody.cfg.lua (Debian: `apt-get install prosody`), then
--   prosodyctl check config
--   prosodyctl register repository grid.example 'PASSWORD'   # and collector, evaluator, ...
--   prosodyctl mod_sacm_ccm2 enroll collector-web1@grid.example --expires 1h   # an endpoint enrolling a certificate
--   systemctl restart prosody
--
-- Lines marked  -- DEPLOY: ...  hold the values a deployment changes; everything else is the
-- grid's policy and should stay as it is. The domain grid.example occurs in three settings
-- (VirtualHost, Component, the pubsub admins); change all three together.
--
-- The test suite starts Prosody from this very file (spec/support/prosody.lua, `shipped = true`),
-- substituting only the DEPLOY values (domain, interface, port, certificate paths, data, log and
-- pid paths) and adding what a private test server needs (run_as_root, daemonize = false). If a
-- DEPLOY line is changed in shape, that harness fails and names the line: keep the two in step.
--
-- Provisioning model: accounts are created by the operator with prosodyctl (no in-band
-- registration). The repository account is the only one allowed to create pubsub nodes; it owns
-- the grid's nodes and affiliates the other accounts itself (publisher, member). No grid account
-- is a server administrator.

---------------------------------------------------------------------------- process and files
pidfile = "/run/prosody/prosody.pid"                 -- DEPLOY: pid file (Debian's default)
data_path = "/var/lib/prosody"                       -- DEPLOY: accounts and rosters (Debian's default)
log = { { levels = { min = "info" }, to = "file", filename = "/var/log/prosody/prosody.log" } } -- DEPLOY: log file and level

-- Without this every STARTTLS login stalls ~40 ms (Nagle's algorithm against delayed ACKs on the
-- small handshake writes).
network_settings = { nagle = false }

---------------------------------------------------------------------------- network
-- Clients (c2s) only: STARTTLS on 5222. No server-to-server federation, no HTTP, no external
-- components, no direct-TLS port: the grid is one server, and every other listener is attack
-- surface it does not need.
interfaces = { "*" }                                 -- DEPLOY: addresses to listen on ("*": all IPv4)
c2s_ports = { 5222 }                                 -- DEPLOY: client port
c2s_direct_tls_ports = {}
s2s_ports = {}
component_ports = {}
http_ports = {}
https_ports = {}
modules_disabled = { "s2s" }

---------------------------------------------------------------------------- TLS and authentication
-- The server certificate must name grid.example and pubsub.grid.example (subjectAltName DNS);
-- the key must be readable by the prosody user.
ssl = { certificate = "/etc/sacm/xmpp.crt", key = "/etc/sacm/xmpp.key" } -- DEPLOY: server certificate and key
-- Where Prosody also looks for certificates by host name; set to the same directory so that it
-- indexes one that exists (the default, certs/ beside this file, may not).
certificates = "/etc/sacm"                           -- DEPLOY: certificate directory
c2s_require_encryption = true
-- Accounts log in with a password (stored as SCRAM hashes; SCRAM-SHA-1 and PLAIN, only after
-- STARTTLS) or with a client certificate (SASL EXTERNAL) that the grid CA issued through ccm2 and
-- that is on the account's certificate list: mod_auth_sacm_ccm2, shipped with sacmrun, which
-- loads mod_sacm_ccm2 (Client Certificate Management 2.0, docs/protocol.md "ccm2 profile").
-- Enrolled endpoints are certificate-only (docs/deploy.md, "Enrolling components").
authentication = "sacm_ccm2"
-- Where `make install` puts the two modules ($(SHAREDIR)/prosody-modules).
plugin_paths = { "/usr/local/share/sacmrun/prosody-modules" } -- DEPLOY: sacmrun's Prosody modules
-- The grid CA: it signs the certificates of ccm2 add-cert requests, and client certificates must
-- chain to it. The key must be readable by the prosody user, and by nobody else. Needs luaossl
-- (Debian: lua-luaossl).
sacm_ccm2_ca = { certificate = "/etc/sacm/grid-ca.crt", key = "/etc/sacm/grid-ca.key" } -- DEPLOY: grid CA
sacm_ccm2_certificate_days = 30   -- lifetime of an issued certificate; endpoints renew before it ends
sacm_ccm2_max_certificates = 8    -- unexpired certificates per account (renewal overlaps need 2)
-- Ask clients for a certificate (they need not send one: password clients do not). Without
-- lsec_ignore_purpose = false, clientAuth-only certificates fail as "unsuitable certificate purpose".
c2s_ssl = { cafile = "/etc/sacm/grid-ca.crt", verify = { "peer", "client_once" }, verifyext = { lsec_ignore_purpose = false } } -- DEPLOY: grid CA certificate
storage = "internal"
allow_registration = false                           -- accounts come from prosodyctl, never from clients

-- No server administrators: nobody may run admin commands over XMPP. The pubsub service has its
-- own admin (below), which is not a server admin.
admins = {}

-- tls, saslauth: STARTTLS and SASL. disco, roster, ping, adhoc: what sacmrun's clients use.
-- smacks: XEP-0198 stream management (resumption after a network blip). pep: also carries
-- entity capabilities (Prosody has no separate mod_caps). posix: signals (SIGTERM shuts down
-- cleanly, SIGHUP reloads) and the pid file.
-- sacm_xmlns_guard (sacmrun's, installed with it): refuses stanzas with an element in the xml
-- prefix's namespace, which Prosody would relay as XML no client can parse (the recipient's
-- stream would fail); see the module's comment.
modules_enabled = { "tls", "saslauth", "disco", "roster", "ping", "adhoc", "smacks", "pep", "posix",
                    "sacm_xmlns_guard" }

---------------------------------------------------------------------------- the grid's domain
VirtualHost "grid.example"                           -- DEPLOY: the grid's XMPP domain

---------------------------------------------------------------------------- the grid's pubsub service
Component "pubsub.grid.example" "pubsub"             -- DEPLOY: pubsub.<domain>
    -- Only an admin of the service may create nodes (Prosody's mod_pubsub answers anyone else's
    -- <create/> with forbidden). A component-level admin is an admin of this pubsub service
    -- only, not of the server. Prosody also treats it as owner of every node of the service on
    -- which it has no affiliation of its own (an explicit one, even "member", takes precedence).
    -- The grid's nodes are transient (persist_items = false), so pubsub storage holds no items.
    admins = { "repository@grid.example" }           -- DEPLOY: repository@<domain>
    -- Each notification says who published it (the server's word, not the publisher's), so
    -- evaluators and orchestrators can check it against the collector or evaluator it names.
    expose_publisher = true
