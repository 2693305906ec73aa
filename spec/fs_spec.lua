-- sacm.fs against real files in a fresh temporary directory per test.
local fs = require "sacm.fs"
local proc = require "sacm.proc"
local loop = require "sacm._loop"
local tmp = require "support.tmp"

local function now() return loop.hrtime() / 1e9 end

local function all_bytes()
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  return table.concat(t):rep(3)
end

local function names(entries)
  local out = {}
  for i, e in ipairs(entries) do out[i] = e.name end
  return out
end

describe("sacm.fs", function()
  local dir

  before_each(function()
    dir = tmp.dir("fs")
  end)

  after_each(function()
    if dir then tmp.remove(dir) end
    dir = nil
  end)

  describe("read and write", function()
    it("round-trips text and binary data", function()
      local path = dir .. "/data.bin"
      local data = all_bytes()
      assert.is_true(fs.write(path, data))
      assert.equal(data, fs.read(path))
      assert.is_true(fs.write(path, ""))
      assert.equal("", fs.read(path))
      local big = ("0123456789abcdef"):rep(200000) -- 3.2 MB
      assert.is_true(fs.write(path, big))
      assert.equal(big, fs.read(path))
    end)

    it("replaces content atomically and leaves no temporary files", function()
      local path = dir .. "/config"
      for i = 1, 5 do
        assert.is_true(fs.write(path, "version " .. i))
      end
      assert.equal("version 5", fs.read(path))
      assert.same({ "config" }, names(fs.list(dir)))
      -- a write that fails (the target is a directory) cleans up after itself too
      assert(fs.mkdir(dir .. "/sub"))
      local ok, err = fs.write(dir .. "/sub", "x")
      assert.is_nil(ok)
      assert.equal("EISDIR", err.condition)
      assert.same({ "config", "sub" }, names(fs.list(dir)))
    end)

    it("keeps the permissions of a replaced file unless mode is given", function()
      local path = dir .. "/script.sh"
      assert.is_true(fs.write(path, "#!/bin/sh\n", { mode = tonumber("750", 8) }))
      assert.equal(tonumber("750", 8), fs.stat(path).mode)
      assert.is_true(fs.write(path, "#!/bin/sh\necho hi\n"))
      assert.equal(tonumber("750", 8), fs.stat(path).mode)
      assert.is_true(fs.write(path, "x", { mode = tonumber("600", 8) }))
      assert.equal(tonumber("600", 8), fs.stat(path).mode)
      assert.is_true(fs.write(path, "y", { atomic = false, mode = tonumber("644", 8) }))
      assert.equal(tonumber("644", 8), fs.stat(path).mode)
    end)

    it("appends, and writes through a symbolic link to its target", function()
      local path = dir .. "/log"
      assert.is_true(fs.write(path, "a\n", { append = true }))
      assert.is_true(fs.write(path, "b\n", { append = true }))
      assert.equal("a\nb\n", fs.read(path))
      assert(proc.run({ "ln", "-s", "log", dir .. "/link" }))
      assert.is_true(fs.write(dir .. "/link", "replaced"))
      assert.equal("link", fs.lstat(dir .. "/link").type)
      assert.equal("replaced", fs.read(path))
      assert.has_error(function() fs.write(path, "x", { atomic = true, append = true }) end)
    end)

    it("refuses files larger than max_bytes", function()
      local path = dir .. "/big"
      assert.is_true(fs.write(path, ("x"):rep(1000)))
      local data, err = fs.read(path, { max_bytes = 999 })
      assert.is_nil(data)
      assert.equal("EFBIG", err.condition)
      assert.equal(1000, #fs.read(path, { max_bytes = 1000 }))
      -- files that report size 0 are still limited while reading
      data, err = fs.read("/dev/zero", { max_bytes = 4096 })
      assert.is_nil(data)
      assert.equal("EFBIG", err.condition)
      assert.matches("^Name:", fs.read("/proc/self/status"))
    end)

    it("returns nil, err for expected failures instead of raising", function()
      local data, err = fs.read(dir .. "/missing")
      assert.is_nil(data)
      assert.equal("ENOENT", err.condition)
      assert.matches("missing", tostring(err))
      local ok
      ok, err = fs.write(dir .. "/no/such/dir/file", "x")
      assert.is_nil(ok)
      assert.equal("ENOENT", err.condition)
      ok, err = fs.read(dir)
      assert.is_nil(ok)
      assert.equal("EISDIR", err.condition)
      for _, call in ipairs({
        function() return fs.stat(dir .. "/missing") end,
        function() return fs.lstat(dir .. "/missing") end,
        function() return fs.list(dir .. "/missing") end,
        function() return fs.remove(dir .. "/missing") end,
        function() return fs.rename(dir .. "/missing", dir .. "/other") end,
        function() return fs.hash(dir .. "/missing") end,
      }) do
        local value, e = call()
        assert.is_nil(value)
        assert.equal("ENOENT", e.condition)
      end
    end)

    it("raises on bad arguments", function()
      assert.has_error(function() fs.read(42) end, "fs.read: path must be a string, got number")
      assert.has_error(function() fs.read("a\0b") end, "fs.read: path contains a NUL byte")
      assert.has_error(function() fs.write(dir .. "/x", 5) end)
      assert.has_error(function() fs.write(dir .. "/x", "x", { mode = -1 }) end)
      assert.has_error(function() fs.hash(dir .. "/x", "md4") end)
      assert.has_error(function() require("sacm._fs").stat("a\0b", true, function() end) end)
    end)
  end)

  describe("metadata", function()
    it("stats files, directories and links with the fields stat(1) shows", function()
      local path = dir .. "/file"
      local before = os.time()
      assert.is_true(fs.write(path, "12345", { mode = tonumber("640", 8) }))
      local st = assert(fs.stat(path))
      assert.equal("file", st.type)
      assert.equal(5, st.size)
      assert.equal(tonumber("640", 8), st.mode)
      assert.equal(1, st.nlink)
      assert.is_true(math.abs(st.mtime - before) < 5)
      assert.equal("number", type(st.atime))
      assert.equal("number", type(st.ctime))
      local r = assert(proc.run({ "stat", "-c", "%s %a %u %g %i %h %d", path }))
      assert.equal(("%d %o %d %d %d %d %d\n"):format(st.size, st.mode, st.uid, st.gid, st.ino, st.nlink, st.dev),
        r.stdout)

      assert.equal("directory", fs.stat(dir).type)
      assert(proc.run({ "ln", "-s", "file", dir .. "/link" }))
      assert.equal("file", fs.stat(dir .. "/link").type)
      assert.equal("link", fs.lstat(dir .. "/link").type)
      assert.equal("char", fs.stat("/dev/null").type)
      assert(proc.run({ "mkfifo", dir .. "/fifo" }))
      assert.equal("fifo", fs.stat(dir .. "/fifo").type)
    end)

    it("lists a directory sorted by name, with types", function()
      for _, name in ipairs({ "b", "a", "C", "z.txt", "_x" }) do
        assert.is_true(fs.write(dir .. "/" .. name, name))
      end
      assert(fs.mkdir(dir .. "/m"))
      assert(proc.run({ "ln", "-s", "a", dir .. "/l" }))
      local entries = assert(fs.list(dir))
      assert.same({ "C", "_x", "a", "b", "l", "m", "z.txt" }, names(entries))
      local types = {}
      for _, e in ipairs(entries) do types[e.name] = e.type end
      assert.equal("file", types.a)
      assert.equal("directory", types.m)
      assert.equal("link", types.l)
      assert.same({}, fs.list(dir .. "/m"))
    end)

    it("reads link targets as stored, including long ones and /proc links", function()
      assert(proc.run({ "ln", "-s", "../somewhere/else", dir .. "/rel" }))
      assert.equal("../somewhere/else", fs.readlink(dir .. "/rel"))
      local long = "/" .. ("x"):rep(300) .. "/" .. ("y"):rep(200)   -- past the first buffer
      assert(proc.run({ "ln", "-s", long, dir .. "/long" }))
      assert.equal(long, fs.readlink(dir .. "/long"))
      assert.equal(assert(fs.readlink("/proc/self/exe")),
        (proc.run({ "readlink", "/proc/" .. assert(fs.read("/proc/self/stat")):match("^(%d+)") .. "/exe" })
          .stdout:gsub("\n$", "")))
      assert.is_true(fs.write(dir .. "/plain", "x"))
      local target, err = fs.readlink(dir .. "/plain")
      assert.is_nil(target)
      assert.equal("EINVAL", err.condition)
      assert.equal("ENOENT", select(2, fs.readlink(dir .. "/missing")).condition)
    end)

    it("tells whether a path exists", function()
      assert.is_true(fs.exists(dir))
      assert.is_false(fs.exists(dir .. "/nothing"))
      assert.is_false(fs.exists(dir .. "/nothing/below"))
      assert(proc.run({ "ln", "-s", "nothing", dir .. "/dangling" }))
      assert.is_false(fs.exists(dir .. "/dangling"))
    end)
  end)

  describe("directories and names", function()
    it("makes directories, with parents and an exact mode", function()
      assert.is_true(fs.mkdir(dir .. "/a/b/c", { parents = true }))
      assert.equal("directory", fs.stat(dir .. "/a/b/c").type)
      assert.is_true(fs.mkdir(dir .. "/a/b/c", { parents = true })) -- like mkdir -p
      local ok, err = fs.mkdir(dir .. "/a/b/c")
      assert.is_nil(ok)
      assert.equal("EEXIST", err.condition)
      ok, err = fs.mkdir(dir .. "/x/y")
      assert.is_nil(ok)
      assert.equal("ENOENT", err.condition)
      assert.is_true(fs.mkdir(dir .. "/private", { mode = tonumber("711", 8) }))
      assert.equal(tonumber("711", 8), fs.stat(dir .. "/private").mode)
    end)

    it("readies private files: 0600, in 0700 directories made on the way, warning of open ones", function()
      local path = dir .. "/var/lib/sacm/grid.db"
      assert.is_true(fs.private_file(path))
      assert.equal(tonumber("600", 8), fs.stat(path).mode)
      assert.equal(0, fs.stat(path).size)
      assert.equal(tonumber("700", 8), fs.stat(dir .. "/var").mode)
      assert.equal(tonumber("700", 8), fs.stat(dir .. "/var/lib/sacm").mode)
      -- an existing file is kept as it is, contents and all; one open to others is reported
      assert(fs.write(path, "data", { mode = tonumber("644", 8) }))
      local ok, warning = fs.private_file(path)
      assert.is_true(ok)
      assert.equal(path .. " is readable or writable by other users (mode 644): chmod 600 it", warning)
      assert.equal("data", fs.read(path))
      -- directories only, for a file the caller writes itself
      assert.is_true(fs.private_file(dir .. "/keys/web1.key", { create = false }))
      assert.equal(tonumber("700", 8), fs.stat(dir .. "/keys").mode)
      assert.is_false(fs.exists(dir .. "/keys/web1.key"))
      local nok, err = fs.private_file(path .. "/below")
      assert.is_nil(nok)
      assert.equal("ENOTDIR", err.condition)
    end)

    it("removes files, links and empty directories; renames", function()
      assert.is_true(fs.write(dir .. "/f", "f"))
      assert.is_true(fs.rename(dir .. "/f", dir .. "/g"))
      assert.is_false(fs.exists(dir .. "/f"))
      assert.equal("f", fs.read(dir .. "/g"))
      assert(proc.run({ "ln", "-s", "g", dir .. "/l" }))
      assert.is_true(fs.remove(dir .. "/l"))
      assert.is_true(fs.exists(dir .. "/g"))
      assert(fs.mkdir(dir .. "/d"))
      assert.is_true(fs.write(dir .. "/d/inner", "x"))
      local ok, err = fs.remove(dir .. "/d")
      assert.is_nil(ok)
      assert.equal("ENOTEMPTY", err.condition)
      assert.is_true(fs.remove(dir .. "/d/inner"))
      assert.is_true(fs.remove(dir .. "/d"))
      assert.is_true(fs.remove(dir .. "/g"))
      assert.same({}, fs.list(dir))
    end)
  end)

  describe("hash", function()
    it("matches sha256sum, sha1sum and sha512sum", function()
      local path = dir .. "/blob"
      assert.is_true(fs.write(path, all_bytes():rep(1000))) -- 768 KB: several read chunks
      for algo, tool in pairs({ sha256 = "sha256sum", sha1 = "sha1sum", sha512 = "sha512sum" }) do
        local r = assert(proc.run({ tool, path }))
        assert.equal(0, r.code)
        assert.equal(r.stdout:match("^(%x+)"), fs.hash(path, algo))
      end
      assert.equal(fs.hash(path, "sha256"), fs.hash(path))
      assert.is_true(fs.write(path, ""))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", fs.hash(path))
    end)
  end)

  describe("watch", function()
    -- Collects batches; wait_for waits until n batches arrived or the time is up.
    local function collector()
      local c = { batches = {} }
      function c.fn(changes) c.batches[#c.batches + 1] = changes end
      function c.wait_for(n, seconds)
        local deadline = now() + seconds
        while #c.batches < n and now() < deadline do sacm.sleep(0.02) end
        return #c.batches >= n
      end
      return c
    end

    it("reports a burst of writes to a file once, debounced", function()
      local path = dir .. "/watched.txt"
      assert.is_true(fs.write(path, "0"))
      local c = collector()
      local _w <close> = assert(fs.watch(path, c.fn, { debounce = 0.1 }))
      local started = now()
      for i = 1, 5 do
        assert.is_true(fs.write(path, tostring(i), { atomic = false }))
      end
      assert.is_true(fs.write(dir .. "/other.txt", "not reported"))
      assert.is_true(c.wait_for(1, 1), "no change reported within a second")
      assert.is_true(now() - started < 1)
      sacm.sleep(0.3) -- nothing more trickles in
      assert.same({ { "watched.txt" } }, c.batches)
    end)

    it("keeps seeing a file replaced by rename, and reports deletion", function()
      local path = dir .. "/conf.lua"
      assert.is_true(fs.write(path, "v1"))
      local c = collector()
      local w = assert(fs.watch(path, c.fn, { debounce = 0.05 }))
      -- how editors save: write a new file, rename it over the old one
      local f = assert(io.open(dir .. "/conf.lua.swp", "w"))
      f:write("v2")
      f:close()
      assert(os.rename(dir .. "/conf.lua.swp", path))
      assert.is_true(c.wait_for(1, 1))
      assert.same({ "conf.lua" }, c.batches[1])
      -- and again, now that the original inode is gone
      assert.is_true(fs.write(path, "v3")) -- atomic: also a rename over the file
      assert.is_true(c.wait_for(2, 1))
      assert.same({ "conf.lua" }, c.batches[2])
      assert(os.remove(path))
      assert.is_true(c.wait_for(3, 1))
      assert.same({ "conf.lua" }, c.batches[3])
      w:close()
      w:close() -- idempotent
    end)

    it("watches a directory and reports changed names sorted", function()
      local c = collector()
      local _w <close> = assert(fs.watch(dir, c.fn, { debounce = 0.1 }))
      assert.is_true(fs.write(dir .. "/b", "1", { atomic = false }))
      assert.is_true(fs.write(dir .. "/a", "1", { atomic = false }))
      assert.is_true(c.wait_for(1, 1))
      assert.same({ "a", "b" }, c.batches[1])
    end)

    it("stops reporting once closed", function()
      local path = dir .. "/f"
      local c = collector()
      local w = assert(fs.watch(path, c.fn, { debounce = 0.05 }))
      assert.is_true(fs.write(path, "created"))
      assert.is_true(c.wait_for(1, 1))
      w:close()
      assert.is_true(fs.write(path, "after close"))
      sacm.sleep(0.2)
      assert.equal(1, #c.batches)
      -- a change pending in the quiet period when it is closed is dropped too
      local w2 = assert(fs.watch(path, c.fn, { debounce = 0.2 }))
      assert.is_true(fs.write(path, "pending"))
      sacm.sleep(0.05)
      w2:close()
      sacm.sleep(0.3)
      assert.equal(1, #c.batches)
    end)

    it("returns nil, err for a directory that does not exist", function()
      local w, err = fs.watch(dir .. "/none/file", function() end)
      assert.is_nil(w)
      assert.equal("ENOENT", err.condition)
    end)
  end)
end)
