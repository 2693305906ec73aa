--- sacm.grid.protocol: the names the SACM grid speaks (docs/protocol.md is the specification).
--
-- Namespaces of the payloads, disco features and identities of each role, ad-hoc command nodes
-- with their forms, and the publish-subscribe nodes with their configuration. Every role takes its
-- names from here, so a change of wire format is a change of this file and of docs/protocol.md.
local M = {}

M.VERSION = "1"

-- Payload namespaces (versioned in the last segment). Version 1: notifications are small and
-- content travels to the repository over HTTPS (docs/protocol.md, section 5).
M.NS_POSTURE = "urn:sacmrun:posture:1"
M.NS_RESULT = "urn:sacmrun:result:1"
M.NS_STATUS = "urn:sacmrun:status:1"
M.NS_GRID = "urn:sacmrun:grid:1"

-- XEP-0363 HTTP File Upload: the repository is the grid's upload service.
M.NS_UPLOAD = "urn:xmpp:http:upload:0"

-- XEP-0128 extended disco info: every role describes itself in one form of this FORM_TYPE.
M.INFO_FORM_TYPE = M.NS_GRID .. "#info"

-- Role features (disco#info), what an orchestrator looks for in entity caps.
M.ROLES = { "collector", "evaluator", "repository", "orchestrator" }
M.FEATURE = {}
for _, role in ipairs(M.ROLES) do M.FEATURE[role] = M.NS_GRID .. "#" .. role end

--- feature_collect(kind) -> the feature a collector advertises for each posture kind it collects.
function M.feature_collect(kind) return M.NS_GRID .. ":collect:" .. kind end
--- feature_policy(id) -> the feature an evaluator advertises for each policy it holds.
function M.feature_policy(id) return M.NS_GRID .. ":policy:" .. id end

local COLLECT_PREFIX = M.NS_GRID .. ":collect:"
local POLICY_PREFIX = M.NS_GRID .. ":policy:"

--- kinds_of(info) / policies_of(info): the posture kinds or policy ids in a parsed disco#info.
local function suffixes(info, prefix)
  local out = {}
  for _, f in ipairs(info and info.features or {}) do
    if f:sub(1, #prefix) == prefix then out[#out + 1] = f:sub(#prefix + 1) end
  end
  table.sort(out)
  return out
end
function M.kinds_of(info) return suffixes(info, COLLECT_PREFIX) end

--- info_fields(info) -> the values of a role's XEP-0128 info form (role, endpoint, hostname,
-- kinds, policies) in a parsed disco#info, or {}.
function M.info_fields(info)
  local forms = require "sacm.xmpp.forms"
  for _, x in ipairs(info and info.forms or {}) do
    local f = forms.parse(x)
    if f and f.form_type == M.INFO_FORM_TYPE then return f.values end
  end
  return {}
end
function M.policies_of(info) return suffixes(info, POLICY_PREFIX) end

-- The disco identity of every grid role: a client that is an automated agent (XEP-0030 registry
-- has no SACM category; category 'client' type 'bot' is the closest honest description).
function M.identity(role)
  return { category = "client", type = "bot", name = "sacmrun " .. role }
end

-- Caps node (XEP-0115 'node'): names the software.
M.CAPS_NODE = "https://sacmrun.example/grid"

-- Ad-hoc command nodes (XEP-0050).
M.CMD = {
  collect = M.NS_GRID .. "#collect",
  evaluate = M.NS_GRID .. "#evaluate",
  status = M.NS_GRID .. "#status",
  cancel = M.NS_GRID .. "#cancel",
  query = M.NS_GRID .. "#query",
  get = M.NS_GRID .. "#get",
}

-- Publish-subscribe nodes on the grid's pubsub service.
M.NODE = {
  posture = "sacm/posture",
  results = "sacm/results",
  status = "sacm/status",
}

-- Node configuration. The nodes carry notifications only: the repository receives the content
-- itself over HTTPS and acknowledges it, so the XMPP server keeps no history (transient nodes:
-- its cost per publish stays constant however long the grid runs). Whitelist access: only the
-- accounts the repository (the nodes' owner) affiliates may subscribe or publish.
M.NODE_CONFIG = {
  access_model = "whitelist",
  publish_model = "publishers",
  persist_items = false,
  max_items = 1,
  deliver_payloads = true,
  notify_retract = false,
  notify_delete = true,
  -- a subscriber gets what is published from then on, never an old notification replayed
  send_last_published_item = "never",
  -- each notification carries its server-verified publisher (ejabberd; Prosody: the pubsub
  -- component's expose_publisher), which readers check against the producer it names
  itemreply = "publisher",
}

-- What each role's account may do on each node (XEP-0060 affiliations the repository sets).
-- "publisher" may publish and subscribe, "member" may subscribe only; no entry: no access.
M.AFFILIATIONS = {
  collector = { posture = "publisher", status = "publisher" },
  evaluator = { posture = "member", results = "publisher", status = "publisher" },
  orchestrator = { posture = "member", results = "member", status = "publisher" },
}

-- Bounds of the data plane (bytes). A notification never exceeds NOTICE_MAX; content whose
-- serialized form is at most INLINE_MAX travels inside its notification as well.
M.NOTICE_MAX = 16384
M.INLINE_MAX = 8192
M.UPLOAD_MAX = 64 * 1024 * 1024 -- default largest upload a repository accepts

-- Identifiers (posture, result and set ids, endpoint ids, correlation ids): at most ID_MAX bytes
-- of letters, digits and . _ : @ / -, starting with a letter or digit. Nothing else can reach a
-- report, a database key or a URL path.
M.ID_MAX = 128
function M.valid_id(s)
  return type(s) == "string" and #s >= 1 and #s <= M.ID_MAX and s:match("^[%w][%w%._:@/%-]*$") ~= nil
end

-- How far in the future a producer's clock may be: posture collected, or results evaluated,
-- later than this many seconds from the receiver's now are refused (a date far ahead would
-- otherwise stay "the newest" for ever).
M.MAX_CLOCK_SKEW = 300

-- Result values (XCCDF 1.2 result types used by the grid).
M.RESULTS = { "pass", "fail", "error", "notapplicable", "notchecked" }
M.RESULT_SET = {}
for _, r in ipairs(M.RESULTS) do M.RESULT_SET[r] = true end

M.SEVERITIES = { "high", "medium", "low", "info" }
M.SEVERITY_SET = {}
for _, s in ipairs(M.SEVERITIES) do M.SEVERITY_SET[s] = true end

------------------------------------------------------------------------------ command forms

-- A form field's check (sacm.xmpp.forms) for identifiers.
local function id_check(v)
  if M.valid_id(v) then return true end
  return nil, ("'%s' is not an identifier (letters, digits, . _ : @ / -, at most %d bytes)"):format(
    v:sub(1, 64):gsub("[%c]", "?"), M.ID_MAX)
end
M.id_check = id_check

M.MAX_KIND_TIMEOUT = 3600 -- seconds: the largest time budget per kind a collect command may ask for
M.QUERY_MAX = 500 -- largest page a repository returns

--- collect_form(kinds) -> the form of the collect command, offering the kinds given.
function M.collect_form(kinds)
  local options = {}
  for i, k in ipairs(kinds) do options[i] = k end
  return {
    title = "Collect posture", form_type = M.CMD.collect,
    instructions = "Collect posture attributes from this collector's endpoint and publish them.",
    fields = {
      { var = "kinds", type = "list-multi", label = "Posture kinds (none: all)", options = options },
      { var = "correlation", type = "text-single", label = "Correlation id", check = id_check },
      { var = "timeout", type = "text-single", label = "Time budget per kind (s)", datatype = "xs:integer",
        range = { min = 1, max = M.MAX_KIND_TIMEOUT } },
    },
  }
end

function M.evaluate_form(policies)
  local options = {}
  for i, p in ipairs(policies) do options[i] = p end
  return {
    title = "Evaluate posture", form_type = M.CMD.evaluate,
    fields = {
      { var = "endpoints", type = "text-multi", label = "Endpoints (none: every endpoint with posture)", check = id_check },
      { var = "correlation", type = "text-single", label = "Correlation id of the posture to judge", check = id_check },
      { var = "policies", type = "list-multi", label = "Policies (none: all)", options = options },
      { var = "kinds", type = "list-multi", label = "Judge only rules whose posture kinds are among these (none: all)" },
    },
  }
end

M.CANCEL_FORM = {
  title = "Cancel", form_type = M.CMD.cancel,
  fields = { { var = "correlation", type = "text-single", label = "Correlation id", required = true, check = id_check } },
}

M.QUERY_FORM = {
  title = "Query the repository", form_type = M.CMD.query,
  fields = {
    { var = "type", type = "list-single", label = "What", required = true, value = "results",
      options = { "posture", "results", "history" } },
    { var = "endpoint", type = "text-single", label = "Endpoint id or hostname", check = id_check },
    { var = "kind", type = "text-single", label = "Posture kind", check = id_check },
    { var = "attribute", type = "text-single", label = "Posture attribute name" },
    { var = "rule", type = "text-single", label = "Rule id", check = id_check },
    { var = "policy", type = "text-single", label = "Policy id", check = id_check },
    { var = "result", type = "list-single", label = "Result", options = M.RESULTS },
    { var = "correlation", type = "text-single", label = "Correlation id", check = id_check },
    { var = "since", type = "text-single", label = "From (XEP-0082 date-time)" },
    { var = "until", type = "text-single", label = "To (XEP-0082 date-time)" },
    { var = "max", type = "text-single", label = "Page size", datatype = "xs:integer", value = "50",
      range = { min = 1, max = M.QUERY_MAX } },
    { var = "after", type = "text-single", label = "Continue after (cursor from the last page)" },
  },
}

M.GET_FORM = {
  title = "Retrieve an item", form_type = M.CMD.get,
  fields = { { var = "id", type = "text-single", label = "Posture or result id", required = true, check = id_check } },
}


return M
