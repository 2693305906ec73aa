--- sacm.cli.policy: the `sacm-policy` command, for writing policies before they reach a grid.
--
--   sacm-policy check policies/*.lua
--   sacm-policy test policies/ssh.lua --posture fixture.lua --expect ssh-permit-root-login=fail
--   sacm-policy test policies/kernel.lua --collect            # this host's posture
--
-- check compiles each file in the sandbox, within the same budgets an evaluator uses, validates
-- it as a reload would, and lints what a reader of a report needs (a title, a rationale, the
-- posture kinds a rule requires). test evaluates one policy against posture (a Lua data file
-- mapping each kind to its data, as sacm.collect returns it, or this host's) and prints each
-- result; with --expect RULE=RESULT it exits 1 on the first difference.
local fs = require "sacm.fs"
local policy = require "sacm.policy"
local report = require "sacm.report"

local M = {}

M.USAGE = [[
usage: sacm-policy check FILE...
       sacm-policy test FILE (--posture POSTURE.lua | --collect) [--expect RULE=RESULT]...

exit status: 0 every file checks and every expectation holds, 1 otherwise, 2 usage error
]]

local function dir_of(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- Warnings about a policy that compiles but reads badly in a report.
local function lint(summary)
  local out = {}
  if not summary.title or summary.title == "" then out[#out + 1] = "the policy has no title" end
  if not summary.description or summary.description == "" then out[#out + 1] = "the policy has no description" end
  for _, r in ipairs(summary.rules or {}) do
    if not r.rationale or r.rationale == "" then out[#out + 1] = ("rule %s has no rationale"):format(r.id) end
    if not r.requires or #r.requires == 0 then out[#out + 1] = ("rule %s requires no posture kind"):format(r.id) end
  end
  return out
end

local function check(files)
  if #files == 0 then return nil, "check needs at least one file" end
  local status = 0
  for _, file in ipairs(files) do
    local text, rerr = fs.read(file)
    local engine = policy.engine({ dir = dir_of(file) })
    local summary, err
    if text then summary, err = engine:check(text, file:match("[^/]*$")) else err = rerr end
    engine:close()
    if not summary then
      io.stdout:write(("%s: %s\n"):format(file, tostring(err)))
      status = 1
    else
      local warnings = lint(summary)
      io.stdout:write(("%s: policy %s, %d rule(s)%s\n"):format(file, summary.id, #summary.rules,
        #warnings > 0 and (", " .. #warnings .. " warning(s)") or ""))
      for _, w in ipairs(warnings) do io.stdout:write(("  warning: %s\n"):format(w)) end
    end
  end
  return status
end

local function load_posture(path)
  local text, err = fs.read(path)
  if not text then return nil, err end
  local chunk, cerr = load(text, "@" .. path, "t", {})
  if not chunk then return nil, cerr end
  local ok, data = pcall(chunk)
  if not ok then return nil, data end
  if type(data) ~= "table" then return nil, path .. " must return a table of kind = posture data" end
  return data
end

local function test(args)
  local file, posture_file, collect_here, expect = nil, nil, false, {}
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "--posture" then posture_file, i = args[i + 1], i + 1
    elseif a == "--collect" then collect_here = true
    elseif a == "--expect" then
      local rule, value = (args[i + 1] or ""):match("^([^=]+)=(%a+)$")
      if not rule then return nil, "--expect needs RULE=RESULT, got '" .. tostring(args[i + 1]) .. "'" end
      expect[#expect + 1] = { rule = rule, result = value }
      i = i + 1
    elseif not file then file = a
    else return nil, "unexpected argument '" .. a .. "'" end
    i = i + 1
  end
  if not file then return nil, "test needs a policy file" end
  if (posture_file ~= nil) == collect_here then return nil, "test needs --posture FILE or --collect (one of them)" end
  local text, rerr = fs.read(file)
  if not text then return nil, ("%s: %s"):format(file, tostring(rerr)) end
  local engine = policy.engine({ dir = dir_of(file) })
  local summary, cerr = engine:check(text, file:match("[^/]*$"))
  if not summary then
    engine:close()
    io.stdout:write(("%s: %s\n"):format(file, tostring(cerr)))
    return 1
  end
  local posture
  if collect_here then
    local collect = require "sacm.collect"
    posture = {}
    local kinds, seen = {}, {}
    for _, r in ipairs(summary.rules) do
      for _, k in ipairs(r.requires or {}) do
        if not seen[k] then seen[k] = true; kinds[#kinds + 1] = k end
      end
    end
    for kind, r in pairs(collect.run_all(kinds)) do
      posture[kind] = r.data or { error = tostring(r.error) }
    end
  else
    local perr
    posture, perr = load_posture(posture_file)
    if not posture then
      engine:close()
      return nil, ("--posture %s: %s"):format(posture_file, tostring(perr))
    end
  end
  -- evaluate this file alone: an engine on a directory holding just it
  local tmp = os.tmpname()
  fs.remove(tmp)
  assert(fs.mkdir(tmp, { mode = 448 }))
  local name = file:match("[^/]*$")
  assert(fs.write(tmp .. "/" .. name, text))
  engine:close()
  engine = policy.engine({ dir = tmp })
  local loaded = engine:load_all()
  local results = loaded and engine:evaluate(posture, { endpoint = "sacm-policy test" }) or {}
  engine:close()
  fs.remove(tmp .. "/" .. name)
  fs.remove(tmp)
  local status = 0
  for _, r in ipairs(results) do
    io.stdout:write(("%-13s %-6s %s\n"):format(r.result:upper(), r.severity or "-", r.rule_id))
    for _, e in ipairs(r.evidence or {}) do io.stdout:write(("                     %s\n"):format(e)) end
  end
  for _, e in ipairs(expect) do
    local got
    for _, r in ipairs(results) do if r.rule_id == e.rule then got = r.result end end
    if got ~= e.result then
      io.stdout:write(("expected %s=%s, got %s\n"):format(e.rule, e.result, tostring(got or "no such rule")))
      status = 1
    end
  end
  io.stdout:write(report.totals_line(report.totals(results)), "\n")
  return status
end

--- main(argv) -> exit status
function M.main(argv)
  argv = argv or {}
  local cmd = argv[1]
  local rest = { table.unpack(argv, 2) }
  local status, err
  if cmd == "check" then status, err = check(rest)
  elseif cmd == "test" then status, err = test(rest)
  elseif cmd == "--help" or cmd == "-h" then io.stdout:write(M.USAGE) return 0
  else err = cmd and ("unknown command '" .. cmd .. "'") or "a command is needed" end
  if status then return status end
  io.stderr:write("sacm-policy: ", tostring(err), "\n", M.USAGE)
  return 2
end

return M
