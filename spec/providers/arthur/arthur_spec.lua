-- Arthur GenAI Engine (seed 002) over real HTTP to the emulator: the
-- constructor, the listing and its stop rule, every query parameter, the
-- (user, task) rows and dedupe, the user shape, the detail endpoint, the
-- server's quirks (PROVIDERS.md), errors, and a million-user listing.
local userlist = require "userlist"
local core = require "userlist.core"
local emu = require "support.emu"
local data = dofile("spec/emulator/lua/emu/data.lua")

local LIST = "/api/v1/traces/users"
local KEY = emu.keys.arthur
local LUA = os.getenv("USERLIST_LUA") or "lua5.4"
local INTEGERS = math.type ~= nil -- Lua 5.3+

-- A client of the emulator with `users` users (X-Emu-Users), no retries
-- unless asked, and a sleep that records instead of sleeping.
local slept
local function new(opts, users)
  local o = { api_key = KEY, base_url = emu.http, max_retries = 0,
              headers = { ["X-Emu-Users"] = tostring(users or 40) },
              sleep = function(s) slept[#slept + 1] = s end }
  for k, v in pairs(opts or {}) do o[k] = v end
  -- one request at a time, so each can be pinned down (spec/14 fetches ahead)
  if o.concurrency == nil then o.concurrency = 1 end
  return userlist.arthur(o)
end

-- "user-0000005/task-3" for each (user, task) row the emulator has for
-- users 1..n and these tasks, in ascending order (index, then task number).
local function expected(n, tasks, order)
  local want = {}
  for _, t in ipairs(tasks) do want[tonumber(t:match("^task%-(%d)$")) or 0] = true end
  local rows = {}
  for i = 1, n do
    for _, t in ipairs(data.tasks(i)) do
      if want[t] then rows[#rows + 1] = data.id(i) .. "/task-" .. t end
    end
  end
  if order == "desc" then
    local r = {}
    for k = #rows, 1, -1 do r[#r + 1] = rows[k] end
    rows = r
  end
  return rows
end

local function collect(iter, s, c, closing)
  local out = {}
  for u in iter, s, c, closing do out[#out + 1] = u end
  return out
end

local function keys(users)
  local out = {}
  for k, u in ipairs(users) do out[k] = u.user_id .. "/" .. u.task_id end
  return out
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The data-plane requests to the Arthur endpoints, oldest first.
local function calls()
  local out = {}
  for _, r in ipairs(emu.requests()) do
    if r.uri:sub(1, #LIST) == LIST then out[#out + 1] = r end
  end
  return out
end

-- A logged request's query: name -> list of decoded values, in order.
local function args(r)
  local m = {}
  for part in r.args:gmatch("[^&]+") do
    local k, v = part:match("^([^=]*)=(.*)$")
    k, v = unescape(k), unescape(v)
    m[k] = m[k] or {}
    m[k][#m[k] + 1] = v
  end
  return m
end

-- pcall(fn) must fail with a userlist error of this kind (and field).
local function fails(kind, field, fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "no error raised")
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  assert.equal(kind, err.kind, tostring(err))
  if field then assert.equal(field, err.field, tostring(err)) end
  assert.equal("arthur", err.provider)
  return err
end

-- A raw request to the emulator, bypassing the client's checks.
local function raw(path_and_query, headers)
  local s = core.session()
  headers = headers or { ["X-Emu-Users"] = "40" }
  local res, err = s:request{ url = emu.http .. path_and_query, headers = headers,
                              api_key = (not headers.Authorization) and KEY or nil }
  s:close()
  if res then return res end
  return { status = err.status, body = err.body }
end

-- A child Lua with the given environment (run.sh exports LUA_PATH/CPATH).
local function child(env, script)
  local cmd = ("env %s %s %s -e '%s' 2>&1"):format(env, emu.child_env, LUA, script)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function row_json(id, task)
  return ('{"user_id":"%s","task_id":"%s","session_ids":[],"session_count":0,"trace_ids":[],'
    .. '"trace_count":0,"span_count":0,"earliest_start_time":"2025-01-01T00:00:00",'
    .. '"latest_end_time":"2025-01-01T00:00:00"}'):format(id, task)
end

describe("userlist.arthur", function()
  before_each(function()
    emu.reset()
    slept = {}
  end)

  describe("constructor", function()
    it("reads the key from ARTHUR_API_KEY and the base URL from ARTHUR_BASE_URL", function()
      local out = child("ARTHUR_API_KEY=" .. KEY .. " ARTHUR_BASE_URL=" .. emu.http .. "/",
        'local c = require("userlist").arthur() '
        .. 'local p = assert(c:page{ task_ids = "task-1", page_size = 2 }) '
        .. 'io.write(c.base_url, " ", #p.users, " ", p.count)')
      -- the default 250 users; the trailing slash of the variable is dropped
      assert.equal(emu.http .. " 2 " .. #expected(250, { "task-1" }), out)
    end)

    it("raises naming ARTHUR_BASE_URL when there is no base URL", function()
      local out = child("-u ARTHUR_BASE_URL ARTHUR_API_KEY=k",
        'local ok, e = pcall(require("userlist").arthur) io.write(tostring(ok), " ", e)')
      assert.matches("^false .*ARTHUR_BASE_URL", out)
    end)

    it("raises naming ARTHUR_API_KEY when there is no key", function()
      local out = child("-u ARTHUR_API_KEY ARTHUR_BASE_URL=" .. emu.http,
        'local ok, e = pcall(require("userlist").arthur) io.write(tostring(ok), " ", e)')
      assert.matches("^false .*ARTHUR_API_KEY", out)
    end)

    it("takes api_key and base_url options, never shows the key, and rejects unknown options", function()
      local c = userlist.arthur{ api_key = "sk-arthur-secret", base_url = emu.http .. "//" }
      assert.equal(emu.http, c.base_url)
      assert.equal("arthur", c.provider)
      assert.is_nil(c.options.api_key)
      assert.is_nil(tostring(c):find("sk-arthur-secret", 1, true))
      assert.has_error(function() userlist.arthur{ api_key = "k", base_url = emu.http, pageSize = 1 } end)
      assert.has_error(function() userlist.arthur{ api_key = "k", base_url = "ftp://x" } end)
      assert.has_error(function()
        userlist.arthur{ api_key = "k", base_url = emu.http, server_utc_offset = "1h" }
      end)
    end)
  end)

  describe("users()", function()
    it("yields every (user, task) row across pages in the order asked", function()
      local c = new({}, 23)
      local got = collect(c:users{ task_ids = { "task-1", "task-2" }, page_size = 4, sort = "asc" })
      local want = expected(23, { "task-1", "task-2" })
      assert.same(want, keys(got))
      local log = calls()
      assert.equal(math.ceil(#want / 4), #log)
      for k, r in ipairs(log) do
        local a = args(r)
        assert.same({ tostring(k - 1) }, a.page)
        assert.same({ "4" }, a.page_size)
        assert.same({ "asc" }, a.sort)
      end
    end)

    it("leaves the order to the server by default (desc: the exact reverse of asc)", function()
      local c = new({}, 17)
      local got = collect(c:users{ task_ids = { "task-1", "task-2", "task-3" }, page_size = 5 })
      assert.same(expected(17, { "task-1", "task-2", "task-3" }, "desc"), keys(got))
      assert.is_nil(args(calls()[1]).sort)
      local asc = collect(c:users{ task_ids = { "task-1", "task-2", "task-3" }, sort = "asc" })
      assert.same(expected(17, { "task-1", "task-2", "task-3" }), keys(asc))
    end)

    it("sends task_ids as repeated keys, never task_ids[] or a comma list", function()
      local c = new({}, 10)
      collect(c:users{ task_ids = { "task-3", "task-1" } })
      local r = calls()[1]
      assert.matches("task_ids=task%-3&task_ids=task%-1", r.args)
      assert.is_nil(r.args:find("%5B", 1, true))
      assert.is_nil(r.args:find("[", 1, true))
      assert.same({ "task-3", "task-1" }, args(r).task_ids)
    end)

    it("keeps a comma inside one task id (the server reads task_ids=a,b as the id \"a,b\")", function()
      local c = new({}, 10)
      local p = assert(c:page{ task_ids = { "task-1,task-2" } })
      assert.same({ "task-1,task-2" }, args(calls()[1]).task_ids)
      assert.equal(0, #p.users)
      assert.equal(0, p.count)
    end)

    it("takes one task id as a string, and the client's task_ids option as the default", function()
      local got = collect(new({}, 12):users{ task_ids = "task-2", sort = "asc" })
      assert.same(expected(12, { "task-2" }), keys(got))
      local c = new({ task_ids = { "task-3" } }, 12)
      assert.same(expected(12, { "task-3" }), keys(collect(c:users{ sort = "asc" })))
      -- a query's task_ids wins over the option
      assert.same(expected(12, { "task-1" }), keys(collect(c:users{ task_ids = "task-1", sort = "asc" })))
    end)

    it("counts (user, task) pairs: a user in two of the tasks asked comes twice", function()
      -- user 5 (i % 5 == 0) has tasks 1 and 3
      local c = new({}, 5)
      local p = assert(c:page{ task_ids = { "task-1", "task-2", "task-3" }, sort = "asc" })
      assert.same(expected(5, { "task-1", "task-2", "task-3" }), keys(p.users))
      assert.equal(6, p.count) -- five users, six rows
      assert.equal("user-0000005/task-1", keys(p.users)[5])
      assert.equal("user-0000005/task-3", keys(p.users)[6])
    end)

    it("with dedupe = \"user\" yields each user once, as its first row", function()
      local c = new({}, 30)
      local got = collect(c:users{ task_ids = { "task-1", "task-2", "task-3" }, page_size = 4,
                                   sort = "asc", dedupe = "user" })
      assert.equal(30, #got)
      for i, u in ipairs(got) do
        assert.equal(data.id(i), u.id)
        assert.equal("task-" .. data.tasks(i)[1], u.task_id)
      end
    end)

    it("with dedupe = true drops a (user, task) row that a shifted page repeats", function()
      -- page 1 repeats the last row of page 0, as when a row is inserted
      -- ahead of the cursor between two requests (no tie-breaker)
      local function pages()
        emu.faults(LIST, {
          { body = '{"count":4,"users":[' .. row_json("a", "t") .. "," .. row_json("b", "t") .. "]}" },
          { body = '{"count":4,"users":[' .. row_json("b", "t") .. "," .. row_json("c", "t") .. "]}" },
        })
      end
      pages()
      local plain = collect(new():users{ task_ids = "t", page_size = 2 })
      assert.same({ "a/t", "b/t", "b/t", "c/t" }, keys(plain))
      pages()
      local deduped = collect(new():users{ task_ids = "t", page_size = 2, dedupe = true })
      assert.same({ "a/t", "b/t", "c/t" }, keys(deduped))
      -- the same user in another task is another pair, kept by dedupe = true
      emu.faults(LIST, { { body = '{"count":2,"users":[' .. row_json("a", "t1") .. ","
        .. row_json("a", "t2") .. "]}" } })
      assert.same({ "a/t1", "a/t2" }, keys(collect(new():users{ task_ids = "t", dedupe = true })))
    end)

    it("stops on the page that reaches count: an exact page multiple needs no empty request", function()
      local n = 12
      while #expected(n, { "task-1" }) % 2 ~= 0 do n = n + 1 end
      local c = new({}, n)
      local want = expected(n, { "task-1" })
      local got = collect(c:users{ task_ids = "task-1", page_size = #want / 2, sort = "asc" })
      assert.same(want, keys(got))
      assert.equal(2, #calls())
    end)

    it("stops on a short page", function()
      local c = new({}, 20)
      local want = expected(20, { "task-2" })
      local got = collect(c:users{ task_ids = "task-2", page_size = 3, sort = "asc" })
      assert.same(want, keys(got))
      assert.is_true(#want % 3 ~= 0)
      assert.equal(math.ceil(#want / 3), #calls())
    end)

    it("stops on a short page even when count promises more (no loop)", function()
      emu.faults(LIST, { { body = '{"count":100,"users":[' .. row_json("a", "t") .. "]}" } })
      assert.same({ "a/t" }, keys(collect(new():users{ task_ids = "t", page_size = 4 })))
      assert.equal(1, #calls())
    end)

    it("without a count goes on until a short page", function()
      emu.faults(LIST, {
        { body = '{"users":[' .. row_json("a", "t") .. "," .. row_json("b", "t") .. "]}" },
        { body = '{"users":[]}' },
      })
      assert.same({ "a/t", "b/t" }, keys(collect(new():users{ task_ids = "t", page_size = 2 })))
      assert.equal(2, #calls())
    end)

    it("makes one request and yields nothing for an empty listing", function()
      local got = collect(new({}, 0):users{ task_ids = { "task-1", "task-2", "task-3" } })
      assert.equal(0, #got)
      assert.equal(1, #calls())
    end)

    it("yields the one row of a one-user listing from one request", function()
      local got = collect(new({}, 1):users{ task_ids = { "task-1", "task-2", "task-3" }, page_size = 1 })
      assert.same({ "user-0000001/task-2" }, keys(got))
      assert.equal(1, #calls()) -- page 0 holds count (1) rows: no second request
    end)

    it("starts at page (counted from 0) and stops after max_pages", function()
      local c = new({}, 40)
      local want = expected(40, { "task-1", "task-2" })
      local got = collect(c:users{ task_ids = { "task-1", "task-2" }, page_size = 3, page = 2,
                                   sort = "asc" })
      assert.equal(want[7], keys(got)[1])
      assert.equal(#want - 6, #got)
      emu.reset()
      local some = collect(c:users{ task_ids = { "task-1", "task-2" }, page_size = 3, max_pages = 2,
                                    sort = "asc" })
      assert.same({ want[1], want[2], want[3], want[4], want[5], want[6] }, keys(some))
      assert.equal(2, #calls())
    end)

    it("raises an error on a later page from the loop, after the earlier rows", function()
      -- the first request passes (a wrapping fault), the second fails
      emu.faults(LIST, { { headers = { ["X-Seen"] = "1" } }, { status = 500 } })
      local c = new({}, 40)
      local n = 0
      local ok, err = pcall(function()
        for _ in c:users{ task_ids = "task-1", page_size = 3 } do n = n + 1 end
      end)
      assert.is_false(ok)
      assert.equal(3, n)
      assert.is_true(userlist.is_error(err))
      assert.equal("http", err.kind)
      assert.equal(500, err.status)
      assert.equal("arthur", err.provider)
      assert.equal("Internal Server Error", err.message)
    end)

    it("retries a 503 after a backoff and goes on", function()
      emu.faults(LIST, { { status = 503 } })
      local got = collect(new({ max_retries = 2 }, 9):users{ task_ids = "task-1", sort = "asc" })
      assert.same(expected(9, { "task-1" }), keys(got))
      assert.equal(2, #calls())
      assert.equal(1, #slept)
    end)

    it("raises a decode error for a body that is not JSON or has no users array", function()
      emu.faults(LIST, { { invalid_json = true } })
      fails("decode", nil, function() collect(new():users{ task_ids = "task-1" }) end)
      emu.faults(LIST, { { body = '{"count":3}' } })
      local err = fails("decode", nil, function() collect(new():users{ task_ids = "task-1" }) end)
      assert.matches("users", err.message)
    end)
  end)

  describe("query checks", function()
    local BAD = {
      { "task_ids", {} },
      { "task_ids", { task_ids = {} } },
      { "task_ids", { task_ids = { 1 } } },
      { "task_ids", { task_ids = { "" } } },
      { "task_ids", { task_ids = { a = "task-1" } } },
      { "task_ids", { task_ids = true } },
      { "page_size", { task_ids = "task-1", page_size = 0 } },
      { "page_size", { task_ids = "task-1", page_size = 5001 } },
      { "page_size", { task_ids = "task-1", page_size = 2.5 } },
      { "page_size", { task_ids = "task-1", page_size = "10" } },
      { "page", { task_ids = "task-1", page = -1 } },
      { "page", { task_ids = "task-1", page = 0.5 } },
      { "sort", { task_ids = "task-1", sort = "up" } },
      { "since", { task_ids = "task-1", since = "yesterday" } },
      { "since", { task_ids = "task-1", since = "" } },
      { "since", { task_ids = "task-1", since = {} } },
      { "since", { task_ids = "task-1", since = 0 / 0 } },
      { "until", { task_ids = "task-1", ["until"] = "2025-13-01" } },
      { "until", { task_ids = "task-1", since = "2025-01-02", ["until"] = "2025-01-01" } },
      { "dedupe", { task_ids = "task-1", dedupe = "yes" } },
      { "max_pages", { task_ids = "task-1", max_pages = 0 } },
      { "pageSize", { task_ids = "task-1", pageSize = 10 } },
    }

    it("raise an invalid error naming the field from users() and pages(), before any request", function()
      local c = new()
      for _, case in ipairs(BAD) do
        fails("invalid", case[1], function() c:users(case[2]) end)
        fails("invalid", case[1], function() c:pages(case[2]) end)
      end
      assert.equal(0, emu.stats().requests)
    end)

    it("come back as nil, err from page(), before any request", function()
      local c = new()
      for _, case in ipairs(BAD) do
        local p, err = c:page(case[2])
        assert.is_nil(p)
        assert.is_true(userlist.is_error(err))
        assert.equal("invalid", err.kind)
        assert.equal(case[1], err.field)
        assert.matches("'" .. case[1]:gsub("%p", "%%%0") .. "'", err.message)
      end
      assert.equal(0, emu.stats().requests)
    end)

    it("reject a query that is not a table", function()
      fails("invalid", "query", function() new():users("task-1") end)
    end)
  end)

  describe("page_size", function()
    it("accepts 1 and 5000, the bounds the server accepts (its message says less than 5000)", function()
      local c = new({}, 40)
      local one = assert(c:page{ task_ids = "task-1", page_size = 1 })
      assert.equal(1, #one.users)
      local all = assert(c:page{ task_ids = "task-1", page_size = 5000 })
      assert.equal(#expected(40, { "task-1" }), #all.users)
      assert.same({ "5000" }, args(calls()[2]).page_size)
    end)

    it("defaults to 1000 rows a request (the server's own default is 10)", function()
      collect(new({}, 5):users{ task_ids = "task-1" })
      assert.same({ "1000" }, args(calls()[1]).page_size)
      assert.same({ "0" }, args(calls()[1]).page)
    end)
  end)

  describe("time window", function()
    local function sent(q, opts)
      emu.reset()
      local c = new(opts, 40)
      local got = collect(c:users(q))
      local a = args(calls()[1])
      return a.start_time and a.start_time[1], a.end_time and a.end_time[1], got
    end

    it("sends since/until time numbers as naive ISO in server time (UTC by default)", function()
      local from, to, got = sent{ task_ids = { "task-1", "task-2", "task-3" }, sort = "asc",
        since = data.created(5), ["until"] = data.created(9) }
      assert.equal("2025-01-01T00:05:00", from)
      assert.equal("2025-01-01T00:09:00", to)
      -- users 5..9: end_time is inclusive (the seed says exclusive)
      local want = {}
      for _, k in ipairs(expected(9, { "task-1", "task-2", "task-3" })) do
        if k >= "user-0000005" then want[#want + 1] = k end
      end
      assert.same(want, keys(got))
      assert.equal(data.id(9), got[#got].id)
    end)

    it("converts zoned ISO strings to the server's wall clock", function()
      local from, to = sent{ task_ids = "task-1", since = "2025-01-01T01:05:00+01:00",
        ["until"] = "2025-01-01T00:09:00Z" }
      assert.equal("2025-01-01T00:05:00", from)
      assert.equal("2025-01-01T00:09:00", to)
    end)

    it("sends naive strings as server time, date-only as midnight, fractions as microseconds", function()
      local from, to = sent{ task_ids = "task-1", since = "2025-01-01", ["until"] = "2025-01-01T00:09:30.25" }
      assert.equal("2025-01-01T00:00:00", from)
      assert.equal("2025-01-01T00:09:30.250000", to)
      from = sent{ task_ids = "task-1", since = data.created(7) + 0.5 }
      assert.equal("2025-01-01T00:07:00.500000", from)
    end)

    it("shifts numbers and zoned strings by server_utc_offset, and reads times back in that zone", function()
      local from, to, got = sent({ task_ids = "task-2", sort = "asc", since = data.created(1),
        ["until"] = "2025-01-01T00:04:00Z" }, { server_utc_offset = 3600 })
      assert.equal("2025-01-01T01:01:00", from)
      assert.equal("2025-01-01T01:04:00", to)
      -- the emulator's server runs in UTC, so a +1 h client reads its naive
      -- times an hour early: nothing in 01:01..01:04 wall time there
      assert.equal(0, #got)
      local p = assert(new({ server_utc_offset = 3600 }, 3):page{ task_ids = "task-2", sort = "asc" })
      local u = p.users[1]
      assert.equal("2025-01-01T00:01:00", u.earliest_start_time)
      assert.equal(data.user(1).first - 3600, u.first_seen)
      assert.equal(data.user(1).last - 3600, u.last_seen)
      -- a naive string is server time already: sent unchanged
      from = sent({ task_ids = "task-2", since = "2025-01-01T00:05:00" }, { server_utc_offset = 3600 })
      assert.equal("2025-01-01T00:05:00", from)
    end)

    it("sends neither start_time nor end_time when not given (never an empty value)", function()
      local from, to = sent{ task_ids = "task-1" }
      assert.is_nil(from)
      assert.is_nil(to)
      assert.is_nil(calls()[1].args:find("start_time", 1, true))
    end)
  end)

  describe("user shape", function()
    it("keeps every provider field and adds the common ones", function()
      local p = assert(new({}, 10):page{ task_ids = "task-2", sort = "asc" })
      local u = p.users[1] -- user 1, task 2
      local d = data.user(1)
      assert.equal("user-0000001", u.user_id)
      assert.equal("task-2", u.task_id)
      local sessions, traces = {}, {}
      for k = 1, d.sessions do sessions[k] = ("sess-2-0000001-%d"):format(k) end
      for k = 1, d.requests do traces[k] = ("trace-2-0000001-%02d"):format(k) end
      assert.same(sessions, u.session_ids)
      assert.same(traces, u.trace_ids)
      assert.equal(d.sessions, u.session_count)
      assert.equal(d.requests, u.trace_count)
      assert.equal(d.spans, u.span_count)
      assert.equal("2025-01-01T00:01:00", u.earliest_start_time)
      assert.equal(data.naive(d.last), u.latest_end_time)
      assert.equal(d.prompt_tokens, u.prompt_token_count)
      assert.equal(d.completion_tokens, u.completion_token_count)
      assert.equal(d.tokens, u.total_token_count)
      assert.near(d.prompt_cost / 1e6, u.prompt_token_cost, 1e-9)
      assert.near(d.completion_cost / 1e6, u.completion_token_cost, 1e-9)
      assert.near(d.cost / 1e6, u.total_token_cost, 1e-9)
      -- the common fields
      assert.equal(u.user_id, u.id)
      assert.equal(u.trace_count, u.requests)
      assert.equal(u.session_count, u.sessions)
      assert.equal(u.prompt_token_count, u.prompt_tokens)
      assert.equal(u.completion_token_count, u.completion_tokens)
      assert.equal(u.total_token_count, u.tokens)
      assert.equal(u.total_token_cost, u.cost)
      assert.equal(d.first, u.first_seen)
      assert.equal(d.last, u.last_seen)
      assert.is_nil(u.email) -- Arthur has no email
      assert.equal("USD", p.display_currency)
    end)

    it("makes integer fields Lua integers on 5.3+", function()
      if not INTEGERS then return end
      local u = assert(new({}, 3):page{ task_ids = "task-2" }).users[1]
      for _, k in ipairs{ "session_count", "trace_count", "span_count", "prompt_token_count",
                          "completion_token_count", "total_token_count", "requests", "sessions",
                          "tokens", "first_seen", "last_seen" } do
        assert.equal("integer", math.type(u[k]), k)
      end
      assert.equal("float", math.type(u.cost))
    end)

    it("leaves token and cost fields nil when the server omits them (user 7)", function()
      local p = assert(new({}, 7):page{ task_ids = "task-2", sort = "asc" }) -- users 1, 4, 7
      local u = p.users[#p.users]
      assert.equal("user-0000007", u.id)
      for _, k in ipairs{ "prompt_token_count", "completion_token_count", "total_token_count",
                          "prompt_token_cost", "completion_token_cost", "total_token_cost",
                          "prompt_tokens", "completion_tokens", "tokens", "cost" } do
        assert.is_nil(u[k], k)
      end
      assert.equal(data.user(7).requests, u.requests)
    end)

    it("turns JSON null into nil, numeric ids into strings and numeric strings into numbers", function()
      emu.faults(LIST, { { body = '{"count":1,"display_currency":null,"users":[{"user_id":42,'
        .. '"task_id":7,"session_ids":["s-1",null,3],"trace_ids":[],"session_count":"2",'
        .. '"trace_count":3.0,"span_count":5,"earliest_start_time":"2025-01-01T00:00:00",'
        .. '"latest_end_time":null,"total_token_cost":null,"total_token_count":"12",'
        .. '"prompt_token_cost":"0.5","future_field":{"a":null,"b":1}}]}' } })
      local p = assert(new():page{ task_ids = "t" })
      local u = p.users[1]
      assert.equal("42", u.id)
      assert.equal("42", u.user_id)
      assert.equal("7", u.task_id)
      assert.same({ "s-1", "3" }, u.session_ids)
      assert.equal(2, u.session_count)
      assert.equal(3, u.requests)
      if INTEGERS then
        assert.equal("integer", math.type(u.requests))
        assert.equal("integer", math.type(u.tokens))
      end
      assert.equal(12, u.tokens)
      assert.equal(0.5, u.prompt_token_cost)
      assert.is_nil(u.latest_end_time)
      assert.is_nil(u.last_seen)
      assert.is_nil(u.cost)
      assert.equal(data.BASE, u.first_seen)
      assert.same({ b = 1 }, u.future_field) -- unknown fields kept
      assert.is_nil(p.display_currency)
      for _, v in pairs(u) do assert.is_not.equal(userlist.null, v) end
    end)

    it("reports the page's facts: count, display_currency, page, page_size, number, next", function()
      local c = new({}, 30)
      local p = assert(c:page{ task_ids = "task-1", page_size = 4, page = 1, sort = "asc" })
      assert.equal(#expected(30, { "task-1" }), p.count)
      assert.equal(1, p.page)
      assert.equal(4, p.page_size)
      assert.equal(1, p.number)
      assert.equal(200, p.status)
      assert.equal("USD", p.display_currency)
      assert.same({ page = 2 }, p.next)
      local last = assert(c:page{ task_ids = "task-1", page_size = 4, page = 3 })
      assert.is_nil(last.next)
    end)
  end)

  describe("errors", function()
    it("reads a 400 validation error whose detail is a plain string", function()
      emu.faults(LIST, { { status = 400,
        body = '{"detail":"Invalid page size, must be greater than 0 and less than 5000"}' } })
      local p, err = new():page{ task_ids = "task-1" }
      assert.is_nil(p)
      assert.equal("http", err.kind)
      assert.equal(400, err.status)
      assert.equal("Invalid page size, must be greater than 0 and less than 5000", err.message)
      assert.is_false(err.retryable)
    end)

    it("reads FastAPI's 422 whose detail is a list", function()
      emu.faults(LIST, { { status = 422 } })
      local _, err = new():page{ task_ids = "task-1" }
      assert.equal(422, err.status)
      assert.equal("query.task_ids: Field required", err.message)
    end)

    it("reports 401 Bad credentials for a wrong key and Requires authentication for none", function()
      local _, err = new{ api_key = "wrong" }:page{ task_ids = "task-1" }
      assert.equal(401, err.status)
      assert.equal("Bad credentials", err.message)
      assert.is_nil(tostring(err):find("wrong", 1, true))
      local res = raw(LIST .. "?task_ids=task-1", { Authorization = "Basic abc" })
      assert.equal(401, res.status)
      assert.same({ detail = "Requires authentication" }, res.body)
    end)

    it("reports 403 for a task of another organisation", function()
      local _, err = new():page{ task_ids = { "task-1", "org2-task" } }
      assert.equal(403, err.status)
      assert.equal("task_ids include items outside the caller's org", err.message)
      fails("http", nil, function() collect(new():users{ task_ids = "org2-task" }) end)
    end)

    it("page() returns nil, err for API errors and never raises them", function()
      emu.faults(LIST, { { status = 500 } })
      local p, err = new():page{ task_ids = "task-1" }
      assert.is_nil(p)
      assert.equal(500, err.status)
      assert.is_true(err.retryable)
    end)
  end)

  describe("pages()", function()
    it("yields page tables in order, each with its users and facts", function()
      local c = new({}, 25)
      local want = expected(25, { "task-3" })
      local seen, numbers = {}, {}
      for page in c:pages{ task_ids = "task-3", page_size = 3, sort = "asc" } do
        numbers[#numbers + 1] = page.page
        assert.equal(#want, page.count)
        for _, u in ipairs(page.users) do seen[#seen + 1] = u.user_id .. "/" .. u.task_id end
      end
      assert.same(want, seen)
      assert.equal(math.ceil(#want / 3), #numbers)
      assert.equal(0, numbers[1])
      assert.equal(#numbers - 1, numbers[#numbers])
    end)

    it("hands the generic for a closing value that ends the listing (Lua 5.4 closes it on break)", function()
      local c = new({}, 40)
      local f, s, ctl, closing = c:pages{ task_ids = "task-1", page_size = 2 }
      assert.equal("function", type(getmetatable(closing).__close))
      assert.is_table(f(s, ctl))
      getmetatable(closing).__close(closing)
      assert.is_nil(f(s, ctl)) -- closed: no further request
      assert.equal(1, #calls())
      if _VERSION == "Lua 5.4" then
        emu.reset()
        local n = 0
        for u in c:users{ task_ids = "task-1", page_size = 2 } do
          n = n + 1
          if u then break end
        end
        assert.equal(1, n)
        assert.equal(1, #calls())
      end
    end)
  end)

  describe("user(id)", function()
    it("returns one user's row, without token or cost fields", function()
      local u, err = new({}, 10):user("user-0000003", { task_ids = "task-1" })
      assert.is_nil(err)
      local d = data.user(3)
      assert.equal("user-0000003", u.id)
      assert.equal("task-1", u.task_id)
      assert.equal(d.requests, u.requests)
      assert.equal(d.sessions, u.sessions)
      assert.equal(d.first, u.first_seen)
      assert.equal(d.last, u.last_seen)
      assert.is_nil(u.tokens)
      assert.is_nil(u.cost)
      assert.is_nil(u.total_token_count)
      if INTEGERS then assert.equal("integer", math.type(u.requests)) end
      local r = calls()[1]
      assert.equal(LIST .. "/user-0000003", r.uri)
      assert.same({ "task-1" }, args(r).task_ids)
    end)

    it("returns one of the tasks' rows when several are asked", function()
      local u = assert(new({}, 10):user("user-0000005", { task_ids = { "task-1", "task-3" } }))
      assert.is_truthy(u.task_id == "task-1" or u.task_id == "task-3")
      assert.same({ "task-1", "task-3" }, args(calls()[1]).task_ids)
    end)

    it("uses the client's task_ids option and accepts a numeric id", function()
      local c = new({ task_ids = { "task-2" } }, 10)
      assert.equal("user-0000001", assert(c:user("user-0000001")).id)
      local _, err = c:user(42)
      assert.equal(404, err.status)
      assert.equal(LIST .. "/42", calls()[2].uri)
    end)

    it("returns nil and a 404 error with the server's detail for an unknown user", function()
      local u, err = new({}, 10):user("user-0000011", { task_ids = "task-1" })
      assert.is_nil(u)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal("User user-0000011 not found or has no data", err.message)
      -- a known user without rows in the tasks asked is a 404 too
      local _, err2 = new({}, 10):user("user-0000003", { task_ids = "task-2" })
      assert.equal(404, err2.status)
    end)

    it("keeps ids with / ? # % spaces dots and non-ASCII inside their one path segment", function()
      local c = new({}, 10)
      local ids = { "a/b", "../x", "..", ".", "?", "#", "a b", "100%", "ü/é", "x?task_ids=task-2#y" }
      for k, id in ipairs(ids) do
        local u, err = c:user(id, { task_ids = "task-1" })
        assert.is_nil(u)
        -- the server decoded exactly this id from the one segment
        assert.equal("User " .. id .. " not found or has no data", err.message)
        local r = calls()[k]
        local seg = r.uri:sub(#LIST + 2)
        assert.equal(LIST .. "/" .. seg, r.uri)
        assert.is_nil(seg:find("[/?#%s]"))
        assert.equal(id, unescape(seg))
        assert.same({ "task-1" }, args(r).task_ids)
      end
    end)

    it("checks the id and the query before any request", function()
      local c = new()
      for _, case in ipairs{ { "id", nil }, { "id", "" }, { "id", {} }, { "id", true } } do
        local u, err = c:user(case[2], { task_ids = "task-1" })
        assert.is_nil(u)
        assert.equal("invalid", err.kind)
        assert.equal(case[1], err.field)
      end
      local _, err = c:user("user-0000001")
      assert.equal("task_ids", err.field)
      _, err = c:user("user-0000001", { task_ids = "task-1", expand = "x" })
      assert.equal("expand", err.field)
      assert.equal(0, emu.stats().requests)
    end)
  end)

  describe("the emulator serves the server's real behaviour", function()
    it("answers missing task_ids, task_ids[] and a bad page_size with 400 and a string detail", function()
      local res = raw(LIST)
      assert.equal(400, res.status)
      assert.same({ detail = "query.task_ids: Field required" }, res.body)
      assert.same(res.body, raw(LIST .. "?task_ids%5B%5D=task-1").body)
      res = raw(LIST .. "?task_ids=task-1&page_size=5001")
      assert.equal(400, res.status)
      assert.same({ detail = "Invalid page size, must be greater than 0 and less than 5000" }, res.body)
      assert.equal(400, raw(LIST .. "?task_ids=task-1&page_size=0").status)
      assert.equal(200, raw(LIST .. "?task_ids=task-1&page_size=5000").status)
      assert.equal("string", type(raw(LIST .. "?task_ids=task-1&sort=up").body.detail))
    end)

    it("refuses an empty start_time and reads naive and zoned times", function()
      local res = raw(LIST .. "?task_ids=task-1&start_time=")
      assert.equal(400, res.status)
      assert.equal("string", type(res.body.detail))
      local naive = raw(LIST .. "?task_ids=task-1&start_time=2025-01-01T00:20:00").body
      local zoned = raw(LIST .. "?task_ids=task-1&start_time=2025-01-01T01:20:00%2B01:00").body
      assert.equal(naive.count, zoned.count)
      assert.equal(#expected(40, { "task-1" }) - #expected(19, { "task-1" }), naive.count)
    end)

    it("defaults to page 0, 10 rows, newest first; past the end an empty page with the count", function()
      local body = raw(LIST .. "?task_ids=task-1&task_ids=task-2&task_ids=task-3").body
      local want = expected(40, { "task-1", "task-2", "task-3" }, "desc")
      assert.equal(10, #body.users)
      assert.equal(#want, body.count)
      assert.equal(want[1], body.users[1].user_id .. "/" .. body.users[1].task_id)
      local past = raw(LIST .. "?task_ids=task-1&page=99").body
      assert.equal(0, #past.users)
      assert.equal(#expected(40, { "task-1" }), past.count)
    end)

    it("leaves empty fields absent, never null, and sends no token fields on the detail", function()
      local s = core.session()
      local res = assert(s:request{ url = emu.http .. LIST .. "?task_ids=task-1&sort=asc&page_size=50",
                                    api_key = KEY, headers = { ["X-Emu-Users"] = "21" } })
      for _, u in ipairs(res.body.users) do
        for _, v in pairs(u) do assert.is_not.equal(core.null, v) end
        local i = data.index(u.user_id)
        assert.equal(i % 7 ~= 0, u.total_token_count ~= nil)
        assert.is_nil(u.earliest_start_time:find("[Z+]")) -- naive times
      end
      res = assert(s:request{ url = emu.http .. LIST .. "/user-0000001?task_ids=task-2", api_key = KEY })
      s:close()
      assert.is_nil(res.body.total_token_count)
      assert.is_nil(res.body.total_token_cost)
      assert.equal("user-0000001", res.body.user_id)
    end)
  end)

  describe("a million users", function()
    it("streams the whole listing with bounded memory", function()
      local N = 1000000
      -- rows of task-2 among users 1..N: period 15 (tasks depend on i%3, i%5)
      local per, rest = 0, 0
      for r = 1, 15 do
        for _, t in ipairs(data.tasks(r)) do
          if t == 2 then
            per = per + 1
            if r <= N % 15 then rest = rest + 1 end
          end
        end
      end
      local want = math.floor(N / 15) * per + rest
      local c = new({}, N)
      collectgarbage()
      local base = collectgarbage("count")
      local n, peak, prev, ordered = 0, 0, 0, true
      local first, last
      for u in c:users{ task_ids = "task-2", page_size = 2500, sort = "asc" } do
        n = n + 1
        if n == 1 then first = u.id end
        last = u.id
        if n % 2500 == 1 then
          local i = tonumber(u.id:sub(6))
          if i < prev then ordered = false end
          prev = i
          local kb = collectgarbage("count") - base
          if kb > peak then peak = kb end
        end
      end
      assert.equal(want, n)
      assert.is_true(ordered)
      assert.equal(data.id(1), first)
      local lastn = N
      while true do
        local ok = false
        for _, t in ipairs(data.tasks(lastn)) do if t == 2 then ok = true end end
        if ok then break end
        lastn = lastn - 1
      end
      assert.equal(data.id(lastn), last)
      assert.equal(math.ceil(want / 2500), emu.stats().requests)
      -- a few pages' worth, whereas the rows themselves would take ~1 GB
      assert.is_true(peak < 48 * 1024, ("peak %.0f KiB"):format(peak))
    end)
  end)
end)
