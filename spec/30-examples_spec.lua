-- Every example runs against the emulator, as a user would run it, in a
-- child process of the Lua under test, and exits 0 with its output: the
-- demo (examples/demo.lua; examples/cli.sh and examples/openresty/ have
-- their own specs, 50 and 60) and each provider's, found as
-- spec/providers/<name>/example.lua. A provider's example prints user ids,
-- and whatever else its own `-- expect: <Lua pattern>` lines say.
local emu = require "support.emu"

local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA is unset: run the specs with make test")

local function run(script)
  local out = os.tmpname()
  local cmd = ("USERLIST_EMU_HTTP='%s' %s %s %s >%s 2>&1; echo $?"):format(emu.http, emu.child_env, lua,
    script, out)
  local p = assert(io.popen(cmd))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local f = assert(io.open(out))
  local text = f:read("*a")
  f:close()
  os.remove(out)
  return status, text
end

-- spec/providers/<name>/example.lua for every provider folder that has one.
local function provider_examples()
  local p = assert(io.popen("ls -d spec/providers/*/example.lua 2>/dev/null"))
  local found = {}
  for line in p:lines() do found[#found + 1] = line end
  p:close()
  return found
end

-- The patterns an example declares in its `-- expect: PATTERN` lines.
local function declared(script)
  local out = {}
  for line in io.lines(script) do
    local pat = line:match("^%-%- expect: (.-)%s*$")
    if pat then out[#out + 1] = pat end
  end
  return out
end

describe("examples", function()
  before_each(function() emu.reset() end)

  local expect = {
    ["examples/demo.lua"] = { "Helicone", "Openlayer", "Arthur", "Usertour", "1234 users listed" },
  }
  local examples = provider_examples()
  for _, script in ipairs(examples) do
    local patterns = { "user%-%d%d%d%d%d%d%d" }
    for _, pat in ipairs(declared(script)) do patterns[#patterns + 1] = pat end
    expect[script] = patterns
  end

  it("finds the providers' examples (spec/providers/harness_spec.lua: one in every folder)", function()
    assert.is_true(#examples > 0, "no spec/providers/*/example.lua")
  end)

  for script, patterns in pairs(expect) do
    it(script .. " runs against the emulator and exits 0", function()
      local status, text = run(script)
      assert.equal(0, status, text)
      for _, pat in ipairs(patterns) do assert.matches(pat, text) end
      -- the emulator's keys never reach the output
      for _, key in pairs(emu.keys) do assert.is_nil(text:find(key, 1, true), key) end
    end)
  end

  it("the demo exits non-zero with a clear message when no emulator is given", function()
    local p = assert(io.popen(("env -u USERLIST_EMU_HTTP %s %s examples/demo.lua 2>&1; echo $?")
      :format(emu.child_env, lua)))
    local text = p:read("*a")
    p:close()
    assert.matches("USERLIST_EMU_HTTP is unset", text)
    assert.matches("2%s*$", text)
  end)
end)
