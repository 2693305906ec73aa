--- sacm.jid: split and compare XMPP addresses (RFC 7622), localpart@domainpart/resourcepart.
-- No stringprep/PRECIS folding beyond lowercasing the domain: JIDs the grid uses are ASCII.
local M = {}

--- split(jid) -> localpart or nil, domain, resource or nil. nil for a malformed JID.
function M.split(jid)
  if type(jid) ~= "string" or jid == "" then return nil end
  local rest, resource = jid:match("^([^/]*)/(.+)$")
  if not rest then rest = jid end
  local node, domain = rest:match("^([^@]*)@(.*)$")
  if not node then domain = rest elseif node == "" then return nil end
  if domain == "" or domain:find("[@/%s]") then return nil end
  return node, domain:lower(), resource
end

function M.join(node, domain, resource)
  local s = domain
  if node then s = node .. "@" .. s end
  if resource then s = s .. "/" .. resource end
  return s
end

--- bare(jid) -> localpart@domain (or domain)
function M.bare(jid)
  local node, domain = M.split(jid)
  if not domain then return nil end
  return M.join(node, domain)
end

function M.domain(jid)
  local _, domain = M.split(jid)
  return domain
end

function M.resource(jid)
  local _, _, resource = M.split(jid)
  return resource
end

--- normalize(jid): the domain lowercased; nil if malformed
function M.normalize(jid)
  local node, domain, resource = M.split(jid)
  if not domain then return nil end
  return M.join(node, domain, resource)
end

function M.equal(a, b)
  return a ~= nil and b ~= nil and M.normalize(a) == M.normalize(b)
end

return M
