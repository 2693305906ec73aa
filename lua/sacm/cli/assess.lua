--- sacm.cli.assess: the `sacm-assess` command: one assessment of the grid, a report in the
-- format asked for, and an exit status a CI job can gate on.
--
--   sacm-assess --config /etc/sacm/grid.conf --kinds sshd,sysctl --format junit --output report.xml
--
-- Exit status: 0 no failing result at or above --fail-on; 1 failing results at or above it;
-- 2 a usage or configuration error; 3 the grid could not be reached, or the assessment did not
-- cover what it asked for (a collector or evaluator failed or timed out, results missing).
local fs = require "sacm.fs"
local time = require "sacm.time"
local config = require "sacm.grid.config"
local report = require "sacm.report"

local M = {}

M.EXIT = { ok = 0, failures = 1, usage = 2, grid = 3 }
M.FORMATS = { text = true, json = true, junit = true, html = true, xccdf = true, arf = true }
M.SEVERITY_RANK = { info = 1, low = 2, medium = 3, high = 4 }

M.USAGE = [[
usage: sacm-assess --config FILE [options]

  --config FILE        the grid config (default: $SACM_CONFIG)
  --kinds K,K          posture kinds to collect; only the rules of these kinds are judged
                       (default: every kind, every rule)
  --all-rules          with --kinds: judge every rule, the others on the newest posture at hand
  --max-age SECONDS    with --all-rules: re-collect a kind whose newest stored posture is older
  --policies P,P       policies to judge (default: all)
  --endpoints E,E      only the collectors of these endpoints (ids or hostnames)
  --collectors N       collectors to wait for before assessing (default 1)
  --format F           text (default), json, junit, html, xccdf (XCCDF 1.2) or arf (ARF 1.1)
  --output FILE        write the report there (default: standard output)
  --rule-texts DIR     xccdf, arf: the policy directory whose rules' rationale and references
                       go into the Benchmark (default: the shipped policies); a rule whose
                       policy version differs there keeps the title its result carries
  --fail-on SEVERITY   exit 1 when a rule of this severity or higher fails or errs:
                       info (default: any), low, medium, high, or none
  --timeout SECONDS    for the whole assessment (default 120)
  --quiet              no progress messages on a terminal
  --help

exit status: 0 passed, 1 failures at or above --fail-on, 2 usage or configuration error,
3 grid or transport error, or an assessment that did not cover what it asked for
]]

