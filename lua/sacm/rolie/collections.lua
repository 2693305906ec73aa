--- sacm.rolie.collections: the provider's collections and how their entries are made from the
-- repository (posture, results) and the policy directory (policies).
--
-- Information types. RFC 8322's "Security Resource Information Type" registry holds "unknown"
-- and "vulnerability" (section 7.1). Posture, evaluation results and policies are none of them
-- vulnerabilities, and RFC 8322 says to use "unknown" for information of a type the registry does
-- not have; so all three say "unknown" in the information-type scheme (which every ROLIE client
-- understands) and name what they are in a second category scheme of our own (RFC 8322 allows
-- other schemes next to it): SCHEME_KIND with terms "posture", "results", "configuration-checklist".
-- A deployment whose consortium registered better terms sets them with rolie.serve's
-- information_types option.
local atom = require "sacm.rolie.atom"
local payload = require "sacm.grid.payload"
local proto = require "sacm.grid.protocol"
local json = require "sacm.json"
local time = require "sacm.time"
local xml = require "sacm.xml"

local M = {}

M.SCHEME_KIND = "urn:sacmrun:rolie:collection"
M.SCHEME_RESULT = "urn:sacmrun:rolie:result"       -- an entry's XCCDF result value
M.SCHEME_POSTURE_KIND = "urn:sacmrun:rolie:posture-kind"
M.NS_POLICY = "urn:sacmrun:policy:0"               -- rolie:format of a Lua policy file
M.TYPE_LUA = "text/x-lua"

M.LIST = {
  { name = "policies", workspace = "public", title = "Policies (configuration checklists)",
    kind_term = "configuration-checklist", information_type = "unknown",
    accept = { "application/x-lua", "text/x-lua", atom.TYPE_ENTRY }, filters = {} },
  { name = "posture", workspace = "private", title = "Posture attributes", kind_term = "posture",
    information_type = "unknown", accept = {}, query_type = "posture",
    filters = { "endpoint", "kind", "correlation", "since", "until", "max" } },
  { name = "results", workspace = "private", title = "Evaluation results", kind_term = "results",
    information_type = "unknown", accept = {}, query_type = "results",
    filters = { "endpoint", "rule", "policy", "result", "correlation", "since", "until", "max" } },
}
M.WORKSPACES = { { name = "public", title = "Public" }, { name = "private", title = "Private" } }

M.BY_NAME = {}
for _, c in ipairs(M.LIST) do M.BY_NAME[c.name] = c end

--- categories(c, information_types) -> the categories of collection c (feed, service document,
-- category document and every entry carry them).
function M.categories(c, information_types)
  return {
    { scheme = atom.SCHEME_INFORMATION_TYPE, term = information_types and information_types[c.name] or c.information_type },
    { scheme = M.SCHEME_KIND, term = c.kind_term },
  }
end

local function is_uuid(s)
  return #s == 36 and s:find("^%x+%-%x+%-%x+%-%x+%-%x+$") ~= nil
end

--- entry_iri(base, c, id) -> the atom:id of an entry: urn:uuid for the grid's UUIDs, else its URL.
function M.entry_iri(collection_url, id)
  if is_uuid(id) then return "urn:uuid:" .. id:lower() end
  return collection_url .. "/" .. id
end

local function links(collection_url, id, json_type)
  local href = collection_url .. "/" .. id
  return {
    { rel = "self", href = href, type = atom.TYPE_ENTRY },
    { rel = "alternate", href = href .. ".json", type = json_type or "application/json" },
  }
end

--- entry_of(c, row, collection_url, categories) -> entry table (sacm.rolie.atom) of a repository row.
function M.entry_of(c, row, collection_url, categories)
  local cats = { table.unpack(categories) }
  local e = {
    id = M.entry_iri(collection_url, row.id),
    links = links(collection_url, row.id),
    content = { type = "application/xml", src = collection_url .. "/" .. row.id .. ".xml" },
    categories = cats,
  }
  local who = row.hostname or row.endpoint
  if c.name == "posture" then
    e.title = ("%s posture of %s"):format(row.kind, who)
    e.updated = time.parse(row.collected)
    e.format = { ns = proto.NS_POSTURE }
    cats[#cats + 1] = { scheme = M.SCHEME_POSTURE_KIND, term = row.kind }
    e.summary = ("%s posture of %s collected by %s (%s)"):format(row.kind, row.endpoint,
      row.collector or "an unknown collector", row.status)
  else
    e.title = ("%s: %s on %s"):format(row.result, row.rule, who)
    e.updated = time.parse(row.evaluated)
    e.format = { ns = proto.NS_RESULT }
    cats[#cats + 1] = { scheme = M.SCHEME_RESULT, term = row.result }
    -- the assessment this result is part of (its correlation id's results), as OpenSCAP reads it
    local href = collection_url .. "/" .. row.id
    e.links[#e.links + 1] = { rel = "related", href = href .. ".xccdf", type = "application/xml",
      title = "the assessment as XCCDF 1.2" }
    e.links[#e.links + 1] = { rel = "related", href = href .. ".arf", type = "application/xml",
      title = "the assessment as an ARF 1.1 report collection" }
    e.summary = ("rule %s of policy %s on %s: %s"):format(row.rule, row.policy, row.endpoint, row.result)
  end
  return e
end

--- policy_entry(p, collection_url, categories) -> entry table of a policy summary
-- ({id, title, description, version, file, mtime}).
function M.policy_entry(p, collection_url, categories)
  return {
    id = M.entry_iri(collection_url, p.id),
    title = p.title,
    updated = p.mtime or 0,
    summary = p.description,
    links = links(collection_url, p.id),
    content = { type = M.TYPE_LUA, src = collection_url .. "/" .. p.id .. ".lua" },
    format = { ns = M.NS_POLICY, version = p.version },
    categories = categories,
  }
end

--- payload_json(el) -> JSON text of a stored posture or result element | nil, err.
-- The fields parse_posture / parse_result give, with times as RFC 3339 text.
function M.payload_json(el)
  local v, err
  if el.name == "posture" then
    v, err = payload.parse_posture(el)
    if v then v.collected = time.format(v.collected, 3) end
  else
    v, err = payload.parse_result(el)
    if v then
      v.evaluated = time.format(v.evaluated, 3)
      json.as_array(v.posture_ids); json.as_array(v.evidence)
    end
  end
  if not v then return nil, err end
  if v.data then json.as_array(v.data.items) end
  return json.encode(v, { indent = "  " }) .. "\n"
end

--- payload_xml(el) -> the stored element as an XML document.
function M.payload_xml(el)
  return '<?xml version="1.0" encoding="UTF-8"?>\n' .. xml.serialize(el) .. "\n"
end

return M
