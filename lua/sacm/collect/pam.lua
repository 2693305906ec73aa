--- Collection kind "pam": the PAM stacks that decide how passwords are checked and changed, and
-- the configuration files of the modules benchmarks look at: pwquality (password strength),
-- faillock (lockout after failures) and pwhistory (reuse). A module option given on its PAM line
-- overrides the same setting in the module's file, so the kind reports the effective value of
-- each setting with where it came from.
local confdirs = require "sacm.confdirs"
local text = require("sacm.collect").text

local M = {
  kind = "pam",
  description = "PAM stacks (common-*, su) and pwquality/faillock/pwhistory settings in effect",
  version = 1,
}

M.PAM_DIR = "/etc/pam.d"
--- The stacks read when opts.services is not given: Debian's common-* files, which every
-- login service includes, and su (pam_wheel).
M.DEFAULT_SERVICES = { "common-auth", "common-account", "common-password", "common-session", "su" }

-- Each module's own configuration: files read in order (later settings win), and the stack whose
-- line's options override them.
M.MODULE_CONFIGS = {
  pwquality = { files = { "/etc/security/pwquality.conf" }, dir = "/etc/security/pwquality.conf.d",
    module = "pam_pwquality", stack = "common-password" },
  faillock = { files = { "/etc/security/faillock.conf" }, module = "pam_faillock", stack = "common-auth" },
  pwhistory = { files = { "/etc/security/pwhistory.conf" }, module = "pam_pwhistory", stack = "common-password" },
}

--- parse_stack(text) -> list of {type, control, module, args, line} of a pam.d file in order:
-- "type control module args", "#" comments, "\" continues a line, a control may be a bracketed
-- "[value=action ...]" list, a leading "-" on the type (skip the line quietly if the module is
-- missing) is dropped. "@include name" lines give {type = "@include", module = name}. module is
-- the file name without directory and ".so" ("pam_unix").
function M.parse_stack(s)
  local out, pending, start = {}, nil, nil
  for n, raw in confdirs.lines(s) do
    local line = raw
    if pending then line, pending = pending .. " " .. raw, nil else start = n end
    if line:sub(-1) == "\\" then
      pending = line:sub(1, -2)
    else
      local body = line:gsub("#.*$", ""):match("^%s*(.-)%s*$")
      local include = body:match("^@include%s+(%S+)")
      if include then
        out[#out + 1] = { type = "@include", module = include, args = "", line = start }
      elseif body ~= "" then
        local ptype, rest = body:match("^%-?(%S+)%s+(.*)$")
        local control
        if rest and rest:sub(1, 1) == "[" then
          control, rest = rest:match("^(%b[])%s*(.*)$")
        elseif rest then
          control, rest = rest:match("^(%S+)%s*(.*)$")
        end
        local path, args = (rest or ""):match("^(%S+)%s*(.*)$")
        if ptype and control and path then
          local module = path:match("([^/]+)$"):gsub("%.so$", "")
          -- white space within the options (a continued line's indentation) means nothing to PAM
          out[#out + 1] = { type = ptype:lower(), control = control, module = module,
            args = (args:gsub("%s+", " ")), line = start }
        end
      end
    end
  end
  return out
end

--- parse_args(args) -> {[name] = value} from module options: "name=value" or a bare flag
-- ("enforce_for_root", value true). Bracketed values ("[...]") are taken whole.
function M.parse_args(args)
  local out = {}
  for word in tostring(args or ""):gmatch("%S+") do
    local name, value = word:match("^([%w_]+)=(.*)$")
    if name then out[name] = value else out[word] = true end
  end
  return out
end

--- parse_module_conf(text) -> {[name] = {value, line}}: "name = value" or bare "name" (a flag,
-- value true) lines, "#" comments; the last assignment of a name wins.
function M.parse_module_conf(s)
  local out = {}
  for n, line in confdirs.lines(s) do
    local body = line:gsub("#.*$", ""):match("^%s*(.-)%s*$")
    if body ~= "" then
      local name, value = body:match("^([%w_]+)%s*=%s*(.-)$")
      if name then
        out[name] = { value = value, line = n }
      elseif body:find("^[%w_]+$") then
        out[body] = { value = true, line = n }
      end
    end
  end
  return out
end

--- settings(config_layers, stack_lines, module) -> {[name] = {value, from}}: the module's
-- configuration files in order, then the options of the module's lines in the stack (each line
-- that names the module, e.g. faillock's preauth and authfail lines; later lines win for the
-- same option, as each line is its own invocation and the last one is what the benchmarks read).
-- layers = { {path = ..., values = parse_module_conf(...)}, ... }.
function M.settings(layers, stack, module)
  local out = {}
  for _, layer in ipairs(layers) do
    for name, v in pairs(layer.values) do
      out[name] = { value = v.value, from = ("%s:%d"):format(layer.path, v.line) }
    end
  end
  for _, entry in ipairs(stack.lines) do
    if entry.module == module then
      for name, value in pairs(M.parse_args(entry.args)) do
        out[name] = { value = value, from = ("%s:%d"):format(stack.path, entry.line) }
      end
    end
  end
  return out
end

function M.applicable(opts)
  return confdirs.needs(opts, "pam", M.PAM_DIR, M.PAM_DIR .. " does not exist (no PAM on this host)")
end

--- collect({root, services}) -> {attributes, items}. items: the lines of each stack, {service,
-- type, control, module, args, line} in file order. attributes: "<module>.<setting>" = value
-- (string, or true for a flag) and "<module>.<setting>.from" = "file:line" for pwquality,
-- faillock and pwhistory; "<stack>.read" = false for a stack that could not be read.
function M.collect(opts)
  local root = confdirs.check_root(opts, "pam")
  local services = opts and opts.services or M.DEFAULT_SERVICES
  if type(services) ~= "table" then error("pam: opts.services must be a list", 2) end
  local items, attributes, stacks = {}, {}, {}
  for _, service in ipairs(services) do
    if type(service) ~= "string" or not service:find("^[%w_.%-]+$") then
      error(("pam: %s is not a PAM service name"):format(tostring(service)), 2)
    end
    local path = M.PAM_DIR .. "/" .. service
    local s = confdirs.read(root, path)
    stacks[service] = { path = path, lines = s and M.parse_stack(s) or {} }
    attributes[service .. ".read"] = s ~= nil
    for _, entry in ipairs(stacks[service].lines) do
      items[#items + 1] = { service = service, type = entry.type, control = entry.control,
        module = text(entry.module), args = text(entry.args), line = entry.line }
    end
  end
  for name, conf in pairs(M.MODULE_CONFIGS) do
    local layers = {}
    local paths = {}
    for _, f in ipairs(conf.files) do paths[#paths + 1] = f end
    if conf.dir then
      for _, f in ipairs(confdirs.list(root, { conf.dir }, ".conf")) do paths[#paths + 1] = f.path end
    end
    for _, path in ipairs(paths) do
      local s = confdirs.read(root, path)
      if s then layers[#layers + 1] = { path = path, values = M.parse_module_conf(s) } end
    end
    local stack = stacks[conf.stack] or { path = M.PAM_DIR .. "/" .. conf.stack, lines = {} }
    for setting, v in pairs(M.settings(layers, stack, conf.module)) do
      if setting:find("^[%w_]+$") then
        attributes[name .. "." .. setting] = type(v.value) == "string" and text(v.value) or v.value
        attributes[name .. "." .. setting .. ".from"] = text(v.from)
      end
    end
  end
  return { attributes = attributes, items = items }
end

return M
