--- sacm.procfs: processes as /proc describes them, for collectors. Every call waits (file I/O
-- on the threadpool) and so runs inside a task. Processes come and go while we read: one that
-- vanished half-way is skipped, never an error.
local fs = require "sacm.fs"

local M = {}

--- pids() -> sorted list of the process ids in /proc (integers) | nil, err.
function M.pids()
  local entries, err = fs.list("/proc")
  if not entries then return nil, err end
  local pids = {}
  for _, e in ipairs(entries) do
    if e.type == "directory" and e.name:match("^%d+$") then pids[#pids + 1] = tonumber(e.name) end
  end
  table.sort(pids)
  return pids
end

--- parse_status(text) -> {name, uid (effective), ppid} from the text of /proc/PID/status.
-- Name is the comm with "\n" and "\\" escaped by the kernel, unescaped here.
function M.parse_status(s)
  local name = s:match("^Name:\t([^\n]*)") or s:match("\nName:\t([^\n]*)")
  if name then name = name:gsub("\\n", "\n"):gsub("\\\\", "\\") end
  local uid = s:match("\nUid:\t%d+\t(%d+)")
  local ppid = s:match("\nPPid:\t(%d+)")
  return { name = name, uid = uid and tonumber(uid), ppid = ppid and tonumber(ppid) }
end

--- process(pid) -> {pid, comm, uid, ppid, exe} | nil when the process is gone. exe (the path of
-- the program) is nil for kernel threads and when we may not read it.
function M.process(pid)
  local base = "/proc/" .. pid
  local status = fs.read(base .. "/status", { max_bytes = 1 << 16 })
  if not status then return nil end
  local st = M.parse_status(status)
  local exe = fs.readlink(base .. "/exe")
  -- a deleted executable reads "/usr/bin/x (deleted)": keep that, it is worth seeing
  return { pid = pid, comm = st.name, uid = st.uid, ppid = st.ppid, exe = exe }
end

--- socket_owners(inodes) -> {[inode] = pid} for the socket inodes (a set {[inode] = true})
-- held open by a process we may look into (/proc/PID/fd needs the same user or root). Stops
-- as soon as every inode has an owner; the lowest pid wins when several processes share one.
function M.socket_owners(inodes)
  local wanted = 0
  for _ in pairs(inodes) do wanted = wanted + 1 end
  local owners = {}
  if wanted == 0 then return owners end
  for _, pid in ipairs(M.pids() or {}) do
    local dir = "/proc/" .. pid .. "/fd"
    for _, e in ipairs(fs.list(dir) or {}) do
      local target = fs.readlink(dir .. "/" .. e.name)
      local inode = target and tonumber(target:match("^socket:%[(%d+)%]$"))
      if inode and inodes[inode] and not owners[inode] then
        owners[inode] = pid
        wanted = wanted - 1
        if wanted == 0 then return owners end
      end
    end
  end
  return owners
end

return M
