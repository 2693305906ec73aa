--- sacm.grid.config: the grid configuration file the role scripts share.
--
-- A config file is Lua that returns a table of data (it runs with an empty environment: no
-- functions, no globals), for example:
--
--   return {
--     domain = "grid.example", host = "127.0.0.1", port = 5222, cafile = "/etc/sacm/ca.pem",
--     -- or the nodes of an XMPP cluster, tried in turn (failover):
--     -- servers = { "xmpp1.grid.example:5222", "xmpp2.grid.example:5222" },
--     pubsub = "pubsub.grid.example",                 -- default pubsub.<domain>
--     orchestrators = { "orchestrator@grid.example" }, -- peers of every component
--     collector = { jid = "collector@grid.example/web1", password = "...", interval = 3600,
--                   options = { files = { paths = { "/etc", "/usr/local/bin" } } } },
--     evaluator = { jid = "evaluator@grid.example/e1", password = "...", policies = "policies" },
--     repository = { jid = "repository@grid.example/r1", password = "...", database = "grid.db",
--                    upload = { listen = { host = "0.0.0.0", port = 8443, cert = "/etc/sacm/repository.crt",
--                                          key = "/etc/sacm/repository.key" } } },
--     orchestrator = { jid = "orchestrator@grid.example/main", password = "..." },
--   }
--
-- Secrets: a role section's password may instead be in a file of its own (password_file, mode
-- 0600) or in the environment (password_env = "NAME"), so the shared config holds none; or the
-- section uses client_cert/client_key instead of a password. Keep the config mode 0600 anyway
-- (load warns otherwise).
local fs = require "sacm.fs"
local errors = require "sacm.error"
local proto = require "sacm.grid.protocol"

local M = {}
local log = require("sacm.log").new("grid")

local SHARED = { "host", "port", "servers", "cafile", "capath", "insecure", "pubsub", "timeout", "connect_timeout",
  "max_backoff", "disable_sm", "direct_tls", "http_cafile" }

--- config.load(path) -> config | nil, err
function M.load(path)
  local text, err = fs.read(path)
  if not text then return nil, err end
  local st = fs.stat(path)
  if st and st.mode and (st.mode & 0x3f) ~= 0 then -- group/other bits
    log.warn("%s is readable by others and may hold passwords: chmod 600 it", path)
  end
  local chunk, cerr = load(text, "@" .. path, "t", {})
  if not chunk then return nil, errors.new("bad-config", cerr) end
  local ok, cfg = pcall(chunk)
  if not ok then return nil, errors.new("bad-config", tostring(cfg)) end
  if type(cfg) ~= "table" then return nil, errors.new("bad-config", path .. " must return a table") end
  if type(cfg.domain) ~= "string" then return nil, errors.new("bad-config", path .. ": domain is missing") end
  if cfg.servers ~= nil then
    local ok, serr = require("sacm.grid.member").parse_servers(cfg.servers)
    if not ok then return nil, errors.new("bad-config", path .. ": " .. serr.text) end
  end
  cfg.pubsub = cfg.pubsub or ("pubsub." .. cfg.domain)
  cfg.orchestrators = cfg.orchestrators or {}
  return cfg
end

-- Lua source for data: tables (keys sorted, so the file is the same each time), strings, numbers
-- and booleans.
local function serialize(v, indent)
  if type(v) == "table" then
    local keys, parts = {}, {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      local key = math.type(k) == "integer" and "" or (("[%q] = "):format(k))
      parts[#parts + 1] = indent .. "  " .. key .. serialize(v[k], indent .. "  ")
    end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
  end
  if type(v) == "string" or type(v) == "number" or type(v) == "boolean" then return ("%q"):format(v) end
  error("a grid config holds tables, strings, numbers and booleans, not " .. type(v), 3)
end

--- config.write(path, config) -> true | nil, err: writes a grid config file that load() reads
-- back, mode 0600 (it holds passwords).
function M.write(path, cfg)
  return fs.write(path, "return " .. serialize(cfg, "") .. "\n", { mode = 384 })
end

--- config.log_level(config, role): sets the log level of a role process: the role section's
-- log_level, else the config's, else info (a role says when it started, connected, reconnected
-- and loaded or rejected a policy) unless the command line asked for more than warn.
function M.log_level(cfg, role)
  local logm = require "sacm.log"
  local section = type(cfg[role]) == "table" and cfg[role] or {}
  local want = section.log_level or cfg.log_level
  if want then
    logm.level(want)
  elseif logm.level() == "warn" or logm.level() == "error" then
    logm.level("info")
  end
end

--- config.role_options(config, role) -> the options of <role>.start: the shared connection settings,
-- the role's own section, peers (the orchestrators, for components) and repository (the bare JID
-- of the repository section's account, for the roles that register with it).
function M.role_options(cfg, role)
  assert(proto.FEATURE[role], "unknown role")
  local section = cfg[role]
  if type(section) ~= "table" then error(("the grid config has no '%s' section"):format(role), 2) end
  local opts = {}
  for _, k in ipairs(SHARED) do opts[k] = cfg[k] end
  for k, v in pairs(section) do opts[k] = v end
  -- secrets kept out of the config file: from a file of their own, or from the environment
  if opts.password == nil and opts.password_file then
    local text, err = fs.read(opts.password_file)
    if not text then
      error(("the grid config's %s section: password_file %s: %s"):format(role, opts.password_file, tostring(err)), 2)
    end
    local st = fs.stat(opts.password_file)
    if st and st.mode and (st.mode & 0x3f) ~= 0 then
      log.warn("%s is readable by others and holds the %s's password: chmod 600 it", opts.password_file, role)
    end
    opts.password = text:gsub("[\r\n]+$", "")
  elseif opts.password == nil and opts.password_env then
    opts.password = os.getenv(opts.password_env)
    if not opts.password or opts.password == "" then
      error(("the grid config's %s section: the environment variable %s (password_env) is not set"):format(role,
        opts.password_env), 2)
    end
  end
  opts.password_file, opts.password_env, opts.log_level = nil, nil, nil
  if role ~= "orchestrator" and opts.peers == nil then opts.peers = cfg.orchestrators end
  if role ~= "repository" and opts.repository == nil and type(cfg.repository) == "table"
    and type(cfg.repository.jid) == "string" then
    opts.repository = cfg.repository.jid:match("^[^/]+")
  end
  return opts
end

return M
