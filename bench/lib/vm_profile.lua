-- bench/lib/vm_profile.lua SCRIPT [ARGS...]: runs a sacmrun script and counts where its Lua VM
-- instructions go, by function (file:line where it is defined) and by caller line. Callgrind shows
-- the interpreter as one C function; this shows which Lua code keeps it busy.
--
--   ./sacmrun bench/lib/vm_profile.lua bench/pubsub.lua ARGS...
--   PUBSUB_CLIENTS=sacmrun PUBSUB_WRAP=bench/lib/vm_profile.sh ITEMS=3000 WINDOWS=1 ROUNDS=1 \
--     ./sacmrun bench/pubsub_run.lua OUT bench/out/pubsub_ref
--
-- A count hook samples about every STEP VM instructions (VM_PROFILE_STEP, default 97; each step
-- drawn at random around it) in the main thread and in every coroutine, including the
-- task scheduler's (sacm.task keeps coroutine.create in a local, so that one is replaced too).
-- Writes the table to VM_PROFILE_OUT (default bench/out/vm_profile.txt) when the script returns.
-- Hooks slow the script down several times: read the shares, not the times.
local STEP = math.tointeger(tonumber(os.getenv("VM_PROFILE_STEP") or "97")) or 97
local OUT = os.getenv("VM_PROFILE_OUT") or "bench/out/vm_profile.txt"
local script = arg[1]
if not script then
  io.stderr:write("usage: sacmrun bench/lib/vm_profile.lua SCRIPT [ARGS...]\n")
  os.exit(2)
end

local by_function, by_caller = {}, {}
local getinfo, sethook, random = debug.getinfo, debug.sethook, math.random
local counted = 0 -- VM instructions the samples stand for
local sample
-- A fixed step would alias with work that repeats exactly (every item of a benchmark runs the
-- same instructions) and keep sampling the same few places: each next step is drawn at random
-- between STEP/2 and 3*STEP/2.
local function rearm()
  local step = random(STEP // 2, STEP * 3 // 2)
  counted = counted + step
  sethook(sample, "", step)
end
function sample()
  rearm() -- the thread the hook runs in is the one it samples
  local f = getinfo(2, "S")
  if not f then return end
  local key = f.short_src .. ":" .. f.linedefined
  by_function[key] = (by_function[key] or 0) + 1
  local caller = getinfo(3, "Sl")
  if caller then
    local edge = key .. " <- " .. caller.short_src .. ":" .. caller.currentline
    by_caller[edge] = (by_caller[edge] or 0) + 1
  end
end

local plain_create = coroutine.create
local function hooked_create(fn)
  local co = plain_create(fn)
  sethook(co, sample, "", STEP)
  return co
end
coroutine.create = hooked_create -- luacheck: ignore 122 (on purpose: every coroutine made from here on is sampled)
-- the scheduler's own copy: an upvalue named `create` of the functions sacm.task exports
local seen = {}
local function replace_create(fn)
  if type(fn) ~= "function" or seen[fn] then return end
  seen[fn] = true
  for i = 1, 255 do
    local name, value = debug.getupvalue(fn, i)
    if not name then break end
    if name == "create" and value == plain_create then
      debug.setupvalue(fn, i, hooked_create)
    elseif type(value) == "function" then
      replace_create(value)
    end
  end
end
for _, fn in pairs(require "sacm.task") do replace_create(fn) end
sethook(sample, "", STEP)                          -- this task's coroutine
sethook(debug.getregistry()[1], sample, "", STEP) -- the main thread: callbacks from C

local chunk = assert(loadfile(script))
chunk(table.unpack(arg, 2))

local function sorted(counts)
  local list, total = {}, 0
  for k, v in pairs(counts) do
    list[#list + 1] = { k, v }
    total = total + v
  end
  table.sort(list, function(a, b) return a[2] > b[2] end)
  return list, total
end
local out = assert(io.open(OUT, "w"))
local list, total = sorted(by_function)
out:write(("%d samples, one every %d VM instructions on average: about %d instructions\n\n"):format(total, STEP,
  counted))
out:write("by function (where it is defined):\n")
for i = 1, math.min(60, #list) do
  out:write(("%7d %5.1f%%  %s\n"):format(list[i][2], 100 * list[i][2] / total, list[i][1]))
end
out:write("\nby function and the line that called it:\n")
list = sorted(by_caller)
for i = 1, math.min(60, #list) do
  out:write(("%7d %5.1f%%  %s\n"):format(list[i][2], 100 * list[i][2] / total, list[i][1]))
end
out:close()
io.stderr:write("vm_profile: wrote ", OUT, "\n")
