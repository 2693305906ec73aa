--- sacm.xmpp.jid: split and compare XMPP addresses (RFC 7622), localpart@domainpart/resourcepart.
-- No stringprep/PRECIS folding beyond lowercasing the domain: JIDs the grid uses are ASCII.
local M = {}

--- split(jid) -> localpart or nil, domain, resource or nil. nil for a malformed JID.
---@param jid string
---@return string? localpart nil also for a malformed JID
---@return string? domain
---@return string? resource
function M.split(jid)
  if type(jid) ~= "string" or jid == "" then return nil end
  local rest, resource = jid:match("^([^/]*)/(.+)$")
  if not rest then rest = jid end
  local node, domain = rest:match("^([^@]*)@(.*)$")
  if not node then domain = rest elseif node == "" then return nil end
  if domain == "" or domain:find("[@/%s]") then return nil end
  return node, domain:lower(), resource
end

---@param node? string
---@param domain string
---@param resource? string
---@return string jid
function M.join(node, domain, resource)
  local s = domain
  if node then s = node .. "@" .. s end
  if resource then s = s .. "/" .. resource end
  return s
end

--- bare(jid) -> localpart@domain (or domain)
---@param jid string
---@return string? bare nil for a malformed JID
function M.bare(jid)
  local node, domain = M.split(jid)
  if not domain then return nil end
  return M.join(node, domain)
end

---@param jid string
---@return string? domain
function M.domain(jid)
  local _, domain = M.split(jid)
  return domain
end

---@param jid string
---@return string? resource
function M.resource(jid)
  local _, _, resource = M.split(jid)
  return resource
end

-- Every incoming stanza compares a few JIDs (iq replies, pubsub notifications), and they are
-- nearly always the same few: remember what normalize() made of them. Bounded, since the
-- strings come from the network; false marks a malformed JID.
local CACHE_LIMIT = 512
local cache, cached = {}, 0

--- normalize(jid): the domain lowercased; nil if malformed
---@param jid string
---@return string? jid normalized; nil if malformed
function M.normalize(jid)
  local hit = cache[jid]
  if hit ~= nil then return hit or nil end
  local node, domain, resource = M.split(jid)
  local normal = domain and M.join(node, domain, resource) or false
  if type(jid) == "string" then
    if cached >= CACHE_LIMIT then cache, cached = {}, 0 end
    cache[jid] = normal
    cached = cached + 1
  end
  return normal or nil
end

--- equal(a, b): true if both are the same JID once normalized; a malformed JID equals only
-- the identical string.
---@param a string
---@param b string
---@return boolean
function M.equal(a, b)
  if a == b then return type(a) == "string" end
  local na = M.normalize(a)
  return na ~= nil and na == M.normalize(b)
end

return M