local function list(s)
  local out = {}
  for item in s:gmatch("[^,%s]+") do out[#out + 1] = item end
  return out
end

local function number(name, s)
  local n = tonumber(s)
  if not n or n <= 0 then return nil, ("%s needs a positive number, got '%s'"):format(name, tostring(s)) end
  return n
end

--- parse(argv) -> options | nil, message (a usage error)
function M.parse(argv)
  local o = { format = "text", fail_on = "info", timeout = 120, collectors = 1 }
  local i = 1
  local function value(name)
    i = i + 1
    local v = argv[i]
    if v == nil or v:sub(1, 2) == "--" then error(name .. " needs a value", 0) end
    return v
  end
  local ok, err = pcall(function()
    while argv[i] do
      local a = argv[i]
      if a == "--config" then o.config = value(a)
      elseif a == "--kinds" then o.kinds = list(value(a))
      elseif a == "--policies" then o.policies = list(value(a))
      elseif a == "--endpoints" then o.endpoints = list(value(a))
      elseif a == "--all-rules" then o.all_rules = true
      elseif a == "--max-age" then o.max_age = assert(number(a, value(a)))
      elseif a == "--collectors" then o.collectors = math.tointeger(assert(number(a, value(a))))
        or error("--collectors needs a whole number", 0)
      elseif a == "--format" then o.format = value(a)
      elseif a == "--output" then o.output = value(a)
      elseif a == "--rule-texts" then o.rule_texts = value(a)
      elseif a == "--fail-on" then o.fail_on = value(a)
      elseif a == "--timeout" then o.timeout = assert(number(a, value(a)))
      elseif a == "--quiet" then o.quiet = true
      elseif a == "--help" or a == "-h" then o.help = true
      else error(("unknown option '%s'"):format(a), 0) end
      i = i + 1
    end
  end)
  if not ok then return nil, tostring(err) end
  if o.help then return o end
  o.config = o.config or os.getenv("SACM_CONFIG")
  if not o.config then return nil, "--config is required (or set SACM_CONFIG)" end
  if not M.FORMATS[o.format] then
    return nil, ("--format must be text, json, junit, html, xccdf or arf, got '%s'"):format(o.format)
  end
  if o.rule_texts and o.format ~= "xccdf" and o.format ~= "arf" then return nil, "--rule-texts goes with --format xccdf or arf" end
  if o.fail_on ~= "none" and not M.SEVERITY_RANK[o.fail_on] then
    return nil, ("--fail-on must be info, low, medium, high or none, got '%s'"):format(o.fail_on)
  end
  if o.max_age and not o.all_rules then return nil, "--max-age goes with --all-rules" end
  if o.kinds and #o.kinds == 0 then return nil, "--kinds needs at least one kind" end
  return o
end

-- The assessment as XCCDF or ARF, the rules described by the policy directory's texts.
local function scap_report(a, opts)
  local export = require "sacm.xccdf.export"
  local dir = opts.rule_texts or (require("sacm._build").share_dir .. "/policies")
  local engine = require("sacm.policy").engine({ dir = dir })
  local loaded, lerr = engine:load_all()
  if not loaded then
    io.stderr:write(("sacm-assess: the rule texts of %s are not at hand (%s): the Benchmark names the rules only\n")
      :format(dir, tostring(lerr)))
  end
  local text, err = export.render(opts.format, a.results, { rules = loaded and engine:rules(), policies = loaded and engine:policies(),
    benchmark = { id = "sacmrun", title = "sacmrun assessment " .. tostring(a.correlation) } })
  if not text then return nil, err end
  return text
end

--- exit_status(assessment, fail_on) -> 0 | 1 | 3
function M.exit_status(a, fail_on)
  if a.incomplete and #a.incomplete > 0 then return M.EXIT.grid end
  if fail_on == "none" then return M.EXIT.ok end
  local threshold = M.SEVERITY_RANK[fail_on]
  for _, r in ipairs(a.results or {}) do
    if (r.result == "fail" or r.result == "error") and (M.SEVERITY_RANK[r.severity] or 1) >= threshold then
      return M.EXIT.failures
    end
  end
  return M.EXIT.ok
end

-- A terminal on standard error gets progress; a pipe or a file does not.
local function stderr_is_terminal()
  local target = fs.readlink("/proc/self/fd/2")
  return target ~= nil and (target:match("^/dev/pts/") ~= nil or target:match("^/dev/tty") ~= nil)
end

-- Kinds whose newest stored posture on the repository is older than max_age (or missing).
local function stale_kinds(o, repo_jid, endpoint, kinds, max_age)
  local since = time.format(time.now() - max_age, 3)
  local out = {}
  for _, k in ipairs(kinds) do
    local s = o:command(repo_jid, "query", { type = "posture", endpoint = endpoint, kind = k, since = since, max = "1" })
    if not s or s.values.count == "0" then out[#out + 1] = k end
  end
  return out
end

--- main(argv) -> exit status
function M.main(argv)
  local opts, uerr = M.parse(argv or {})
  if not opts then
    io.stderr:write("sacm-assess: ", uerr, "\n", M.USAGE)
    return M.EXIT.usage
  end
  if opts.help then io.stdout:write(M.USAGE) return M.EXIT.ok end
  local progress = not opts.quiet and stderr_is_terminal()
  local function say(fmt, ...) if progress then io.stderr:write("sacm-assess: ", fmt:format(...), "\n") end end

  local cfg, cerr = config.load(opts.config)
  if not cfg then
    io.stderr:write(("sacm-assess: cannot use the grid config %s: %s\n"):format(opts.config, tostring(cerr)))
    return M.EXIT.usage
  end
  local okr, role_opts = pcall(config.role_options, cfg, "orchestrator")
  if not okr then
    io.stderr:write(("sacm-assess: %s: %s\n"):format(opts.config, tostring(role_opts)))
    return M.EXIT.usage
  end
  local orchestrator = require "sacm.roles.orchestrator"
  say("connecting as %s", tostring(role_opts.jid))
  local o, oerr = orchestrator.start(role_opts)
  if not o then
    io.stderr:write(("sacm-assess: cannot join the grid as %s: %s\n"):format(tostring(role_opts.jid), tostring(oerr)))
    return M.EXIT.grid
  end
  local status = M.EXIT.grid
  local ok, err = pcall(function()
    local found, derr = o:discover({ collectors = opts.collectors, evaluators = 1, timeout = math.min(30, opts.timeout) })
    if not found then
      io.stderr:write("sacm-assess: ", tostring(derr), "\n")
      return
    end
    local collectors = {}
    for _, c in ipairs(found.collector) do
      local wanted = not opts.endpoints
      for _, e in ipairs(opts.endpoints or {}) do
        if e == c.endpoint or e == c.hostname then wanted = true end
      end
      if wanted then collectors[#collectors + 1] = c.jid end
    end
    say("found %d collector(s), %d evaluator(s)", #found.collector, #found.evaluator)
    if #collectors == 0 then
      io.stderr:write("sacm-assess: no collector of the endpoints asked for: ", table.concat(opts.endpoints or {}, ", "), "\n")
      return
    end
    local kinds = opts.kinds
    if kinds and opts.max_age and found.repository[1] then
      -- posture of the other kinds is judged too: re-collect what is older than max_age
      local more, seen = {}, {}
      for _, k in ipairs(kinds) do seen[k] = true end
      for _, c in ipairs(found.collector) do
        local ep = c.endpoint
        local rest = {}
        for _, k in ipairs(c.kinds) do if not seen[k] then rest[#rest + 1] = k end end
        for _, k in ipairs(stale_kinds(o, found.repository[1].jid, ep, rest, opts.max_age)) do
          if not seen[k] then seen[k] = true; more[#more + 1] = k end
        end
      end
      for _, k in ipairs(more) do kinds[#kinds + 1] = k end
      if #more > 0 then say("re-collecting %s (stored posture older than %gs)", table.concat(more, ", "), opts.max_age) end
    end
    say("assessing %s", kinds and table.concat(kinds, ", ") or "every kind")
    local a, aerr = o:assess({ collectors = collectors, kinds = kinds, policies = opts.policies,
      all_rules = opts.all_rules, timeout = opts.timeout })
    if not a then
      io.stderr:write("sacm-assess: the assessment failed: ", tostring(aerr), "\n")
      return
    end
    say("%d result(s)", #a.results)
    local text, rerr
    if opts.format == "xccdf" or opts.format == "arf" then
      text, rerr = scap_report(a, opts)
      if not text then
        io.stderr:write(("sacm-assess: cannot write the assessment as %s: %s\n"):format(opts.format, tostring(rerr)))
        return
      end
    else
      text = opts.format == "text" and (report.text(a) .. "\n") or report[opts.format](a)
    end
    if opts.output then
      local wok, werr = fs.write(opts.output, text)
      if not wok then
        io.stderr:write(("sacm-assess: cannot write the report to %s: %s\n"):format(opts.output, tostring(werr)))
        status = M.EXIT.usage
        return
      end
    else
      io.stdout:write(text)
    end
    for _, why in ipairs(a.incomplete) do io.stderr:write("sacm-assess: incomplete: ", why, "\n") end
    status = M.exit_status(a, opts.fail_on)
  end)
  o:close()
  -- let the stream's closing handshake finish before the process exits (sacm.exit stops the loop)
  require("sacm.task").sleep(0.2)
  if not ok then
    io.stderr:write("sacm-assess: ", tostring(err), "\n")
    return M.EXIT.grid
  end
  return status
end

return M
