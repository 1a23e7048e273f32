-- core.shape: the C pass that turns a page's rows into the common shape.
-- The providers' specs check the shapes they declare end to end; this file
-- checks the pass itself against the Lua definitions it replaced
-- (userlist.time.parse_iso, normalize.int/num/id), on generated inputs too.
local core = require "userlist.core"
local norm = require "userlist.normalize"
local time = require "userlist.time"
local cjson = require "cjson"

local null = core.null

local function shaped(row, spec, off, shift)
  local rows = { row }
  local i, bad = core.shape(rows, spec, off, shift)
  return rows[1], i, bad
end

local TIME = norm.shape{ list = "rows", times = { seen = "t" } }

-- What the Lua parser makes of s (nil when it refuses it), read at `off`.
local function lua_time(s, off, shift)
  local t, zoned = time.parse_iso(s)
  if not t then return nil end
  if not zoned then t = t - (off or 0) end
  return t + (shift or 0)
end

describe("core.shape times", function()
  it("reads every form parse_iso reads, with the same result and number type", function()
    local cases = {
      "2025-01-02", "2025-01-02T03:04", "2025-01-02T03:04:05", "2025-01-02 03:04:05",
      "2025-01-02T03:04:05Z", "2025-01-02T03:04:05z", "2025-01-02T03:04:05.000Z",
      "2025-01-02T03:04:05.123Z", "2025-01-02T03:04:05,5", "2025-01-02T03:04:05+02:00",
      "2025-01-02T03:04:05-0130", "2025-01-02T03:04+05:30", "2025-01-02T23:59:60Z",
      "2024-02-29T00:00:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999999999999Z",
      "1969-12-31T23:59:59.5Z",
    }
    for _, s in ipairs(cases) do
      local want = lua_time(s)
      assert.is_not_nil(want, s)
      local u = shaped({ id = "x", t = s }, TIME)
      assert.equal(want, u.seen, s)
      assert.equal(math.type and math.type(want), math.type and math.type(u.seen), s)
    end
  end)

  it("refuses what parse_iso refuses, and the row check names the field", function()
    local cases = {
      "", "2025", "2025-1-02", "2025-13-01", "2025-02-30", "2025-01-00", "2025-01-02T",
      "2025-01-02T3:04", "2025-01-02T24:00", "2025-01-02T03:60", "2025-01-02T03:04:61",
      "2025-01-02T03:04:05.", "2025-01-02T03:04:05ZZ", "2025-01-02T03:04:05+2", "2025-01-02T03:04:05+02:0",
      "2025-01-02X03:04:05", "2025-01-02T03:04:05 ", " 2025-01-02", "2025-01-02T03:04:05\0Z",
    }
    for _, s in ipairs(cases) do
      assert.is_nil(lua_time(s), s)
      local u, i, bad = shaped({ id = "x", t = s }, TIME)
      assert.is_nil(u.seen, s)
      assert.equal(1, i)
      assert.equal("field 't' is not an ISO 8601 time (a string)", bad)
    end
    local _, i, bad = shaped({ id = "x", t = 20250102 }, TIME)
    assert.equal(1, i)
    assert.equal("field 't' is not an ISO 8601 time (a number)", bad)
  end)

  it("agrees with parse_iso on 20,000 generated near-ISO strings, offsets and shifts included", function()
    local alphabet = { "0", "1", "2", "5", "9", "-", ":", "T", " ", ".", ",", "Z", "+", "x" }
    local base = "2025-06-15T12:34:56.789+01:00"
    local seed = 12345
    local function rand(n) -- a small LCG: the same cases on every Lua
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n + 1
    end
    for _ = 1, 20000 do
      local chars = {}
      local len = rand(#base + 4) - 1
      for i = 1, len do chars[i] = base:sub(i, i) ~= "" and base:sub(i, i) or "0" end
      for _ = 1, rand(3) - 1 do
        if len > 0 then chars[rand(len)] = alphabet[rand(#alphabet)] end
      end
      local s = table.concat(chars)
      local off, shift = ({ 0, 3600, -19800 })[rand(3)], ({ 0, 60 })[rand(2)]
      local u = shaped({ id = "x", t = s }, TIME, off, shift)
      assert.equal(lua_time(s, off, shift), u.seen, s)
    end
  end)
end)

describe("core.shape fields", function()
  it("converts as normalize.int, num and id do, and leaves what does not convert", function()
    local spec = norm.shape{ list = "rows", ids = { "id" }, ints = { "n" }, nums = { "c" } }
    local values = { 15, 15.5, -3, 2 ^ 53, 2 ^ 63, 1e300, "15", " 15 ", "0x10", "1e2", "1.5",
      "15\0junk", "abc", "", true }
    for _, v in ipairs(values) do
      local u = shaped({ id = v, n = v, c = v }, spec)
      assert.equal(norm.id(v), u.id, tostring(v))
      assert.equal(norm.int(v) or v, u.n, tostring(v))
      assert.equal(norm.num(v) or v, u.c, tostring(v))
      if norm.int(v) then
        assert.equal(math.type and math.type(norm.int(v)), math.type and math.type(u.n), tostring(v))
      end
    end
  end)

  it("strips JSON nulls at every depth, keeps id lists whole, and copies, sums and picks", function()
    local spec = norm.shape{ list = "rows", ids = { "user_id" }, id_lists = { "ids" }, ints = { "a", "b" },
      copy = { { "id", "user_id" }, { "cost", "cost", "cost_usd" } },
      sums = { { "tokens", "a", "b" } }, picks = { { "email", "attributes", "email" } },
      nested = { "members.*.id", "members.*.company.id" } }
    local row = cjson.decode([[{"user_id": 7, "ids": [1, null, "x", 2.5], "cost": null,
      "cost_usd": 0.5, "a": 2, "b": 3, "attributes": {"email": "e@x", "n": null, "deep": [{"z": null}]},
      "members": [{"id": 9, "company": {"id": 10}}, 4, {"company": null}]}]])
    local u, i = shaped(row, spec)
    assert.is_nil(i)
    assert.same({ user_id = "7", id = "7", ids = { "1", "x", "2.5" }, cost = 0.5, cost_usd = 0.5,
      a = 2, b = 3, tokens = 5, email = "e@x", attributes = { email = "e@x", deep = { {} } },
      members = { { id = "9", company = { id = "10" } }, 4, {} } }, u)
    assert.equal(math.type and "integer", math.type and math.type(u.tokens))
  end)

  it("reports the first row it cannot read: not an object, no id, a field not a number", function()
    local spec = norm.shape{ list = "rows", ids = { "id" }, numbers = { "n" } }
    assert.same({ 2, "is not an object" }, { core.shape({ { id = "a" }, null }, spec) })
    assert.same({ 1, "has no id" }, { core.shape({ { id = {} } }, spec) })
    assert.same({ 3, "field 'n' is not a number (a string)" },
      { core.shape({ { id = "a" }, { id = "b", n = 1 }, { id = "c", n = "x" } }, spec) })
    assert.same({}, { core.shape({}, spec) })
  end)

  it("leniently keeps unreadable figures and times as sent, copies no common field from them, "
    .. "and reports the first row of each field", function()
    local spec = norm.shape{ list = "rows", ids = { "id" }, ints = { "total", "n" },
      nums = { "cost", "cost_usd" }, copy = { { "requests", "total" }, { "cost", "cost", "cost_usd" } },
      sums = { { "tokens", "total", "n" } }, times = { first_seen = "first" } }
    local rows = {
      { id = "a", total = 3, n = 1, first = "2025-01-01T00:00:00Z" },
      { id = "b", total = "many", n = 2, cost = "free", cost_usd = "x", first = "string" },
      { id = "c", total = { 1 }, n = 3, first = 5 },
    }
    local i, bad, unread = core.shape(rows, spec, 0, 0, true)
    assert.is_nil(i)
    assert.is_nil(bad)
    assert.same({ total = "[2] field 'total' is not a number (a string)",
      cost = "[2] field 'cost' is not a number (a string)",
      cost_usd = "[2] field 'cost_usd' is not a number (a string)",
      first = "[2] field 'first' is not an ISO 8601 time (a string)" }, unread)
    assert.same({ id = "a", total = 3, n = 1, requests = 3, tokens = 4,
      first = "2025-01-01T00:00:00Z", first_seen = 1735689600 }, rows[1])
    assert.same({ id = "b", total = "many", n = 2, cost = "free", cost_usd = "x", first = "string" },
      rows[2])
    assert.same({ id = "c", total = { 1 }, n = 3, first = 5 }, rows[3])
    -- strictly, the same rows are one error at the first unreadable field
    rows[2].total, rows[2].requests = "many", nil
    assert.same({ 2, "field 'total' is not a number (a string)" }, { core.shape(rows, spec) })
    -- and leniently, a row without an id is still an error
    assert.same({ 1, "has no id" }, { core.shape({ { total = "x" } }, spec, 0, 0, true) })
  end)

  it("reads a time from the first source present, a field of a nested table too, and names it "
    .. "when it cannot", function()
    local spec = norm.shape{ list = "rows", ids = { "id" },
      times = { first = { "a.first_at", "created" }, last = "a.last_at" } }
    local rows = {
      { id = "1", a = { first_at = "2025-01-01T00:00:01Z", last_at = "2025-01-01T00:00:02Z" },
        created = "2025-01-01T00:00:00Z" },
      { id = "2", a = {}, created = "2025-01-01T00:00:00Z" },
      { id = "3", a = "not a table", created = "2025-01-01T00:00:00Z" },
    }
    assert.same({}, { core.shape(rows, spec) })
    assert.same({ 1735689601, 1735689602 }, { rows[1].first, rows[1].last })
    assert.same({ 1735689600 }, { rows[2].first, rows[2].last })
    assert.same({ 1735689600 }, { rows[3].first, rows[3].last })
    local bad = { { id = "4", a = { first_at = "soon" }, created = "2025-01-01T00:00:00Z" } }
    assert.same({ 1, "field 'a.first_at' is not an ISO 8601 time (a string)" },
      { core.shape(bad, spec) })
    bad[1].first = nil
    local unread = { ["a.first_at"] = "[1] field 'a.first_at' is not an ISO 8601 time (a string)" }
    assert.same({ nil, nil, unread }, { core.shape(bad, spec, 0, 0, true) })
    assert.is_nil(bad[1].first) -- the present source decides: no fallback past a bad one
    assert.equal("soon", bad[1].a.first_at)
  end)

  it("walks a row nested as deep as the decoder allows without overflowing", function()
    local spec = norm.shape{ list = "rows", ids = { "id" } }
    local text = '{"id": 1, "x": ' .. ("["):rep(190) .. "null" .. ("]"):rep(190) .. "}"
    local u, i = shaped(core.json_decode(text), spec)
    assert.is_nil(i)
    assert.equal("1", u.id)
  end)

  it("raises at once, naming the argument, on a spec or rows that are not tables", function()
    assert.has_error(function() core.shape(nil, {}) end)
    assert.has_error(function() core.shape({}, "spec") end)
    assert.has_error(function() core.shape({}, { ids = "id" }) end, "bad argument #2 to 'shape' (ids)")
  end)
end)

describe("core.decode_body with a rows declaration", function()
  it("shapes a page's rows at a nested list path as it decodes them", function()
    local spec = norm.shape{ list = "a.b", ids = { "id" }, ints = { "n" } }
    local body, outcome = core.decode_body('{"a":{"b":[{"id":1,"n":2.0}]}}', "GET", "http://x/",
      nil, { spec, 0, 0, true })
    assert.equal(body.a.b, outcome.rows)
    assert.equal("1", body.a.b[1].id)
    assert.is_nil(outcome.bad)
  end)

  it("follows a list path key written with escapes, as the decoded key", function()
    local spec = norm.shape{ list = "items", ids = { "id" } }
    local body, outcome = core.decode_body('{"\\u0069tems":[{"id":1}]}', "GET", "http://x/",
      nil, { spec, 0, 0, true })
    assert.equal(body.items, outcome.rows)
    assert.equal("1", body.items[1].id)
  end)

  it("reports on the rows the body ends with when a key on the path is repeated", function()
    local spec = norm.shape{ list = "rows", ids = { "id" } }
    -- the first array's bad row is forgotten: the second one is the page
    local body, outcome = core.decode_body('{"rows":[{"x":1}],"rows":[{"id":2}]}', "GET",
      "http://x/", nil, { spec, 0, 0, true })
    assert.equal(body.rows, outcome.rows)
    assert.is_nil(outcome.bad)
    assert.equal("2", body.rows[1].id)
    -- rows that end as something else are not claimed: the row pass reads them
    body, outcome = core.decode_body('{"rows":[{"id":2}],"rows":{"id":3}}', "GET", "http://x/",
      nil, { spec, 0, 0, true })
    assert.are_not.equal(body.rows, outcome.rows)
    assert.equal(3, body.rows.id)
  end)

  it("refuses a list path of more than 4 keys instead of following only the first 4", function()
    local spec = norm.shape{ list = "a.b.c.d.e", ints = { "n" } }
    assert.has_error(function()
      core.decode_body('{"a":{}}', "GET", "http://x/", nil, { spec, 0, 0, true })
    end, "bad argument #1 to 'decode_body' (the spec's list has more than 4 keys)")
  end)
end)

-- The one pass (core.decode_body given a rows declaration) converts ids and
-- figures, drops nulls and makes deep integers while it decodes, and skips
-- those steps of the row pass when a row needs nothing more. It must give
-- exactly what decoding and then the row pass (core.shape) give.
describe("core.decode_body's one pass against decoding, then core.shape", function()
  local userlist = require "userlist"

  -- The four providers' declarations, as their listings give them.
  local function declarations()
    local out = {}
    local queries = {
      helicone = {}, openlayer = { pipeline_id = "3f1b3c2e-8a7d-4a4c-9a7e-0c8c2f6f1a11" },
      arthur = { task_ids = "task-1" }, usertour = {},
    }
    for name, q in pairs(queries) do
      local c = userlist[name]{ api_key = ("k"):rep(40), base_url = "http://127.0.0.1:9" }
      local listing = c.listing
      local spec, naive, shift = listing.rows(listing.prepare(c, q))
      out[#out + 1] = { name = name, spec = spec, naive = naive or 0, shift = shift or 0 }
    end
    -- every kind of entry, "id" written by a copy among them
    out[#out + 1] = { name = "every entry", naive = 3600, shift = 60, spec = norm.shape{
      list = "rows", deep_ints = true, ids = { "id", "u" }, id_lists = { "l" },
      ints = { "n", "m" }, nums = { "c" }, copy = { { "id", "u", "id" }, { "y", "n" } },
      sums = { { "s", "n", "m" } }, times = { ts = { "a.t", "t" }, te = "e" },
      picks = { { "p", "a", "e" } }, nested = { "a.*.id", "a.b.id", "l.*.id" } } }
    -- times the decoder reads as it goes: sources at the top and one level down
    out[#out + 1] = { name = "times", naive = -7200, shift = 0, spec = norm.shape{
      list = "rows", ids = { "id" }, ints = { "n" },
      times = { ts = { "a.t", "t", "b.t" }, te = { "e", "a.e" }, tf = "b.t" },
      picks = { { "p", "a", "e" } } } }
    return out
  end

  local function keys_of(spec)
    local k = { "id", "x", "other", times = { "id" }, parents = {} }
    for _, field in ipairs{ "ids", "ints", "nums", "id_lists" } do
      for _, f in ipairs(spec[field] or {}) do k[#k + 1] = f end
    end
    for _, field in ipairs{ "copy", "sums", "picks", "times" } do
      local list = spec[field]
      for _, e in ipairs(list or {}) do
        for _, f in ipairs(e) do
          local names = type(f) == "table" and { f[1], f[2] } or { f }
          if type(f) == "table" and list == spec.times then k.parents[f[1]] = true end
          for _, name in ipairs(names) do
            k[#k + 1] = name
            if list == spec.times then k.times[#k.times + 1] = name end
          end
        end
      end
    end
    for _, path in ipairs(spec.nested or {}) do k[#k + 1] = path[1] end
    return k
  end

  local rand = math.random
  local SCALARS = {
    "null", "true", "false", "7", "-3", "5.0", "-0.0", "2.5", "1e20", "9007199254740993.0",
    '"12"', '"4.5"', '"abc"', '""', '"2025-01-01T05:01:00Z"', '"2025-01-01T05:01:00.250"',
    '"2025-13-01T00:00:00Z"', '"user-0000301"', "12345678901234567890",
  }
  local TIMES = { '"2025-01-01T05:01:00Z"', '"2025-02-03T04:05:06.5+02:00"', '"2025-01-09 16:21"',
    '"2025-03-01"', '"2025-02-30T00:00:00Z"', '"yesterday"', '7' }
  local function key(k)
    if rand(12) == 1 then -- the same key, escaped
      return '"' .. k:gsub("^(.)", function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
    end
    return cjson.encode(k)
  end
  local value
  local function object(keys, depth)
    local parts = {}
    -- rows mostly readable, so that most pages are compared row by row
    if depth == 0 and rand(5) > 1 then parts[1] = '"id":"user-' .. rand(999) .. '"' end
    for _ = 1, rand(0, 7) do
      -- half the time a key times are read from: they interact the most
      local k, v = keys[rand(#keys)], nil
      if rand(2) == 1 then
        k = keys.times[rand(#keys.times)]
        if keys.parents[k] and depth < 2 and rand(3) > 1 then
          v = object(keys, depth + 1)
        elseif rand(2) == 1 then
          v = TIMES[rand(#TIMES)]
        end
      end
      parts[#parts + 1] = key(k) .. ":" .. (v or value(keys, depth + 1))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  function value(keys, depth)
    local r = rand(10)
    if depth < 3 and r == 1 then return object(keys, depth) end
    if depth < 3 and r == 2 then
      local parts = {}
      for j = 1, rand(0, 4) do parts[j] = value(keys, depth + 1) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    return SCALARS[rand(#SCALARS)]
  end

  local function same(a, b, path)
    if type(a) ~= type(b) or a ~= b and type(a) ~= "table" then
      return false, ("%s: %s (%s) against %s (%s)"):format(path, tostring(a), math.type
        and math.type(a) or type(a), tostring(b), math.type and math.type(b) or type(b))
    end
    if math.type and math.type(a) ~= math.type(b) then
      return false, path .. ": " .. math.type(a) .. " against " .. math.type(b)
    end
    if type(a) == "table" then
      for k, v in pairs(a) do
        local ok, why = same(v, b[k], path .. "." .. tostring(k))
        if not ok then return false, why end
      end
      for k in pairs(b) do
        if a[k] == nil then return false, path .. "." .. tostring(k) .. ": only in the row pass" end
      end
    end
    return true
  end

  it("gives the same rows, the same first bad row and the same warnings on 3,000 generated pages", function()
    math.randomseed(14)
    local compared = 0
    for _, d in ipairs(declarations()) do
      local keys = keys_of(d.spec)
      local path = {}
      for seg in d.spec.list:gmatch("[^.]+") do path[#path + 1] = seg end
      for n = 1, 600 do
        local rows = {}
        for j = 1, rand(1, 4) do
          rows[j] = rand(25) == 1 and value(keys, 0) or object(keys, 0)
        end
        local text = "[" .. table.concat(rows, ",") .. "]"
        for k = #path, 1, -1 do text = "{" .. cjson.encode(path[k]) .. ":" .. text .. "}" end
        local lenient = n % 2 == 0
        local body, outcome = core.decode_body(text, "GET", "http://x/", nil,
          { d.spec, d.naive, d.shift, lenient })
        local plain = core.json_decode(text)
        local list = plain
        for _, seg in ipairs(path) do list = list[seg] end
        local i, bad, unread = core.shape(list, d.spec, d.naive, d.shift, lenient)
        local where = d.name .. " " .. text
        assert.equal(i, outcome.bad, where)
        assert.equal(bad, outcome.message, where)
        if not i then -- past a bad row, the one pass only decodes
          compared = compared + 1
          local got = body
          for _, seg in ipairs(path) do got = got[seg] end
          assert(same(got, list, "rows"), select(2, same(got, list, "rows")) or where)
          assert.same(unread, outcome.unread, where)
        end
      end
    end
    assert.is_true(compared > 600, compared .. " pages without a bad row")
  end)
end)
