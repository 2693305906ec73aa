---@meta
-- LuaCATS declarations of the objects sacm.xmpp and sacm.xmpp.pubsub return, for editors with a
-- Lua language server (docs/testing.md, "API annotations"). Declarations only: nothing requires
-- this file. They live here so that those modules' own files carry annotations only above their
-- functions.

---@class sacm.xmpp.Connection a client connection (xmpp.connect)
---@field jid string? the full JID the session is bound to
---@field domain string the server's domain
---@field state "connected"|"disconnected"
---@field closed boolean? set by close()

---@class sacm.xmpp.ConnectOptions
---@field jid? string required unless a client certificate carries one
---@field password? string
---@field client_cert? string PEM file: SASL EXTERNAL with client_key
---@field client_key? string
---@field host? string default: the JID's domain
---@field port? integer 5222
---@field servers? (string|{host: string, port: integer})[] the nodes of a cluster
---@field resource? string
---@field cafile? string default: the system store
---@field capath? string
---@field insecure? boolean skips certificate verification (logged)
---@field timeout? number default request timeout, seconds (30)
---@field connect_timeout? number seconds (15)
---@field reconnect? boolean true
---@field max_backoff? number seconds (30)
---@field disable_sm? boolean
---@field direct_tls? boolean
---@field ping_interval? number|false seconds without inbound traffic before a ping (60)
---@field ping_timeout? number seconds (20)

---@class sacm.xmpp.Handler a registered handler
---@field remove fun() takes it out; twice is harmless

---@class sacm.xmpp.Filter which stanzas a handler sees
---@field type? string the stanza's type attribute
---@field ns? string namespace of a child element
---@field child? string the child element's name
---@field from? string

---@class sacm.xmpp.pubsub.Service a XEP-0060 service seen from one connection (pubsub.service)
---@field conn sacm.xmpp.Connection
---@field jid string the service's JID
---@field timeout number? seconds per answer
---@field resend boolean whether idempotent requests are sent again after a reconnect

---@class sacm.xmpp.pubsub.Subscription
---@field node string
---@field jid string
---@field subid string?
---@field state "subscribed"|"pending"|"unconfigured"|string
---@field options_required boolean?

---@class sacm.xmpp.pubsub.Item
---@field id string
---@field payload sacm.xml.Element?
---@field publisher string?

---@class sacm.xmpp.pubsub.Event a notification (pubsub.parse_event)
---@field type "items"|"retract"|"delete"|"purge"|"configuration"|"subscription"
---@field node string
---@field from string
---@field items sacm.xmpp.pubsub.Item[]?
---@field retracts string[]?
---@field subids string[]? SHIM headers
---@field delay string? XEP-0203 stamp
---@field redirect string? delete
---@field config table? configuration, with a form
---@field jid string? subscription
---@field state string? subscription
---@field subid string? subscription
---@field message sacm.xml.Element the stanza

---@class sacm.xmpp.pubsub.Stream a queue of one service's notifications (svc:events)
---@field service string
---@field node string?
---@field dropped integer events dropped while the queue was full
