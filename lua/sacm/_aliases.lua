--- sacm._aliases: the module names sacmrun had before its library was arranged in layers
-- (sacm.xmpp.*, sacm.http.*, sacm.policy.*), so that playbooks written against them keep working.
-- Installed by sacm._boot as the last package searcher: a name found as a file is never aliased,
-- and an old name gives the very module table of the new one.
local M = {}

M.OLD_NAMES = {
  ["sacm.stanza"] = "sacm.xmpp.stanza", ["sacm.jid"] = "sacm.xmpp.jid", ["sacm.caps"] = "sacm.xmpp.caps",
  ["sacm.disco"] = "sacm.xmpp.disco", ["sacm.pubsub"] = "sacm.xmpp.pubsub", ["sacm.commands"] = "sacm.xmpp.commands",
  ["sacm.forms"] = "sacm.xmpp.forms", ["sacm.ccm2"] = "sacm.xmpp.ccm2",
  ["sacm.http_client"] = "sacm.http.client", ["sacm.http_pool"] = "sacm.http.pool",
  ["sacm.policy_helpers"] = "sacm.policy.helpers", ["sacm.sandbox"] = "sacm.policy.sandbox",
}

local function search(name)
  local new = M.OLD_NAMES[name]
  if not new then return nil end
  return function() return require(new) end, new
end

--- install(): adds the searcher once.
function M.install()
  for _, s in ipairs(package.searchers) do
    if s == search then return end
  end
  package.searchers[#package.searchers + 1] = search
end

return M
