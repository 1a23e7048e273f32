-- Openlayer: POST /v1/inference-pipelines/{pipeline_id}/users over real HTTP
-- to the emulator (spec/emulator/README.md), quirks included.
local core = require "userlist.core"
local userlist = require "userlist"
local emu = require "support.emu"
local data = dofile("spec/emulator/lua/emu/data.lua")

local PIPE = "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e"
local PATH = "/v1/inference-pipelines/" .. PIPE .. "/users"
local is54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")
local has_integers = math.type ~= nil

-- A client against the emulator. `users` sets X-Emu-Users; `waits` collects
-- the sleeps the client asks for (nothing really sleeps).
local function client(opts, users, waits)
  opts = opts or {}
  opts.api_key = opts.api_key or emu.keys.openlayer
  opts.base_url = opts.base_url or (emu.http .. "/v1")
  if users then
    opts.headers = opts.headers or {}
    opts.headers["X-Emu-Users"] = tostring(users)
  end
  if waits then opts.sleep = function(s) waits[#waits + 1] = s end end
  -- one request at a time, so each can be pinned down (spec/14 fetches ahead)
  if opts.concurrency == nil then opts.concurrency = 1 end
  return userlist.openlayer(opts)
end

local function q(t)
  t = t or {}
  if t.pipeline_id == nil then t.pipeline_id = PIPE end
  return t
end

local function all(c, query)
  local out = {}
  for u in c:users(q(query)) do out[#out + 1] = u end
  return out
end

local function ids(users)
  local out = {}
  for i, u in ipairs(users) do out[i] = u.id end
  return out
end

local function expected_ids(n, keep)
  local out = {}
  for i = 1, n do
    if not keep or keep(data.user(i)) then out[#out + 1] = data.id(i) end
  end
  return out
end

-- decoded query of a logged request
local function args(entry)
  local t = {}
  for part in entry.args:gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=(.*)$")
    t[k] = v
  end
  return t
end

-- the logged requests to the users endpoint
local function calls()
  local out = {}
  for _, r in ipairs(emu.requests()) do
    if r.uri:find("/users$") then out[#out + 1] = r end
  end
  return out
end

local function pages_asked()
  local out = {}
  for i, r in ipairs(calls()) do out[i] = tonumber(args(r).page) end
  return out
end

local function raises(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  return err
end

-- a raw request to the emulator, bypassing the client's checks
local function raw(req)
  local s = core.session()
  req.url = emu.http .. (req.path or PATH)
  req.path = nil
  if req.api_key == nil then req.api_key = emu.keys.openlayer end
  if req.api_key == false then req.api_key = nil end
  req.method = req.method or "POST"
  local res, err = s:request(req)
  s:close()
  return res, err
end

describe("openlayer", function()
  before_each(function() emu.reset() end)

  describe("constructor", function()
    it("uses the production base URL by default and trims a trailing slash", function()
      assert.equal("https://api.openlayer.com/v1", userlist.openlayer{ api_key = "k" }.base_url)
      assert.equal(emu.http .. "/v1", client{ base_url = emu.http .. "/v1/" }.base_url)
    end)

    it("never shows the API key in the client or its tostring", function()
      local c = userlist.openlayer{ api_key = "ol-secret-key-123" }
      assert.is_nil(c.options.api_key)
      assert.is_nil(tostring(c):find("ol-secret", 1, true))
      for _, v in pairs(c) do
        if type(v) == "string" then assert.is_nil(v:find("ol-secret", 1, true)) end
      end
    end)

    it("raises on unknown options and wrong option types", function()
      local ok, err = pcall(userlist.openlayer, { api_key = "k", per_page = 10 })
      assert.is_false(ok)
      assert.matches("userlist.openlayer: unknown option 'per_page'", err, 1, true)
      ok, err = pcall(userlist.openlayer, { api_key = "k", loading_timeout = "5" })
      assert.is_false(ok)
      assert.matches("bad option 'loading_timeout' (number expected, got string)", err, 1, true)
    end)

    local function child(env, code)
      local lua = os.getenv("USERLIST_LUA") or "lua"
      local p = assert(io.popen(emu.child_env .. " " .. env .. " " .. lua .. " -e '" .. code .. "' 2>&1"))
      local out = p:read("*a")
      p:close()
      return out
    end

    it("reads the key from OPENLAYER_API_KEY when api_key is not given", function()
      local out = child("env OPENLAYER_API_KEY=" .. emu.keys.openlayer,
        "local u = require[[userlist]] "
        .. "local c = u.openlayer{ base_url = os.getenv[[USERLIST_EMU_HTTP]] .. [[/v1]] } "
        .. "local n = 0 for _ in c:users{ pipeline_id = [[" .. PIPE .. "]] } do n = n + 1 end "
        .. "io.write(n)")
      assert.equal("250", out)
      assert.equal("Bearer " .. emu.keys.openlayer, calls()[1].headers.authorization)
    end)

    it("raises when there is neither api_key nor OPENLAYER_API_KEY", function()
      local out = child("env -u OPENLAYER_API_KEY",
        "local ok, e = pcall(require[[userlist]].openlayer, {}) io.write(tostring(ok), [[ ]], e)")
      assert.equal("false userlist.openlayer: no API key (pass api_key or set OPENLAYER_API_KEY)", out)
    end)
  end)

  describe("requests", function()
    it("POSTs {} to /inference-pipelines/{pipeline_id}/users with page=1 and perPage=100", function()
      local got = all(client(), {})
      assert.equal(250, #got)
      local r = calls()[1]
      assert.equal("POST", r.method)
      assert.equal(PATH, r.uri)
      assert.equal("Bearer " .. emu.keys.openlayer, r.headers.authorization)
      assert.equal("application/json", r.headers["content-type"])
      assert.equal("{}", r.body)
      assert.equal("page=1&perPage=100", r.args)
    end)

    it("sends page, per_page, sort_column and asc as page, perPage, sortColumn and asc", function()
      local p = assert(client():page(q{ page = 3, per_page = 7, sort_column = "cost", asc = false }))
      assert.equal(7, #p.users)
      assert.same({ page = "3", perPage = "7", sortColumn = "cost", asc = "false" }, args(calls()[1]))
      client():page(q{ asc = true })
      assert.equal("true", args(calls()[2]).asc)
    end)

    it("takes pipeline_id from the client options when the query has none", function()
      local c = client{ pipeline_id = PIPE }
      local p = assert(c:page{ per_page = 2 })
      assert.same({ "user-0000001", "user-0000002" }, ids(p.users))
      assert.equal(PATH, calls()[1].uri)
    end)

    it("sends the whole DatasetFilter in the API's camelCase names", function()
      local c = client()
      assert(c:page(q{
        column_filters = {
          { measurement = "records", operator = ">=", value = 1 },
          { measurement = "id", operator = "one_of", value = { "user-0000001", 7 } },
          { measurement = "id", operator = "is", value = "user-0000001" },
          { measurement = "flag", operator = "!=", value = true },
          { measurement = "cost", operator = "is", value = userlist.null },
        },
        search_query_or = { "user" }, search_query_and = { "user", "0" },
        not_search_query_or = { "zzz" }, not_search_query_and = "yyy",
        row_id_list = { 1, 2, 3 }, exclude_row_id_list = { 3 },
      }))
      assert.same({
        columnFilters = {
          { measurement = "records", operator = ">=", value = 1 },
          { measurement = "id", operator = "one_of", value = { "user-0000001", 7 } },
          { measurement = "id", operator = "is", value = "user-0000001" },
          { measurement = "flag", operator = "!=", value = true },
          { measurement = "cost", operator = "is", value = core.null },
        },
        searchQueryOr = { "user" }, searchQueryAnd = { "user", "0" },
        notSearchQueryOr = { "zzz" }, notSearchQueryAnd = { "yyy" },
        rowIdList = { 1, 2, 3 }, excludeRowIdList = { 3 },
      }, core.json_decode(calls()[1].body))
    end)

    it("sends row ids as JSON integers, also when given as whole floats", function()
      assert(client():page(q{ row_id_list = { 1.0, 2 } }))
      assert.matches('"rowIdList":%[1,2%]', calls()[1].body)
    end)

    it("leaves empty lists out of the body (an empty list is no filter)", function()
      local got = all(client(), { column_filters = {}, search_query_and = {}, row_id_list = {} })
      assert.equal(250, #got)
      assert.equal("{}", calls()[1].body)
    end)

    it("accepts a search string of exactly 300 characters", function()
      local s = string.rep("x", 300)
      local p = assert(client():page(q{ search_query_and = { s } }))
      assert.equal(0, #p.users)
      assert.same({ s }, core.json_decode(calls()[1].body).searchQueryAnd)
    end)
  end)

  describe("users()", function()
    it("lists every user across pages, in the server's order, stopping on the short page", function()
      local got = all(client(), { per_page = 100 })
      assert.same(expected_ids(250), ids(got))
      assert.same({ 1, 2, 3 }, pages_asked())
    end)

    it("lists an empty pipeline with one request", function()
      assert.same({}, all(client(nil, 0), {}))
      assert.same({ 1 }, pages_asked())
    end)

    it("lists a one-user pipeline with one request", function()
      assert.same({ "user-0000001" }, ids(all(client(nil, 1), {})))
      assert.same({ 1 }, pages_asked())
    end)

    it("asks for one empty page after an exact multiple of per_page", function()
      assert.same(expected_ids(200), ids(all(client(nil, 200), { per_page = 100 })))
      assert.same({ 1, 2, 3 }, pages_asked())
      emu.reset()
      assert.same(expected_ids(3), ids(all(client(nil, 3), { per_page = 1 })))
      assert.same({ 1, 2, 3, 4 }, pages_asked())
    end)

    it("starts at `page` and stops after `max_pages`", function()
      local got = all(client(), { page = 2, per_page = 10, max_pages = 3 })
      assert.equal(30, #got)
      assert.equal("user-0000011", got[1].id)
      assert.equal("user-0000040", got[30].id)
      assert.same({ 2, 3, 4 }, pages_asked())
    end)

    it("sorts on sort_column, descending with asc = false", function()
      local got = all(client(), { sort_column = "cost", asc = false })
      assert.equal(250, #got)
      for i = 2, #got do assert.is_true(got[i - 1].cost >= got[i].cost) end
      local seen = {}
      for _, u in ipairs(got) do seen[u.id] = true end
      for i = 1, 250 do assert.is_true(seen[data.id(i)]) end
    end)

    it("reverses the default order with asc = false and no sort_column", function()
      local got = all(client(nil, 5), { asc = false, per_page = 2 })
      assert.same({ "user-0000005", "user-0000004", "user-0000003", "user-0000002", "user-0000001" },
        ids(got))
    end)

    it("applies the search lists (case-insensitive substrings of the id)", function()
      local function has(id, s) return id:lower():find(s:lower(), 1, true) ~= nil end
      local got = all(client(), { search_query_and = { "USER-00001", "5" }, per_page = 7 })
      assert.same(expected_ids(250, function(u) return has(u.id, "user-00001") and has(u.id, "5") end),
        ids(got))
      got = all(client(), { search_query_or = { "0000007", "0000042" } })
      assert.same({ "user-0000007", "user-0000042" }, ids(got))
      got = all(client(), { not_search_query_or = { "1", "2" } })
      assert.same(expected_ids(250, function(u) return not has(u.id, "1") and not has(u.id, "2") end),
        ids(got))
      got = all(client(nil, 30), { not_search_query_and = { "user", "2" } })
      assert.same(expected_ids(30, function(u) return not has(u.id, "2") end), ids(got))
    end)

    it("applies numeric, equality and set column filters", function()
      local got = all(client(), { column_filters = {
        { measurement = "records", operator = ">=", value = 15 },
        { measurement = "sessions", operator = "!=", value = 5 },
      } })
      local want = expected_ids(250, function(u) return u.requests >= 15 and u.sessions ~= 5 end)
      assert.is_true(#want > 10)
      assert.same(want, ids(got))
      for _, u in ipairs(got) do assert.is_true(u.records >= 15 and u.sessions ~= 5) end
      got = all(client(), { column_filters = {
        { measurement = "id", operator = "one_of", value = { "user-0000003", "user-0000099", "nobody" } },
      } })
      assert.same({ "user-0000003", "user-0000099" }, ids(got))
      got = all(client(nil, 4), { column_filters = {
        { measurement = "id", operator = "none_of", value = { "user-0000002" } },
        { measurement = "id", operator = "!=", value = "user-0000004" },
      } })
      assert.same({ "user-0000001", "user-0000003" }, ids(got))
    end)

    it("applies row_id_list and exclude_row_id_list", function()
      local got = all(client(), { row_id_list = { 5, 6, 7, 300 }, exclude_row_id_list = { 6 } })
      assert.same({ "user-0000005", "user-0000007" }, ids(got))
    end)

    it("pages through a filtered listing, stopping on its short page", function()
      local got = all(client(), { search_query_and = { "user-00001" }, per_page = 30 })
      assert.same(expected_ids(199, function(u) return u.i >= 100 end), ids(got))
      assert.same({ 1, 2, 3, 4 }, pages_asked())
    end)

    it("drops repeated users with dedupe = true, keeps them without", function()
      -- page 2 repeats user-0000002, as offset paging can under concurrent writes
      local rep = '{"items":[' ..
        '{"id":"user-0000002","dateOfFirstRecord":"2025-01-01T00:02:00Z","dateOfLastRecord":' ..
        '"2025-01-01T01:02:00Z","sessions":1,"records":1,"tokens":10.0,"cost":0.1},' ..
        '{"id":"user-0000003","dateOfFirstRecord":"2025-01-01T00:03:00Z","dateOfLastRecord":' ..
        '"2025-01-01T01:03:00Z","sessions":1,"records":1,"tokens":10.0,"cost":0.1}]}'
      emu.faults(PATH, { {}, { body = rep } })
      assert.same({ "user-0000001", "user-0000002", "user-0000002", "user-0000003" },
        ids(all(client(nil, 4), { per_page = 2 })))
      emu.faults(PATH, { {}, { body = rep } })
      assert.same({ "user-0000001", "user-0000002", "user-0000003" },
        ids(all(client(nil, 4), { per_page = 2, dedupe = true })))
    end)

    it("returns a closing value as its fourth result", function()
      local it, _, _, closing = client():users(q())
      assert.equal("function", type(it))
      local mt = getmetatable(closing)
      assert.equal("function", type(mt and mt.__close))
    end)

    -- to-be-closed variables exist on Lua 5.4 only, so the test does too
    if is54 then it("releases the listing on break (Lua 5.4): no page is asked after it", function()
      local it, s, c0, closing = client():users(q{ per_page = 100 })
      for _ in it, s, c0, closing do break end -- luacheck: ignore 512
      local rest = 0
      for _ in it do rest = rest + 1 end
      assert.equal(99, rest) -- what was left of the first page, then nothing
      assert.same({ 1 }, pages_asked())
    end) end
  end)

  describe("pages() and page()", function()
    it("pages() yields page tables and stops on the short page", function()
      local got = {}
      for page in client():pages(q{ per_page = 100 }) do got[#got + 1] = page end
      assert.equal(3, #got)
      for i, p in ipairs(got) do
        assert.equal(i, p.number)
        assert.equal(i, p.page)
        assert.equal(100, p.per_page)
        assert.equal(200, p.status)
      end
      assert.same({ 100, 100, 50 }, { #got[1].users, #got[2].users, #got[3].users })
      assert.equal("user-0000201", got[3].users[1].id)
    end)

    it("page() returns one page and the next page number while pages are full", function()
      local c = client()
      local p = assert(c:page(q{ per_page = 100 }))
      assert.equal(100, #p.users)
      assert.equal(2, p.next)
      p = assert(c:page(q{ per_page = 100, page = p.next }))
      assert.equal("user-0000101", p.users[1].id)
      assert.equal(3, p.next)
      p = assert(c:page(q{ per_page = 100, page = p.next }))
      assert.equal(50, #p.users)
      assert.is_nil(p.next)
      p = assert(c:page(q{ per_page = 100, page = 4 }))
      assert.same({}, p.users)
      assert.is_nil(p.next)
      assert.same({ 1, 2, 3, 4 }, pages_asked())
    end)

    it("page() returns nil, err for API errors and for bad arguments, never raises", function()
      local p, err = client{ api_key = "wrong" }:page(q())
      assert.is_nil(p)
      assert.equal("http", err.kind)
      assert.equal(401, err.status)
      p, err = client():page(q{ per_page = 0 })
      assert.is_nil(p)
      assert.equal("invalid", err.kind)
      assert.equal("per_page", err.field)
    end)
  end)

  describe("the user shape", function()
    it("keeps every Openlayer field and adds the common fields", function()
      local got = all(client(nil, 30), {})
      for i, u in ipairs(got) do
        local d = data.user(i)
        assert.equal(data.id(i), u.id)
        assert.equal(data.iso(d.first), u.dateOfFirstRecord)
        assert.equal(data.iso(d.last), u.dateOfLastRecord)
        assert.equal(d.sessions, u.sessions)
        assert.equal(d.requests, u.records)
        assert.equal(d.tokens, u.tokens)
        assert.equal(tonumber(data.usd(d.cost)), u.cost)
        assert.equal(d.requests, u.requests)
        assert.equal(d.first, u.first_seen)
        assert.equal(d.last, u.last_seen)
        -- Openlayer has no split of tokens and no email
        assert.is_nil(u.prompt_tokens)
        assert.is_nil(u.completion_tokens)
        assert.is_nil(u.email)
      end
    end)

    it("gives Lua integers for sessions, records, requests and whole tokens on 5.3+", function()
      local u = all(client(nil, 1), {})[1]
      assert.equal("string", type(u.id))
      if has_integers then
        for _, k in ipairs{ "sessions", "records", "requests", "tokens", "first_seen", "last_seen" } do
          assert.equal("integer", math.type(u[k]), k)
        end
        assert.equal("float", math.type(u.cost))
      end
    end)

    it("turns JSON null into nil, numeric ids into strings, keeps unknown fields", function()
      emu.faults(PATH, { { body = '{"items":[{"id":12345678901234,"dateOfFirstRecord":null,' ..
        '"dateOfLastRecord":"2025-03-04T05:06:07.250+01:00","sessions":null,"records":"15",' ..
        '"tokens":10.5,"cost":null,"region":"eu","extra":null,"tags":["a",null]}]}' } })
      local got = all(client(), {})
      assert.equal(1, #got)
      local u = got[1]
      assert.equal("12345678901234", u.id)
      assert.is_nil(u.dateOfFirstRecord)
      assert.is_nil(u.first_seen)
      assert.equal(data.timegm(2025, 3, 4, 4, 6, 7) + 0.25, u.last_seen)
      assert.is_nil(u.sessions)
      assert.equal(15, u.records)
      assert.equal(15, u.requests)
      assert.equal(10.5, u.tokens)
      assert.is_nil(u.cost)
      assert.equal("eu", u.region)
      assert.is_nil(u.extra)
      assert.same({ "a" }, u.tags)
      for _, v in pairs(u) do assert.is_not.equal(core.null, v) end
    end)

    -- a user whose dates silently went missing would sort and filter wrong
    it("with strict = true, raises a decode error naming the row and the date field it cannot read",
      function()
        emu.faults(PATH, { { body = '{"items":[{"id":"u","dateOfFirstRecord":"2025-01-01T10:00:00Z",' ..
          '"dateOfLastRecord":"2025-01-01T24:00:00Z","sessions":1,"records":1,"tokens":1.0,"cost":0.5}]}' } })
        local err = raises(function() all(client{ strict = true }, {}) end)
        assert.equal("decode", err.kind)
        assert.equal("items[1] field 'dateOfLastRecord' is not an ISO 8601 time (a string)", err.message)
        emu.faults(PATH, { { body = '{"items":[{"id":"u","dateOfFirstRecord":"2025-02-30T10:00:00Z"}]}' } })
        err = raises(function() all(client{ strict = true }, {}) end)
        assert.equal("items[1] field 'dateOfFirstRecord' is not an ISO 8601 time (a string)", err.message)
      end)

    -- an OpenAPI mock sends "string" for every date: the listing goes on
    it("by default keeps a row whose date it cannot read: no last_seen, the field as sent, a warning",
      function()
        emu.faults(PATH, { { body = '{"items":[{"id":"u","dateOfFirstRecord":"2025-01-01T10:00:00Z",' ..
          '"dateOfLastRecord":"string","sessions":1,"records":1,"tokens":1.0,"cost":0.5},' ..
          '{"id":"v","dateOfLastRecord":"string"}]}' } })
        local events = {}
        local users = all(client{ on_event = function(ev) events[#events + 1] = ev end }, {})
        assert.same({ "u", "v" }, { users[1].id, users[2].id })
        assert.equal(data.timegm(2025, 1, 1, 10, 0, 0), users[1].first_seen)
        assert.is_nil(users[1].last_seen)
        assert.equal("string", users[1].dateOfLastRecord)
        local warnings = {}
        for _, ev in ipairs(events) do
          if ev.type == "warning" then warnings[#warnings + 1] = ev end
        end
        assert.equal(1, #warnings) -- once per field and listing, not per row
        assert.equal("openlayer", warnings[1].provider)
        assert.equal("dateOfLastRecord", warnings[1].field)
        assert.matches("items[1] field 'dateOfLastRecord' is not an ISO 8601 time (a string)",
          warnings[1].message, 1, true)
      end)

    it("raises a decode error for a 200 without an items array", function()
      emu.faults(PATH, { { body = '{"data":[]}' } })
      local err = raises(function() all(client(), {}) end)
      assert.equal("decode", err.kind)
      assert.matches("items", err.message)
      assert.equal("openlayer", err.provider)
    end)
  end)

  describe("202 data is being loaded", function()
    it("waits and asks for the same page again: never an empty page", function()
      emu.config{ openlayer_loading = 2 }
      local waits = {}
      local got = all(client(nil, nil, waits), {})
      assert.same(expected_ids(250), ids(got))
      assert.same({ 1, 1, 1, 2, 3 }, pages_asked())
      assert.equal(2, #waits)
      -- 0.5 s then 1 s, each minus up to 25% jitter
      assert.is_true(waits[1] >= 0.375 and waits[1] <= 0.5, tostring(waits[1]))
      assert.is_true(waits[2] >= 0.75 and waits[2] <= 1, tostring(waits[2]))
    end)

    it("retries a later page that answers 202 without losing or repeating users", function()
      emu.faults(PATH, { {}, { loading = true }, { loading = true }, { loading = true } })
      local waits = {}
      local got = all(client(nil, nil, waits), {})
      assert.same(expected_ids(250), ids(got))
      assert.same({ 1, 2, 2, 2, 2, 3 }, pages_asked())
      assert.equal(3, #waits)
    end)

    it("page() waits the 202 out too", function()
      emu.config{ openlayer_loading = 1 }
      local waits = {}
      local p = assert(client(nil, nil, waits):page(q{ per_page = 10 }))
      assert.equal(10, #p.users)
      assert.equal(200, p.status)
      assert.equal(1, #waits)
    end)

    it("fails with kind 'loading' once loading_timeout would be passed", function()
      local waits = {}
      local c = client({ loading_timeout = 5, headers = { ["X-Emu-Fault"] = emu.fault{ loading = true } } },
        nil, waits)
      local err = raises(function() all(c, {}) end)
      assert.equal("loading", err.kind)
      assert.equal(202, err.status)
      assert.equal("openlayer", err.provider)
      assert.matches("loading_timeout", err.message)
      local total = 0
      for _, w in ipairs(waits) do total = total + w end
      assert.is_true(total <= 5, tostring(total))
      assert.is_true(#waits >= 3, tostring(#waits))
      assert.equal(#waits + 1, #calls())
      local p, perr = c:page(q())
      assert.is_nil(p)
      assert.equal("loading", perr.kind)
    end)

    it("does not wait at all with loading_timeout = 0", function()
      emu.config{ openlayer_loading = 1 }
      local waits = {}
      local p, err = client({ loading_timeout = 0 }, nil, waits):page(q())
      assert.is_nil(p)
      assert.equal("loading", err.kind)
      assert.same({}, waits)
      assert.equal(1, #calls())
    end)

    it("does not spend the retry budget on loading waits", function()
      emu.faults(PATH, { { loading = true }, { loading = true }, { loading = true }, { status = 503 } })
      local waits = {}
      local got = all(client({ max_retries = 1 }, nil, waits), {})
      assert.equal(250, #got)
      assert.same({ 1, 1, 1, 1, 1, 2, 3 }, pages_asked())
      assert.equal(4, #waits)
    end)
  end)

  describe("errors", function()
    it("raises a structured 401 from the loop, with the server's code and message", function()
      local err = raises(function() all(client{ api_key = "wrong" }, {}) end)
      assert.equal("http", err.kind)
      assert.equal(401, err.status)
      assert.equal("401", err.code)
      assert.equal("Invalid API key", err.message)
      assert.equal("openlayer", err.provider)
      assert.equal("POST", err.method)
      assert.matches(PATH, err.url, 1, true)
      assert.is_nil(tostring(err):find("wrong", 1, true))
    end)

    it("raises mid-listing instead of ending the loop silently", function()
      emu.faults(PATH, { {}, { status = 500 } })
      local seen = 0
      local c = client{ max_retries = 0 }
      local err = raises(function()
        for _ in c:users(q()) do seen = seen + 1 end
      end)
      assert.equal(100, seen)
      assert.equal("http", err.kind)
      assert.equal(500, err.status)
      assert.equal("500", err.code)
      assert.equal("Internal Server Error", err.message)
      assert.is_true(err.retryable)
    end)

    it("retries 5xx and 429 with backoff, honouring retry-after-ms", function()
      emu.faults(PATH, { { status = 503 }, { status = 429, headers = { ["retry-after-ms"] = "1500" } } })
      local waits = {}
      assert.equal(250, #all(client(nil, nil, waits), {}))
      assert.same({ 1, 1, 1, 2, 3 }, pages_asked())
      assert.equal(2, #waits)
      assert.is_true(waits[1] >= 0.375 and waits[1] <= 0.5)
      assert.equal(1.5, waits[2])
    end)

    it("does not retry when the server says x-should-retry: false", function()
      emu.faults(PATH, { { status = 503, headers = { ["x-should-retry"] = "false" } } })
      local waits = {}
      local err = raises(function() all(client(nil, nil, waits), {}) end)
      assert.equal(503, err.status)
      assert.same({}, waits)
      assert.equal(1, #calls())
    end)

    it("gives up after max_retries", function()
      emu.faults(PATH, { { status = 502 }, { status = 502 }, { status = 502 } })
      local waits = {}
      local err = raises(function() all(client(nil, nil, waits), {}) end)
      assert.equal(502, err.status)
      assert.equal(2, #waits)
      assert.equal(3, #calls())
    end)
  end)

  describe("arguments are checked before any request", function()
    -- every entry: query patch, the field named, a pattern of the message
    local BAD = {
      { { pipeline_id = false }, "pipeline_id", "string" },
      { { pipeline_id = "pipe-1" }, "pipeline_id", "UUID" },
      { { page = 0 }, "page", "between" },
      { { page = 1.5 }, "page", "integer" },
      { { page = "2" }, "page", "integer" },
      { { per_page = 0 }, "per_page", "between 1 and 100" },
      { { per_page = 101 }, "per_page", "between 1 and 100" },
      { { per_page = "10" }, "per_page", "integer" },
      { { sort_column = 5 }, "sort_column", "string" },
      { { sort_column = "" }, "sort_column", "empty" },
      { { asc = "false" }, "asc", "boolean" },
      { { max_pages = 0 }, "max_pages", "between" },
      { { dedupe = 1 }, "dedupe", "boolean" },
      { { perPage = 10 }, "perPage", "not a known query key" },
      { { since = 0 }, "since", "no time filter" },
      { { ["until"] = "2025-01-01" }, "until", "no time filter" },
      { { column_filters = "x" }, "column_filters", "array" },
      { { column_filters = { a = 1 } }, "column_filters", "not a map" },
      { { column_filters = {
        { measurement = "a", operator = ">", value = 1 }, { measurement = "a", operator = ">", value = 1 },
        { measurement = "a", operator = ">", value = 1 }, { measurement = "a", operator = ">", value = 1 },
        { measurement = "a", operator = ">", value = 1 }, { measurement = "a", operator = ">", value = 1 },
      } }, "column_filters", "at most 5 filters, got 6" },
      { { column_filters = { "records > 1" } }, "column_filters[1]", "table" },
      { { column_filters = { { operator = ">", value = 1 } } }, "column_filters[1].measurement", "string" },
      { { column_filters = { { measurement = "a", operator = "~=", value = 1 } } },
        "column_filters[1].operator", "not a known operator: ~=" },
      { { column_filters = { { measurement = "a", operator = "equals", value = 1 } } },
        "column_filters[1].operator", "not a known operator" },
      { { column_filters = { { measurement = "a", value = 1 } } }, "column_filters[1].operator", "string" },
      { { column_filters = { { measurement = "a", operator = ">=" } } },
        "column_filters[1].value", "required" },
      { { column_filters = { { measurement = "a", operator = ">=", value = "25" } } },
        "column_filters[1].value", "number" },
      { { column_filters = { { measurement = "a", operator = "is", value = {} } } },
        "column_filters[1].value", "number, string, boolean or null" },
      { { column_filters = { { measurement = "a", operator = "one_of", value = "x" } } },
        "column_filters[1].value", "array" },
      { { column_filters = { { measurement = "a", operator = "one_of", value = {} } } },
        "column_filters[1].value", "at least one" },
      { { column_filters = { { measurement = "a", operator = "contains_any", value = { "x", true } } } },
        "column_filters[1].value[2]", "string or a number" },
      { { column_filters = { { measurement = "a", operator = "is", value = 1, column = "b" } } },
        "column_filters[1].column", "not a column filter field" },
      { { search_query_and = { string.rep("x", 301) } }, "search_query_and", "longer than 300" },
      { { search_query_or = { "ok", string.rep("x", 301) } }, "search_query_or", "element 2" },
      { { not_search_query_or = { 1 } }, "not_search_query_or", "string" },
      { { not_search_query_and = 7 }, "not_search_query_and", "array of strings" },
      { { row_id_list = { 1, 2.5 } }, "row_id_list[2]", "integer" },
      { { exclude_row_id_list = { "1" } }, "exclude_row_id_list[1]", "integer" },
      { { row_id_list = 3 }, "row_id_list", "array of integers" },
    }

    it("raises an invalid error naming the field from users() and pages(), sends nothing", function()
      local c = client()
      for _, case in ipairs(BAD) do
        local query = q(case[1])
        for _, method in ipairs{ "users", "pages" } do
          local err = raises(function() c[method](c, query) end)
          assert.equal("invalid", err.kind, tostring(err))
          assert.equal(case[2], err.field, tostring(err))
          assert.matches(case[3], err.message, 1, true)
          assert.equal("openlayer", err.provider)
        end
        local p, err = c:page(query)
        assert.is_nil(p)
        assert.equal(case[2], err.field)
      end
      assert.equal(0, emu.stats().requests)
    end)

    it("raises for a query that is not a table and for a missing pipeline_id", function()
      local c = client()
      assert.equal("query", raises(function() c:users("x") end).field)
      assert.equal("query", raises(function() c:pages(42) end).field)
      assert.equal("pipeline_id", raises(function() c:users{} end).field)
      assert.equal(0, emu.stats().requests)
    end)
  end)

  describe("the emulated server (real behaviour, without the client's checks)", function()
    it("defaults to page 1 of 25 and answers {\"items\":[]} past the end", function()
      local res = assert(raw{ json = {} })
      assert.equal(25, #res.body.items)
      res = assert(raw{ json = {}, query = { page = 99 } })
      assert.same({}, res.body.items)
      assert.equal('{"items":[]}', assert(raw{ json = {}, query = { page = 99 }, decode = false }).body)
    end)

    it("prints tokens and cost as floats and dates as UTC ISO 8601", function()
      local res = assert(raw{ json = {}, query = { perPage = 1 }, decode = false })
      local d = data.user(1)
      assert.equal(('{"items":[{"id":"user-0000001","dateOfFirstRecord":"%s","dateOfLastRecord":"%s",'
        .. '"sessions":%d,"records":%d,"tokens":%d.0,"cost":%s}]}'):format(data.iso(d.first),
        data.iso(d.last), d.sessions, d.requests, d.tokens, data.usd(d.cost)), res.body)
    end)

    it("accepts an empty body or null as no filter", function()
      assert.equal(25, #assert(raw{}).body.items)
      assert.equal(25, #assert(raw{ body = "null", headers = { ["Content-Type"] = "application/json" } })
        .body.items)
    end)

    it("answers 400 {code, error} for what the client refuses", function()
      local cases = {
        { query = { perPage = 101 }, json = {} },
        { query = { perPage = 0 }, json = {} },
        { query = { page = 0 }, json = {} },
        { query = { asc = "maybe" }, json = {} },
        { query = { sortColumn = "nope" }, json = {} },
        { json = { columnFilters = { {}, {}, {}, {}, {}, {} } } },
        { json = { columnFilters = { { measurement = "a", operator = "~=", value = 1 } } } },
        { json = { columnFilters = { { measurement = "a", operator = ">", value = "x" } } } },
        { json = { columnFilters = { { measurement = "a", operator = "one_of", value = { true } } } } },
        { json = { searchQueryAnd = { string.rep("x", 301) } } },
        { json = { rowIdList = { 1.5 } } },
        { body = "{", headers = { ["Content-Type"] = "application/json" } },
      }
      for i, req in ipairs(cases) do
        local res, err = raw(req)
        assert.is_nil(res, "case " .. i)
        assert.equal(400, err.status, "case " .. i)
        assert.equal(400, err.body.code, "case " .. i)
        assert.equal("string", type(err.body.error), "case " .. i)
      end
    end)

    it("answers 401 for a missing or wrong key, 404 for a pipeline id that is not a UUID", function()
      local _, err = raw{ json = {}, api_key = false }
      assert.same({ code = 401, error = "Missing API key" }, err.body)
      _, err = raw{ json = {}, api_key = "nope" }
      assert.same({ code = 401, error = "Invalid API key" }, err.body)
      _, err = raw{ json = {}, path = "/v1/inference-pipelines/pipe-1/users" }
      assert.same({ code = 404, error = "Inference pipeline not found" }, err.body)
    end)

    it("refuses GET, the form of the endpoint before 2026-04, with 405", function()
      local _, err = raw{ method = "GET", query = { page = 1, perPage = 10 } }
      assert.equal(405, err.status)
      assert.same({ code = 405, error = "Method not allowed" }, err.body)
    end)

    it("answers 202 {\"success\":true} while loading, per pipeline id, then 200", function()
      emu.config{ openlayer_loading = 1 }
      local res = assert(raw{ json = {} })
      assert.equal(202, res.status)
      assert.same({ success = true }, res.body)
      assert.equal(200, assert(raw{ json = {} }).status)
      local other = "/v1/inference-pipelines/00000000-0000-4000-8000-000000000000/users"
      assert.equal(202, assert(raw{ json = {}, path = other }).status)
    end)
  end)

  describe("a million users", function()
    -- Streaming means nothing is kept: what is alive after a full collection
    -- stays flat from the first 200,000 users to the millionth (keeping them
    -- would take hundreds of MiB). Between collections the heap runs ahead of
    -- the live data by the GC's pause, hence the looser peak bound.
    it("stream in 10,000 full pages and one empty page, with memory that stays small", function()
      local c = client(nil, 1000000)
      collectgarbage("collect")
      local base = collectgarbage("count")
      local started = os.clock()
      local n, peak, live, in_order = 0, 0, 0, true
      local last
      for u in c:users(q()) do
        n = n + 1
        last = u
        -- first and last user of every page: nothing skipped or repeated between pages
        local r = n % 100
        if (r == 0 or r == 1) and u.id ~= data.id(n) then in_order = false end
        if n % 1000 == 0 then
          local kb = collectgarbage("count")
          if kb > peak then peak = kb end
        end
        if n % 200000 == 0 then
          collectgarbage("collect")
          local kb = collectgarbage("count") - base
          if kb > live then live = kb end
        end
      end
      local cpu = os.clock() - started
      assert.equal(1000000, n)
      assert.is_true(in_order)
      assert.equal("user-1000000", last.id)
      assert.equal(data.user(1000000).last, last.last_seen)
      assert.equal(10001, emu.stats().requests) -- an exact multiple: one empty page at the end
      assert.is_true(live < 1024, ("%.0f KiB still alive after a full collection"):format(live))
      assert.is_true(peak - base < 16384, ("the heap grew by %.0f KiB"):format(peak - base))
      print(("\n  a million Openlayer users: %.1f s of CPU here, live +%.0f KiB, peak +%.0f KiB")
        :format(cpu, live, peak - base))
    end)
  end)
end)
