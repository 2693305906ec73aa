--- Collection kind "sshd": the OpenSSH server's effective global settings. Preferably what
-- `sshd -T` prints (sshd's own reading of its configuration); where sshd cannot run that
-- (not root, no host keys), sshd_config and its Includes read here, over sshd's defaults.
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local errors = require "sacm.error"
local text = require("sacm.collect").text

local M = {
  kind = "sshd",
  description = "OpenSSH server effective settings (sshd -T, or sshd_config with defaults)",
  version = 1,
}

M.SSHD_PATHS = { "/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd" }
M.CONFIG_PATH = "/etc/ssh/sshd_config"
-- sshd resolves a relative Include against its configuration directory
M.CONFIG_DIR = "/etc/ssh"
local MAX_INCLUDE_DEPTH = 16 -- as sshd's SERVCONF_MAX_DEPTH

--- sshd's defaults (OpenSSH 9, sshd_config(5)) for the settings a policy is likely to check,
-- spelled as `sshd -T` prints them.
M.DEFAULTS = {
  addressfamily = "any", allowagentforwarding = "yes", allowstreamlocalforwarding = "yes",
  allowtcpforwarding = "yes", authorizedkeysfile = ".ssh/authorized_keys .ssh/authorized_keys2",
  banner = "none", clientalivecountmax = "3", clientaliveinterval = "0", compression = "yes",
  disableforwarding = "no", gatewayports = "no", gssapiauthentication = "no",
  hostbasedauthentication = "no", ignorerhosts = "yes", ignoreuserknownhosts = "no",
  kbdinteractiveauthentication = "yes", kerberosauthentication = "no", logingracetime = "120",
  loglevel = "INFO", maxauthtries = "6", maxsessions = "10", maxstartups = "10:30:100",
  passwordauthentication = "yes", permitemptypasswords = "no", permitlisten = "any",
  permitopen = "any", permitrootlogin = "without-password", permittty = "yes", permittunnel = "no",
  permituserenvironment = "no", permituserrc = "yes", port = "22", printlastlog = "yes",
  printmotd = "yes", pubkeyauthentication = "yes", strictmodes = "yes",
  streamlocalbindunlink = "no", syslogfacility = "AUTH", tcpkeepalive = "yes", usedns = "no",
  usepam = "no", x11displayoffset = "10", x11forwarding = "no", x11uselocalhost = "yes",
}

-- Old names sshd still accepts, and the name `sshd -T` reports them under.
M.ALIASES = {
  challengeresponseauthentication = "kbdinteractiveauthentication",
  dsaauthentication = "pubkeyauthentication",
  pubkeyacceptedkeytypes = "pubkeyacceptedalgorithms",
  hostbasedacceptedkeytypes = "hostbasedacceptedalgorithms",
  skeyauthentication = "kbdinteractiveauthentication",
}

-- Keywords whose every occurrence adds to the setting (sshd keeps a list); for all others
-- the first occurrence wins.
local LISTS = {
  acceptenv = true, allowgroups = true, allowusers = true, denygroups = true, denyusers = true,
  hostcertificate = true, hostkey = true, listenaddress = true, port = true, setenv = true,
  subsystem = true,
}

-- Values that are keywords: sshd matches them case-insensitively and prints them lowercase
-- (level and facility names it prints uppercase).
local UPPER = { loglevel = true, syslogfacility = true }
local LOWER_WORDS = {
  yes = true, no = true, ["without-password"] = true, ["prohibit-password"] = true,
  ["forced-commands-only"] = true, any = true, inet = true, inet6 = true, none = true,
  all = true, ["local"] = true, remote = true, delayed = true, ["point-to-point"] = true,
  ethernet = true, clientspecified = true,
}

local function normalize_value(key, value)
  if UPPER[key] then return value:upper() end
  local lower = value:lower()
  if LOWER_WORDS[lower] then
    if key == "permitrootlogin" and lower == "prohibit-password" then return "without-password" end
    return lower
  end
  return value
end

--- parse_sshd_t(text) -> attributes from `sshd -T` output: "keyword value" per line, keys as
-- printed (lowercase); a keyword printed on several lines (port, listenaddress, hostkey,
-- acceptenv, subsystem, ...) has its values joined with a space in order.
function M.parse_sshd_t(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do
    local key, value = line:match("^(%S+)%s*(.-)%s*$")
    if key and key:match("^[a-z][a-z0-9]*$") then
      out[key] = out[key] and (out[key] .. " " .. value) or value
    end
  end
  return out
end

--- parse_config(text) -> list of {keyword, value, line}: the directives of one sshd_config
-- file in order. Comments and blank lines are dropped; "Keyword value" and "Keyword=value"
-- both work; keywords are lowercased (aliases mapped to their current names); a value that is
-- one double-quoted word loses its quotes.
function M.parse_config(s)
  local out, n = {}, 0
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    local key, value = line:match("^%s*([%a][%w]*)%s*=?%s*(.-)%s*$")
    if key and not line:match("^%s*#") then
      key = key:lower()
      key = M.ALIASES[key] or key
      value = value:gsub("%s+", " ")
      local unquoted = value:match('^"([^"]*)"$')
      out[#out + 1] = { keyword = key, value = unquoted or value, line = n }
    end
  end
  return out
end

-- A glob(3) component as a Lua pattern: * ? and [...] classes; everything else literal.
local function glob_pattern(component)
  local p = component:gsub("[%^%$%(%)%%%.%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".")
  return "^" .. p:gsub("%[!", "[^") .. "$"
end

--- glob(pattern) -> sorted list of existing paths that match (an absolute pattern; wildcards
-- * ? [...] in any component; names starting with "." match only a pattern that does too).
function M.glob(pattern)
  local found = { "" }
  for component in pattern:gmatch("[^/]+") do
    local next_found = {}
    local wild = component:find("[%*%?%[]")
    for _, dir in ipairs(found) do
      if not wild then
        next_found[#next_found + 1] = dir .. "/" .. component
      else
        local lp = glob_pattern(component)
        for _, e in ipairs(fs.list(dir == "" and "/" or dir) or {}) do
          if e.name:match(lp) and (e.name:sub(1, 1) ~= "." or component:sub(1, 1) == ".") then
            next_found[#next_found + 1] = dir .. "/" .. e.name
          end
        end
      end
    end
    found = next_found
  end
  local out = {}
  for _, path in ipairs(found) do
    if path ~= "" and fs.exists(path) then out[#out + 1] = path end
  end
  table.sort(out)
  return out
end

--- load_config(path [, {config_dir}]) -> attributes | nil, err: what sshd would use as its
-- global settings, from the file, its Include directives (globs, relative ones against
-- config_dir, default /etc/ssh, sorted, up to 16 deep) and M.DEFAULTS. As in sshd the first
-- value of a keyword wins, list keywords (port, listenaddress, hostkey, acceptenv, allow/deny
-- users and groups, subsystem, setenv) collect every value. Directives below a Match line in
-- the same file are conditional and do not change the global settings. Also returns the list
-- of files read.
function M.load_config(path, opts)
  local config_dir = opts and opts.config_dir or M.CONFIG_DIR
  local values, lists, files = {}, {}, {}

  local function read_file(file, depth)
    if depth > MAX_INCLUDE_DEPTH then
      return nil, errors.new("bad-format", ("Include nested more than %d deep at %s"):format(MAX_INCLUDE_DEPTH, file))
    end
    local s, err = fs.read(file, { max_bytes = 4 << 20 })
    if not s then return nil, err end
    files[#files + 1] = file
    for _, d in ipairs(M.parse_config(s)) do
      if d.keyword == "match" then break end -- the rest of this file is conditional
      if d.keyword == "include" then
        for pattern in d.value:gmatch("%S+") do
          if pattern:sub(1, 1) ~= "/" then pattern = config_dir .. "/" .. pattern end
          for _, included in ipairs(M.glob(pattern)) do
            local ok, inc_err = read_file(included, depth + 1)
            if not ok then return nil, inc_err end
          end
        end
      elseif LISTS[d.keyword] then
        lists[d.keyword] = lists[d.keyword] or {}
        table.insert(lists[d.keyword], d.value)
      elseif values[d.keyword] == nil then
        values[d.keyword] = normalize_value(d.keyword, d.value)
      end
    end
    return true
  end

  local ok, err = read_file(path, 1)
  if not ok then return nil, err end
  local out = {}
  for k, v in pairs(M.DEFAULTS) do out[k] = v end
  for k, v in pairs(values) do out[k] = v end
  for k, list in pairs(lists) do out[k] = table.concat(list, " ") end
  return out, files
end

local function find_sshd(opts)
  if opts.sshd_path ~= nil then
    return opts.sshd_path and fs.exists(opts.sshd_path) and opts.sshd_path or nil
  end
  for _, path in ipairs(M.SSHD_PATHS) do
    if fs.exists(path) then return path end
  end
  return nil
end

--- applicable([opts]) -> true, or false and why: an sshd program must exist.
function M.applicable(opts)
  if find_sshd(opts or {}) then return true end
  return false, "no sshd on this host (looked for " .. table.concat(M.SSHD_PATHS, ", ") .. ")"
end

local function finish(attributes, source)
  local out = {}
  for k, v in pairs(attributes) do out[k] = text(v) end
  out.source = source
  return { attributes = out, items = {} }
end

--- collect({sshd_path, config_path}) -> {attributes = {<setting> = value, source}, items = {}}.
-- sshd_path: the program (default: the first of M.SSHD_PATHS that exists; false: do not run
-- sshd); config_path: default /etc/ssh/sshd_config. source is "sshd -T" or "config";
-- sshd_t_error says why sshd -T was not used when it exists but failed.
function M.collect(opts)
  opts = opts or {}
  local config = opts.config_path or M.CONFIG_PATH
  local sshd = find_sshd(opts)
  local why
  if sshd then
    local argv = { sshd, "-T" }
    if opts.config_path then argv[3], argv[4] = "-f", config end
    local r, err = proc.run(argv, { timeout = 10, clear_env = true, env = { PATH = "/usr/sbin:/usr/bin:/sbin:/bin" } })
    if r and r.ok and r.stdout:find("\n", 1, true) then
      return finish(M.parse_sshd_t(r.stdout), "sshd -T")
    end
    why = r and ("exited %s: %s"):format(tostring(r.code or r.signal), (r.stderr:gsub("%s+$", "")):sub(1, 300))
      or tostring(err)
  end
  local attributes, err = M.load_config(config, { config_dir = opts.config_dir })
  if not attributes then return nil, err end
  local data = finish(attributes, "config")
  if why then data.attributes.sshd_t_error = text(why) end
  return data
end

return M
