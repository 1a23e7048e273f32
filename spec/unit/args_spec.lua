-- userlist.args, the one argument check, and the providers' declarations
-- that drive it, the CLI's flags and doc/queries.md. No network.
local args = require "userlist.args"
local errors = require "userlist.errors"
local providers = require "userlist.providers"

-- The invalid error that fn raises.
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "nothing raised")
  assert.is_true(errors.is(err), tostring(err))
  assert.equal("invalid", err.kind)
  return err
end

local SCHEMA = args.schema{
  { name = "limit", type = "int", min = 1, max = 10, default = 10 },
  { name = "ids", type = "strings", min = 1, option = true, required = "is required (an id)" },
  { name = "order", type = "enum", choices = { "asc", "desc" } },
  { name = "since", type = "time" },
  { name = "sort", type = "sort", choices = { "id", "cost" } },
  { name = "rows", type = "list", what = "an array of rows", max = 2, noun = "rows",
    each = function(v) return v * 2 end },
  { name = "flag", type = "boolean" },
  { name = "tag", type = "string", pattern = "^%a+$", mismatch = "must be letters" },
}

describe("userlist.args", function()
  it("returns the checked values, defaults and client options filled in", function()
    local v = args.check({ since = "1970-01-02", sort = "cost", rows = { 1, 2 }, ids = "a" }, SCHEMA)
    assert.same({ limit = 10, ids = { "a" }, since = 86400, sort = { cost = "asc" }, rows = { 2, 4 } }, v)
    assert.same({ "b" }, args.check({}, SCHEMA, { ids = { "b" } }).ids)
  end)

  it("refuses what the schema does not allow, with the messages of every provider", function()
    local cases = {
      { { ids = "a", bogus = 1 }, "bogus",
        "'bogus' is not a known query key (known: flag, ids, limit, order, rows, since, sort, tag)" },
      { "x", "query", "'query' must be a table, got string" },
      { {}, "ids", "'ids' is required (an id)" },
      { { ids = {} }, "ids", "'ids' needs at least 1 element(s)" },
      { { ids = { a = "x" } }, "ids", "'ids' must be an array (a list), not a map" },
      { { ids = { 1 } }, "ids", "'ids' element 1 must be a string, got number" },
      { { ids = "a", limit = 11 }, "limit", "'limit' must be between 1 and 10, got 11" },
      { { ids = "a", limit = 1.5 }, "limit", "'limit' must be an integer, got number" },
      { { ids = "a", order = "up" }, "order", "'order' must be one of asc, desc, got up" },
      { { ids = "a", since = "soon" }, "since", "'since' not an ISO 8601 date" },
      { { ids = "a", sort = { cost = "up" } }, "sort.cost", "'sort.cost' must be one of asc, desc, got up" },
      { { ids = "a", sort = { id = "asc", cost = "asc" } }, "sort", "'sort' takes exactly one field, got 2" },
      { { ids = "a", rows = { 1, 2, 3 } }, "rows", "'rows' takes at most 2 rows, got 3" },
      { { ids = "a", rows = 3 }, "rows", "'rows' must be an array of rows, got number" },
      { { ids = "a", flag = "yes" }, "flag", "'flag' must be a boolean, got string" },
      { { ids = "a", tag = "a1" }, "tag", "'tag' must be letters, got a1" },
      { { ids = "a", tag = "" }, "tag", "'tag' must not be empty" },
    }
    for _, case in ipairs(cases) do
      local err = raised(function() args.check(case[1], SCHEMA) end)
      assert.equal(case[2], err.field)
      assert.equal(case[3], err.message)
    end
  end)

  it("picks keys with changes, and says what they are in Lua", function()
    local one = args.pick(SCHEMA, { "ids", "limit" }, { limit = { max = 5 } })
    assert.equal(2, #one)
    assert.equal("'limit' must be between 1 and 5, got 6",
      raised(function() args.check({ ids = "a", limit = 6 }, one) end).message)
    assert.equal(10, SCHEMA.by_name.limit.max)
    assert.same({ ids = "table", limit = "number" }, args.lua_types(one))
  end)

  it("refuses a declaration with an unknown type or a key declared twice", function()
    assert.has_error(function() args.schema{ { name = "a", type = "nope" } } end)
    assert.has_error(function() args.schema{ { name = "a", type = "int" }, { name = "a", type = "int" } } end)
  end)
end)

describe("the providers' declarations", function()
  local userlist = require "userlist"

  it("are the registry's, in order, and userlist.<name> is each constructor", function()
    local names = {}
    for name, d in providers.each() do
      names[#names + 1] = name
      assert.equal(userlist[name], d.constructor)
      assert.equal("string", type(d.env_key))
      assert.is_table(d.query.by_name.max_pages)
    end
    assert.same({ "helicone", "openlayer", "arthur", "usertour" }, names)
    assert.equal(providers, userlist.providers)
  end)

  it("give each provider's subcommand its flags, each once, and every declared one", function()
    local cli = require "userlist.cli"
    for name, d in providers.each() do
      local seen, want = {}, {}
      for _, o in ipairs(cli.PROVIDERS[name].options) do
        assert.is_nil(seen[o[1]], name .. " " .. o[1] .. " twice")
        seen[o[1]] = true
      end
      for _, schema in ipairs{ d.query, d.options } do
        for _, e in ipairs(schema) do
          for _, f in ipairs(args.flags(e)) do want[#want + 1] = f[1] end
        end
      end
      for _, f in ipairs(want) do assert.is_true(seen[f], name .. " " .. f) end
      assert.equal(d.env_key, cli.PROVIDERS[name].env)
    end
  end)
end)
