-- make lint: luacheck over the Lua of the tree (tools/debian-packages.txt installs lua-check).
std = "lua54"
max_line_length = false -- long format strings and tables are written on one line on purpose
-- the runtime's global (lua/sacm/init.lua) in every script
read_globals = { "sacm" }
-- unused arguments of callbacks and methods are part of their signature
unused_args = false
-- Not warned: shadowing an outer name with a local of the same meaning (431, 432, 421: the code
-- reuses "request", "jid", "item" for the value in hand) and a loop that returns on its first
-- element (512: `for k in pairs(t) do return k end` is how a table's any key is taken).
ignore = { "421", "431", "432", "512", "211/_.*" } -- and a <close> local named _x, held for its scope

files["spec/**/*.lua"] = { std = "+busted" }
files["spec/run.lua"] = { globals = { "arg" } }
-- policy files run in the sandbox (lua/sacm/policy/sandbox.lua), which defines these
files["policies/*.lua"] = { std = "min", read_globals = { "find_item", "filter_items", "is_empty", "contains", "split",
  "trim", "version_compare", "version_lt", "glob", "references", "string", "table", "math", "utf8", "rawlen" } }
-- Prosody modules run inside Prosody
-- Prosody modules run inside Prosody, whose module environment keeps a module's top-level functions
files["examples/servers/prosody-modules/*.lua"] = { allow_defined_top = true, globals = { "module" },
  read_globals = { "prosody", "hosts" } }
-- Prosody configuration files are sequences of global assignments Prosody reads
files["examples/servers/*.cfg.lua"] = { allow_defined_top = true, ignore = { "111", "113", "131" } }
