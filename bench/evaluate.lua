-- Bench `evaluate` (run by bench/evaluate.sh through ./sacmrun): how many rule evaluations per
-- second the policy engine manages with its sandbox and budgets, next to the same checks called
-- as plain Lua functions, in one process; and how long a policy edit takes to become active.
--
--   ./sacmrun bench/evaluate.lua [rounds] [seconds per round] [reloads]
--
-- Prints "key value" lines for bench/evaluate.sh to read.
local policy = require "sacm.policy"
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local sync = require "sacm.sync"
local hrtime = require("sacm._loop").hrtime
local build = require "sacm._build"

local rounds = tonumber(arg[1]) or 5
local seconds = tonumber(arg[2]) or 1
local reloads = tonumber(arg[3]) or 20
local dir = build.share_dir .. "/policies"

local function now() return hrtime() / 1e9 end

-- A posture the size of a typical Debian server's: 1500 packages, 40 accounts, 25 listening
-- sockets, 60 monitored files, the kernel's security sysctls, sshd -T's 90-odd settings.
local function posture()
  local packages = {}
  for i = 1, 1500 do
    packages[i] = { name = ("package-%04d"):format(i), version = ("1.%d.%d-%d"):format(i % 7, i % 13, i % 3 + 1),
      arch = "amd64", status = "install ok installed", manager = "dpkg" }
  end
  local users = { { name = "root", uid = 0, gid = 0, home = "/root", shell = "/bin/bash", password = "set" } }
  for i = 2, 40 do
    users[i] = { name = "user" .. i, uid = 990 + i, gid = 990 + i, home = "/home/user" .. i,
      shell = i % 3 == 0 and "/usr/sbin/nologin" or "/bin/bash", password = i % 5 == 0 and "locked" or "set" }
  end
  local sockets = {}
  for i = 1, 25 do
    sockets[i] = { proto = i % 4 == 0 and "udp" or "tcp", family = i % 2 == 0 and "inet6" or "inet",
      address = i % 3 == 0 and "0.0.0.0" or "127.0.0.1", port = i == 1 and 22 or 8000 + i, uid = 0,
      inode = 10000 + i, process = i == 1 and "sshd" or "svc" .. i, pid = 300 + i }
  end
  local files = {}
  for i = 1, 60 do
    files[i] = { path = "/etc/file" .. i, exists = true, type = "file", mode = "0644", uid = 0, gid = 0,
      owner = "root", group = "root", size = 100 + i, sha256 = ("%064x"):format(i), world_writable = false,
      setuid = false, setgid = false }
  end
  local sysctl = {
    ["net.ipv4.ip_forward"] = "0", ["net.ipv4.conf.all.accept_redirects"] = "0",
    ["net.ipv4.conf.default.accept_redirects"] = "0", ["net.ipv6.conf.all.accept_redirects"] = "0",
    ["net.ipv6.conf.default.accept_redirects"] = "0", ["net.ipv4.conf.all.send_redirects"] = "0",
    ["net.ipv4.conf.default.send_redirects"] = "0", ["kernel.randomize_va_space"] = "2",
    ["fs.protected_symlinks"] = "1", ["fs.protected_hardlinks"] = "1", ["kernel.dmesg_restrict"] = "1",
    ["kernel.kptr_restrict"] = "1", ["net.ipv4.tcp_syncookies"] = "1",
  }
  local sshd = { source = "sshd -T", permitrootlogin = "no", passwordauthentication = "no",
    permitemptypasswords = "no", x11forwarding = "no" }
  for i = 1, 90 do sshd["option" .. i] = "value" .. i end
  return {
    packages = { attributes = { manager = "dpkg", count = #packages }, items = packages },
    users = { attributes = {}, items = users },
    sockets = { attributes = {}, items = sockets },
    files = { attributes = {}, items = files },
    sysctl = { attributes = sysctl, items = {} },
    sshd = { attributes = sshd, items = {} },
  }
end

-- The same policy files loaded as plain Lua: the helpers as globals over _G, no sandbox, no
-- budgets, no read-only views; each check is called directly on the posture.
local function plain_rules()
  local rules = {}
  local entries = assert(fs.list(dir))
  for _, e in ipairs(entries) do
    if e.name:match("^[^.].*%.lua$") then
      local text = assert(fs.read(dir .. "/" .. e.name))
      local env = setmetatable(policy._globals(), { __index = _G })
      local def = assert(load(text, "@" .. e.name, "t", env))()
      for _, r in ipairs(def.rules) do
        rules[#rules + 1] = { policy_id = def.id, rule = r }
      end
    end
  end
  table.sort(rules, function(a, b)
    if a.policy_id ~= b.policy_id then return a.policy_id < b.policy_id end
    return false
  end)
  return rules
end

local function run_plain(rules, p, info)
  local results = {}
  for i, x in ipairs(rules) do
    local t0 = hrtime()
    -- as the engine does: a rule whose posture was not collected is not run
    local missing
    for _, kind in ipairs(x.rule.requires or {}) do
      if p[kind] == nil then missing = kind break end
    end
    local result, evidence
    if missing then
      result, evidence = "notchecked", "posture " .. missing .. " was not collected"
    else
      result, evidence = x.rule.check(p, { endpoint = info })
    end
    if type(evidence) == "string" then evidence = { evidence } end
    results[i] = { policy_id = x.policy_id, rule_id = x.rule.id, title = x.rule.title,
      severity = x.rule.severity, result = result, evidence = evidence or {},
      duration = (hrtime() - t0) / 1e9 }
  end
  return results
end

-- Evaluations of the whole set for `seconds`; returns rule evaluations per second.
local function rate(fn, per_call)
  local n, t0 = 0, now()
  local deadline = t0 + seconds
  repeat
    for _ = 1, 10 do fn() end
    n = n + 10
  until now() >= deadline
  return n * per_call / (now() - t0)
end

local engine = policy.engine({ dir = dir })
local report = assert(engine:load_all())
assert(#report.rejected == 0, "a starter policy was rejected")
local rules = plain_rules()
local p = posture()
local info = { hostname = "bench" }

-- Both must agree before their speed means anything.
local sandboxed = engine:evaluate(p, info)
local plain = run_plain(rules, p, info)
assert(#sandboxed == #plain, "the two paths evaluate different rule sets")
local plain_by_id = {}
for _, r in ipairs(plain) do plain_by_id[r.policy_id .. "/" .. r.rule_id] = r end
for _, r in ipairs(sandboxed) do
  local other = plain_by_id[r.policy_id .. "/" .. r.rule_id]
  assert(other, ("rule %s: evaluated sandboxed only"):format(r.rule_id))
  assert(r.result == other.result, ("rule %s: %s sandboxed, %s plain"):format(r.rule_id, r.result, other.result))
end
local fails = 0
for _, r in ipairs(sandboxed) do if r.result ~= "pass" and r.result ~= "notapplicable" then fails = fails + 1 end end
print("rules", #sandboxed)
print("non_pass", fails)

-- Three ways, taking turns round by round (who goes first changes, so machine noise lands on
-- all): "prepared" evaluates a posture made read-only once with policy.prepare, as an evaluator
-- does when it evaluates one posture more than once; "fresh" hands evaluate the plain posture
-- each time, so each evaluation also builds the read-only views; "plain" calls the checks.
local prepared_posture = policy.prepare(p)
local ways = {
  prepared = function() engine:evaluate(prepared_posture, info) end,
  fresh = function() engine:evaluate(p, info) end,
  plain = function() run_plain(rules, p, info) end,
}
local rates = { prepared = {}, fresh = {}, plain = {} }
local orders = { { "prepared", "fresh", "plain" }, { "plain", "prepared", "fresh" }, { "fresh", "plain", "prepared" } }
for round = 1, rounds do
  for _, which in ipairs(orders[(round - 1) % 3 + 1]) do
    collectgarbage()
    rates[which][round] = rate(ways[which], #sandboxed)
  end
  print("round", round, ("%.0f %.0f %.0f"):format(rates.prepared[round], rates.fresh[round], rates.plain[round]))
end

local function median(list)
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  local n = #s
  return n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
end
for _, which in ipairs({ "prepared", "fresh", "plain" }) do
  print(which .. "_rate", ("%.0f"):format(median(rates[which])))
  print(which .. "_rounds", (function()
    local t = {}
    for i, v in ipairs(rates[which]) do t[i] = ("%.0f"):format(v) end
    return table.concat(t, " ")
  end)())
end
print("ratio", ("%.2f"):format(median(rates.prepared) / median(rates.plain)))
print("ratio_fresh", ("%.2f"):format(median(rates.fresh) / median(rates.plain)))
local t0 = now()
for _ = 1, 50 do policy.prepare(p) end
print("prepare_ms", ("%.2f"):format((now() - t0) * 1000 / 50))

if reloads < 1 then return end

-- Hot reload: from the start of writing a policy file (an atomic fs.write, as editors do) to
-- the first evaluation under its new version, `reloads` times.
local tmp = os.tmpname()
os.remove(tmp)
assert(fs.mkdir(tmp, { mode = tonumber("700", 8) }))
local function text(n)
  return ([[return { id = "reload", title = "reload bench", rules = {
  { id = "reload-1", title = "t", severity = "low", rationale = "r", requires = { "sshd" },
    check = function(posture) return "pass", %q end } } }
]]):format("generation " .. n)
end
assert(fs.write(tmp .. "/reload.lua", text(0)))
local reloader = policy.engine({ dir = tmp })
assert(reloader:load_all())
local loaded = sync.queue()
assert(reloader:watch(function(ev) if ev.type == "loaded" then loaded:put(ev) end end))
local latencies = {}
for n = 1, reloads do
  local t0 = now()
  assert(fs.write(tmp .. "/reload.lua", text(n)))
  local ev = assert(loaded:get(5))
  local r = reloader:evaluate(p, info)[1]
  assert(r.policy_version == ev.version and r.evidence[1] == "generation " .. n, "stale result after reload")
  latencies[n] = (now() - t0) * 1000
  sacm.sleep(0.02)
end
reloader:close()
proc.run({ "rm", "-rf", "--", tmp })
local max = 0
for _, v in ipairs(latencies) do if v > max then max = v end end
print("reload_median_ms", ("%.1f"):format(median(latencies)))
print("reload_max_ms", ("%.1f"):format(max))
print("reload_debounce_ms", ("%.0f"):format(reloader.debounce * 1000))
