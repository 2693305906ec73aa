-- sacm.grid.config: the grid config file the role scripts share, and its secrets.
local config = require "sacm.grid.config"
local pretty = require "sacm.pretty"
local fs = require "sacm.fs"
local tmp = require "support.tmp"

describe("sacm.grid.config", function()
  local dir
  before_each(function() dir = tmp.dir("grid-config") end)
  after_each(function() tmp.remove(dir) end)

  local BASE = {
    domain = "grid.example", cafile = "/etc/sacm/grid-ca.pem", orchestrators = { "orchestrator@grid.example" },
    repository = { jid = "repository@grid.example/r1", password = "repo-secret", database = "/var/lib/sacmrun/grid.db" },
    collector = { jid = "collector@grid.example/web1", password_file = "PLACEHOLDER" },
    evaluator = { jid = "evaluator@grid.example/e1", password_env = "SACM_SPEC_EVALUATOR_PASSWORD" },
  }

  local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = type(v) == "table" and copy(v) or v end
    return c
  end

  it("writes a file load() reads back, mode 0600", function()
    local path = dir .. "/grid.conf"
    assert(config.write(path, BASE))
    assert.equal(384, assert(fs.stat(path)).mode & 511)
    local cfg = assert(config.load(path))
    assert.equal("repository@grid.example/r1", cfg.repository.jid)
    assert.equal("pubsub.grid.example", cfg.pubsub)
  end)

  it("gives every other role the repository's bare JID and the orchestrators as peers", function()
    local cfg = copy(BASE)
    cfg.collector.password_file, cfg.collector.password = nil, "x"
    local o = config.role_options(cfg, "collector")
    assert.equal("repository@grid.example", o.repository)
    assert.same({ "orchestrator@grid.example" }, o.peers)
    assert.equal("/etc/sacm/grid-ca.pem", o.cafile)
    assert.is_nil(config.role_options(cfg, "repository").repository)
  end)

  it("reads a password from its own file and warns when others can read it", function()
    local cfg = copy(BASE)
    local file = dir .. "/collector.pass"
    assert(fs.write(file, "s3cret\n", { mode = 384 }))
    cfg.collector.password_file = file
    local o = config.role_options(cfg, "collector")
    assert.equal("s3cret", o.password)
    assert.is_nil(o.password_file)
    cfg.collector.password_file = dir .. "/missing.pass"
    local ok, err = pcall(config.role_options, cfg, "collector")
    assert.is_false(ok)
    assert.matches("collector section: password_file .*missing%.pass: ENOENT", tostring(err))
  end)

  it("reads a password from the environment, and says which variable is missing", function()
    local cfg = copy(BASE)
    local ok, err = pcall(config.role_options, cfg, "evaluator")
    assert.is_false(ok)
    assert.matches("evaluator section: the environment variable SACM_SPEC_EVALUATOR_PASSWORD %(password_env%) is not set",
      tostring(err))
  end)

  it("takes the password from the environment variable when it is set", function()
    local proc = require "sacm.proc"
    local path = dir .. "/grid.conf"
    assert(config.write(path, BASE))
    local r = assert(proc.run({ os.getenv("SACMRUN_BIN") or "./sacmrun", "-e", ([[
      local c = require("sacm.grid.config")
      io.write(c.role_options(assert(c.load(%q)), "evaluator").password)]]):format(path) },
      { env = { SACM_SPEC_EVALUATOR_PASSWORD = "from-env" }, timeout = 20 }))
    assert.equal("from-env", r.stdout, r.stderr)
  end)

  it("never shows a password when a config is printed", function()
    local text = pretty.format(BASE, { depth = 8 })
    assert.is_nil(text:find("repo-secret", 1, true))
    assert.matches('password = <hidden>', text)
  end)
end)
