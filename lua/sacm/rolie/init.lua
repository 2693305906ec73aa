--- sacm.rolie: ROLIE (RFC 8322) for the repository: a provider serving posture, results and
-- policies as Atom feeds over HTTPS, and a client for other providers. See docs/rolie.md.
--
--   local rolie = require "sacm.rolie"
--   local p <close> = assert(rolie.serve{ repository = repo, policies_dir = "policies",
--     listen = { port = 8443, cert = "https.crt", key = "https.key" } })
local M = {}

M.serve = require("sacm.rolie.server").serve
M.hash_password = require("sacm.rolie.auth").hash_password
---@param opts sacm.rolie.ClientOptions
---@return sacm.rolie.Client
M.client = function(opts) return require("sacm.rolie.client").new(opts) end

return M
