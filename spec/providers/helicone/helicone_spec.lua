-- The Helicone client against the emulator, which answers like the real
-- server (quirks included): the seed endpoint POST /v1/user/query for
-- user_ids lookups, POST /v1/user/metrics/query for full listings.
local userlist = require "userlist"
local core = require "userlist.core"
local emu = require "support.emu"

local data = dofile("spec/emulator/lua/emu/data.lua")
local KEY = emu.keys.helicone
local N = 250 -- the emulator's default population
local IS_54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")

-- A client on the emulator; `users` sets X-Emu-Users, `server` (a build
-- date) X-Emu-Helicone-Version. Sleeps are recorded, never slept.
local slept
local function client(opts)
  opts = opts or {}
  local o = { api_key = KEY, base_url = emu.http, max_retries = 0,
              sleep = function(s) slept[#slept + 1] = s end }
  for k, v in pairs(opts) do if k ~= "users" and k ~= "server" then o[k] = v end end
  if opts.users or opts.server then
    o.headers = { ["X-Emu-Users"] = opts.users and tostring(opts.users) or nil,
                  ["X-Emu-Helicone-Version"] = opts.server }
  end
  -- one request at a time, so each can be pinned down (spec/14 fetches ahead)
  if o.concurrency == nil then o.concurrency = 1 end
  return userlist.helicone(o)
end

local function all(c, q)
  local list = {}
  for u in c:users(q) do list[#list + 1] = u end
  return list
end

local function ids_of(users)
  local out = {}
  for i, u in ipairs(users) do out[i] = u.id end
  return out
end

local function ids(n, from)
  local out = {}
  for i = 1, n do out[i] = data.id((from or 0) + i) end
  return out
end

-- The data-plane requests the emulator saw, bodies decoded.
local function sent()
  local out = {}
  for _, r in ipairs(emu.requests()) do
    if r.uri:find("^/v1/user/") then
      r.json = core.json_decode(r.body)
      out[#out + 1] = r
    end
  end
  return out
end

local function count_requests() return emu.stats().requests end

-- Raises the error a call produces: users() and pages() raise, page() returns it.
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  return err
end

local function is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

-- A canned metrics answer: {"data":{"users":[...],"count":c,"hasUsers":true},"error":null}
local function metrics_body(rows, count)
  return '{"data":{"users":[' .. table.concat(rows, ",") .. '],"count":' .. (count or #rows)
    .. ',"hasUsers":true},"error":null}'
end

local function metrics_row(id, extra)
  return '{"id":"' .. id .. '","user_id":"' .. id .. '","active_for":1,'
    .. '"first_active":"2025-01-01T00:01:00.000Z","last_active":"2025-01-02T00:01:00.000Z",'
    .. '"total_requests":3,"average_requests_per_day_active":3,"average_tokens_per_request":10,'
    .. '"total_prompt_tokens":20,"total_completion_tokens":10,"cost":0.5' .. (extra or "") .. "}"
end

describe("helicone", function()
  before_each(function()
    emu.reset()
    slept = {}
  end)

  describe("constructor", function()
    it("defaults to the US host and takes region = 'eu' for the EU host", function()
      assert.equal("https://api.helicone.ai", userlist.helicone{ api_key = "k" }.base_url)
      assert.equal("https://api.helicone.ai", userlist.helicone{ api_key = "k", region = "us" }.base_url)
      assert.equal("https://eu.api.helicone.ai", userlist.helicone{ api_key = "k", region = "eu" }.base_url)
    end)

    it("lets base_url override the region (self-hosted servers)", function()
      local c = userlist.helicone{ api_key = "k", region = "eu", base_url = "http://localhost:8585/" }
      assert.equal("http://localhost:8585", c.base_url)
    end)

    it("raises on a bad region, an unknown option and a wrongly typed option", function()
      assert.has_error(function() userlist.helicone{ api_key = "k", region = "asia" } end,
        "userlist.helicone: bad option 'region' ('us' or 'eu' expected, got 'asia')")
      assert.has_error(function() userlist.helicone{ api_key = "k", regoin = "eu" } end,
        "userlist.helicone: unknown option 'regoin'")
      assert.has_error(function() userlist.helicone{ api_key = "k", time_filter_in_seconds = "yes" } end,
        "userlist.helicone: bad option 'time_filter_in_seconds' (boolean expected, got string)")
    end)

    it("never shows the key in tostring or options", function()
      local c = client()
      assert.not_matches(KEY, tostring(c), 1, true)
      assert.is_nil(c.options.api_key)
    end)

    it("reads the key from HELICONE_API_KEY, and says so when it is missing", function()
      local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA unset: run through spec/run.sh")
      local code = "local c = require('userlist').helicone{ base_url = os.getenv('USERLIST_EMU_HTTP') }"
        .. " local p = assert(c:page{ limit = 3 }) io.write(#p.users, ' ', p.users[1].id)"
      local f = io.popen(emu.child_env .. " HELICONE_API_KEY=" .. KEY .. " " .. lua
        .. " -e \"" .. code .. "\" 2>&1")
      assert.equal("3 user-0000001", f:read("*a"))
      f:close()
      f = io.popen("env -u HELICONE_API_KEY " .. emu.child_env .. " " .. lua
        .. " -e \"print(select(2, pcall(require('userlist').helicone, {})))\" 2>&1")
      assert.matches("no API key %(pass api_key or set HELICONE_API_KEY%)", f:read("*a"))
      f:close()
    end)
  end)

  describe("users() over /v1/user/metrics/query", function()
    it("lists every user across pages in user_id order, with offset paging and an explicit sort", function()
      local users = all(client(), { limit = 100 })
      assert.same(ids(N), ids_of(users))
      local reqs = sent()
      assert.equal(3, #reqs) -- 100 + 100 + 50: the short page ends the listing
      for i, r in ipairs(reqs) do
        assert.equal("POST", r.method)
        assert.equal("/v1/user/metrics/query", r.uri)
        assert.equal("Bearer " .. KEY, r.headers.authorization)
        assert.same({ filter = "all", offset = (i - 1) * 100, limit = 100, sort = { user_id = "asc" } },
          r.json)
      end
    end)

    it("asks for 1000 rows a page by default (the server's maximum)", function()
      assert.equal(N, #all(client()))
      local reqs = sent()
      assert.equal(1, #reqs)
      assert.equal(1000, reqs[1].json.limit)
    end)

    it("lists an empty organisation with one request and no user", function()
      assert.same({}, all(client{ users = 0 }, { limit = 10 }))
      assert.equal(1, #sent())
    end)

    it("lists a one-user organisation", function()
      local users = all(client{ users = 1 }, { limit = 10 })
      assert.same({ "user-0000001" }, ids_of(users))
      assert.equal(1, #sent())
    end)

    it("lists an exact page multiple (N = 2 * limit) once each, ending on an empty page", function()
      local users = all(client{ users = 200 }, { limit = 100 })
      assert.same(ids(200), ids_of(users))
      local reqs = sent()
      assert.equal(3, #reqs)
      assert.equal(200, reqs[3].json.offset)
      -- limit 1 and one user: a full page, then an empty one
      assert.same({ "user-0000001" }, ids_of(all(client{ users = 1 }, { limit = 1 })))
    end)

    it("never stops on `count`, which is cached and ignores the filter", function()
      -- a first page claiming count = 2 while more users exist: the client goes on
      emu.faults("/v1/user/metrics/query", { { body = metrics_body({
        metrics_row("user-0000001"), metrics_row("user-0000002") }, 2) } })
      local users = all(client{ users = 5 }, { limit = 2 })
      assert.same(ids(5), ids_of(users))
      assert.equal(3, #sent())
      -- a filter matching one user while count says 250: one short page, done
      local one = { users_view = { user_user_id = { equals = "user-0000007" } } }
      local p = assert(client():page{ filter = one })
      assert.equal(N, p.count)
      assert.same({ "user-0000007" }, ids_of(p.users))
      assert.is_nil(p.next)
    end)

    it("sorts by any field in either direction and sends it as the one key of `sort`", function()
      local users = all(client(), { limit = 100, sort = { cost = "desc" } })
      assert.equal(N, #users)
      for i = 2, #users do assert.is_true(users[i - 1].cost >= users[i].cost) end
      local seen = {}
      for _, u in ipairs(users) do seen[u.id] = true end
      local distinct = 0
      for _ in pairs(seen) do distinct = distinct + 1 end
      assert.equal(N, distinct)
      -- the string form is ascending
      users = all(client(), { sort = "total_requests" })
      for i = 2, #users do assert.is_true(users[i - 1].requests <= users[i].requests) end
      local reqs = sent()
      assert.same({ cost = "desc" }, reqs[1].json.sort)
      assert.same({ total_requests = "asc" }, reqs[#reqs].json.sort)
    end)

    it("accepts every sort field the server documents", function()
      local c = client()
      for _, f in ipairs{ "id", "user_id", "active_for", "first_active", "last_active", "total_requests",
        "average_requests_per_day_active", "average_tokens_per_request", "total_prompt_tokens",
        "total_completion_tokens", "cost", "rate_limited_count" } do
        for _, dir in ipairs{ "asc", "desc" } do
          local p, err = c:page{ limit = 2, sort = { [f] = dir } }
          assert(p, tostring(err))
          assert.equal(2, #p.users)
        end
      end
      assert.equal(24, #sent())
    end)

    it("sends since/until as real seconds and gets the users active in the window", function()
      local since, till = data.BASE + 86400, data.BASE + 2 * 86400
      local users = all(client(), { since = since, ["until"] = "2025-01-03T00:00:00Z", limit = 50 })
      local want = {}
      for i = 1, N do
        local u = data.user(i)
        if u.last > since and u.first < till then want[#want + 1] = u.id end
      end
      assert.is_true(#want > 0 and #want < N)
      assert.same(want, ids_of(users))
      assert.same({ startTimeUnixSeconds = since, endTimeUnixSeconds = till }, sent()[1].json.timeFilter)
    end)

    it("fills a missing since with the epoch and a missing until with now", function()
      local before = os.time()
      assert(client():page{ since = "2025-01-01", limit = 1 })
      assert(client():page{ ["until"] = data.BASE + 3600, limit = 1 })
      local reqs = sent()
      local tf = reqs[1].json.timeFilter
      assert.equal(data.BASE, tf.startTimeUnixSeconds)
      assert.is_true(tf.endTimeUnixSeconds >= before and tf.endTimeUnixSeconds <= os.time() + 1)
      assert.same({ startTimeUnixSeconds = 0, endTimeUnixSeconds = data.BASE + 3600 },
        reqs[2].json.timeFilter)
    end)

    it("passes a filter tree through and gets only the matching users", function()
      local filter = { left = { users_view = { user_total_requests = { gte = 19 } } }, operator = "and",
        right = { request_response_rmt = { user_id = { like = "user-00000%" } } } }
      local users = all(client(), { filter = filter, limit = 10 })
      local want = {}
      for i = 1, 99 do
        if data.user(i).requests >= 19 then want[#want + 1] = data.id(i) end
      end
      assert.same(want, ids_of(users))
      assert.same(filter, sent()[1].json.filter)
    end)

    it("starts at `offset` and stops after `max_pages`", function()
      local users = all(client(), { offset = 10, limit = 20, max_pages = 2 })
      assert.same(ids(40, 10), ids_of(users))
      local reqs = sent()
      assert.equal(2, #reqs)
      assert.equal(30, reqs[2].json.offset)
    end)

    it("sends time_zone_difference_minutes and undoes the server's shift of first/last_active", function()
      for _, tz in ipairs{ 120, -120 } do
        local p = assert(client():page{ limit = 1, time_zone_difference_minutes = tz })
        local u, want = p.users[1], data.user(1)
        -- the server subtracts |tz| minutes whatever the sign, then labels it UTC
        assert.equal(data.iso_ms(want.first - 7200), u.first_active)
        assert.equal(want.first, u.first_seen)
        assert.equal(want.last, u.last_seen)
      end
      local reqs = sent()
      assert.equal(120, reqs[1].json.timeZoneDifferenceMinutes)
      assert.equal(-120, reqs[2].json.timeZoneDifferenceMinutes)
    end)

    it("drops rows repeated across pages with dedupe = true (ties of a non-unique sort)", function()
      local pages = {
        { body = metrics_body{ metrics_row("a"), metrics_row("b") } },
        { body = metrics_body{ metrics_row("b"), metrics_row("c") } },
        { body = metrics_body{} },
      }
      emu.faults("/v1/user/metrics/query", pages)
      assert.same({ "a", "b", "b", "c" }, ids_of(all(client(), { limit = 2, sort = { cost = "desc" } })))
      emu.faults("/v1/user/metrics/query", pages)
      assert.same({ "a", "b", "c" },
        ids_of(all(client(), { limit = 2, sort = { cost = "desc" }, dedupe = true })))
    end)

    it("streams a million users in bounded memory", function()
      local c = client{ users = 1000000 }
      local before = count_requests()
      collectgarbage("collect")
      local base = collectgarbage("count")
      local n, peak, order_ok = 0, 0, true
      for u in c:users{ limit = 1000 } do
        n = n + 1
        -- first and last user of every page: nothing skipped or repeated between pages
        local r = n % 1000
        if (r == 0 or r == 1) and u.id ~= data.id(n) then order_ok = false end
        if n % 5000 == 0 then
          local kb = collectgarbage("count")
          if kb > peak then peak = kb end
        end
      end
      assert.equal(1000000, n)
      assert.is_true(order_ok, "users out of order, repeated or missing")
      -- 1000 full pages, then the empty page that proves the end
      assert.equal(1001, count_requests() - before)
      -- a page of 1000 users is a few MB; a million kept would be ~1 GB
      assert.is_true(peak - base < 32 * 1024, ("heap grew by %.0f KB"):format(peak - base))
    end)
  end)

  describe("self-hosted servers that predate `sort`", function()
    local OLD, MID = "2025-03-01", "2025-05-01" -- no `sort` yet; `user_id` sort fails with 400

    -- A client that records its fallback events.
    local function recording(opts)
      local events = {}
      opts.on_event = function(ev) if ev.type == "fallback" then events[#events + 1] = ev end end
      return client(opts), events
    end

    -- Each of the ids `want` exactly once, in whatever order, and no other.
    local function each_once(users, want)
      local seen = {}
      for _, u in ipairs(users) do
        assert.is_nil(seen[u.id], "listed twice: " .. u.id)
        seen[u.id] = true
      end
      assert.equal(#want, #users)
      for _, id in ipairs(want) do assert.is_true(seen[id], "missing: " .. id) end
    end

    it("sends no sort field with sort = false, and lists every user once in the server's order", function()
      local c, events = recording{ server = OLD }
      local users = all(c, { limit = 100, sort = false })
      each_once(users, ids(N))
      assert.are_not.same(ids(N), ids_of(users)) -- the server's own order, not user_id's
      local reqs = sent()
      assert.equal(3, #reqs)
      for i, r in ipairs(reqs) do
        assert.same({ filter = "all", offset = (i - 1) * 100, limit = 100 }, r.json)
      end
      assert.same({}, events)
    end)

    it("lists a server from before 2025-03-29 (422 excess property) again without sort, once", function()
      local c, events = recording{ server = OLD }
      local users = all(c, { limit = 100 })
      each_once(users, ids(N))
      local reqs = sent()
      assert.equal(4, #reqs) -- the refused first page, then 100 + 100 + 50 without sort
      assert.same({ user_id = "asc" }, reqs[1].json.sort)
      for i = 2, 4 do
        assert.is_nil(reqs[i].json.sort)
        assert.equal((i - 2) * 100, reqs[i].json.offset)
      end
      assert.equal(1, #events)
      local ev = events[1]
      assert.equal("sort_refused", ev.reason)
      assert.equal(422, ev.status)
      assert.same({ user_id = "asc" }, ev.sort)
      assert.equal(0, ev.offset)
      assert.equal("helicone", ev.provider)
      assert.equal(emu.http .. "/v1/user/metrics/query", ev.url)
      assert.matches("requestBody.sort", ev.message, 1, true)
    end)

    it("lists a mid-2025 server (400 to a user_id sort) again without sort, once", function()
      local c, events = recording{ server = MID }
      local users = all(c, { limit = 100 })
      each_once(users, ids(N))
      local reqs = sent()
      assert.equal(4, #reqs)
      assert.same({ user_id = "asc" }, reqs[1].json.sort)
      for i = 2, 4 do assert.is_nil(reqs[i].json.sort) end
      assert.equal(1, #events)
      assert.equal(400, events[1].status)
      assert.equal("sort_refused", events[1].reason)
    end)

    it("restarts from the first position when pages were fetched ahead with the sort", function()
      local c, events = recording{ server = OLD, concurrency = 4 }
      local users = all(c, { limit = 50, offset = 10 })
      assert.equal(1, #events)
      assert.equal(10, events[1].offset)
      -- the window went out with the sort before the first page's refusal
      -- came back; every position was then asked once without it
      local sorted, unsorted = 0, {}
      for _, r in ipairs(sent()) do
        if r.json.sort then
          sorted = sorted + 1
        else
          local off = r.json.offset
          assert.is_nil(unsorted[off], "offset asked twice without sort: " .. off)
          unsorted[off] = true
        end
      end
      assert.is_true(sorted > 1, "no page was fetched ahead with the sort")
      for off = 10, 210, 50 do assert.is_true(unsorted[off], "never asked without sort: " .. off) end
      -- the very users, in the very order, of a listing that never sent a sort
      local want = ids_of(all(client{ server = OLD }, { limit = 50, offset = 10, sort = false }))
      assert.equal(N - 10, #want)
      each_once(users, want)
      assert.same(want, ids_of(users))
    end)

    it("raises the error a sort the caller asked for gets; only the default one is dropped", function()
      local c, events = recording{ server = OLD }
      local err = raised(function() all(c, { sort = { cost = "desc" } }) end)
      assert.equal(422, err.status)
      assert.matches("requestBody.sort", err.message, 1, true)
      assert.same({}, events)
      c, events = recording{ server = MID }
      err = raised(function() all(c, { sort = "user_id" }) end)
      assert.equal(400, err.status)
      local _, perr = c:page{ sort = { user_id = "asc" } }
      assert.equal(400, perr.status)
      assert.same({}, events)
      assert.equal(3, #sent())
      for _, r in ipairs(sent()) do assert.is_table(r.json.sort) end
      -- while the default sort, refused alike, is dropped
      each_once(all(c, { limit = 100 }), ids(N))
      assert.equal(1, #events)
    end)

    it("never loops: when the request without sort fails too, that error is raised", function()
      -- the first request is refused for its sort; the second, without, gets
      -- a query error that looks like a refusal too
      emu.faults("/v1/user/metrics/query", { { delay_ms = 0 },
        { status = 400, body = '{"error":"Error executing query: second","data":null}' } })
      local c, events = recording{ server = MID }
      local err = raised(function() all(c) end)
      assert.equal(400, err.status)
      assert.equal("Error executing query: second", err.message)
      local reqs = sent()
      assert.equal(2, #reqs)
      assert.is_nil(reqs[2].json.sort)
      assert.equal(1, #events)
    end)

    it("falls back on the first page only: a later page's error is raised", function()
      -- the first page's 400 query error to the default sort: listed again without it
      local refusal = { status = 400, body = '{"error":"Error executing query: first","data":null}' }
      emu.faults("/v1/user/metrics/query", { refusal })
      local c, events = recording{}
      each_once(all(c, { limit = 100 }), ids(N))
      assert.equal(1, #events)
      assert.equal("Error executing query: first", events[1].message)
      -- the same answer to the second page, once the first was read sorted: raised
      emu.reset()
      emu.faults("/v1/user/metrics/query", { { delay_ms = 0 },
        { status = 400, body = '{"error":"Error executing query: later","data":null}' } })
      c, events = recording{}
      local n = 0
      local err = raised(function()
        for _ in c:users{ limit = 100 } do n = n + 1 end
      end)
      assert.equal(100, n)
      assert.equal("Error executing query: later", err.message)
      assert.equal(2, #sent())
      assert.same({}, events)
    end)

    it("gives page() the first page without sort from an old server", function()
      local c, events = recording{ server = OLD }
      local p = assert(c:page{ limit = 100 })
      assert.equal(100, #p.users)
      assert.equal(100, p.next)
      assert.equal(1, #events)
      local reqs = sent()
      assert.equal(2, #reqs)
      assert.is_nil(reqs[2].json.sort)
    end)
  end)

  describe("users{user_ids = ...} over /v1/user/query (the seed endpoint)", function()
    it("looks up the ids and returns them in the order asked", function()
      local want = { "user-0000009", "user-0000002", "user-0000100", "user-0000031" }
      local users = all(client(), { user_ids = want })
      assert.same(want, ids_of(users))
      local reqs = sent()
      assert.equal(1, #reqs)
      assert.equal("/v1/user/query", reqs[1].uri)
      assert.same({ userIds = want }, reqs[1].json) -- no time window: all time
    end)

    it("batches 100 ids a request, so the 100-row cap never hides a user", function()
      local want = ids(N)
      local users = all(client(), { user_ids = want })
      assert.same(want, ids_of(users))
      local reqs = sent()
      assert.equal(3, #reqs)
      assert.same(ids(100), reqs[1].json.userIds)
      assert.same(ids(100, 100), reqs[2].json.userIds)
      assert.same(ids(50, 200), reqs[3].json.userIds)
    end)

    it("sends an exact multiple of 100 ids in exactly that many requests", function()
      assert.equal(200, #all(client(), { user_ids = ids(200) }))
      assert.equal(2, #sent())
    end)

    it("looks up a single id, given as a string or a one-element list", function()
      assert.same({ "user-0000005" }, ids_of(all(client(), { user_ids = "user-0000005" })))
      assert.same({ "user-0000005" }, ids_of(all(client(), { user_ids = { "user-0000005" } })))
    end)

    it("sends each id once and leaves out unknown ids", function()
      local users = all(client(), { user_ids = { "user-0000003", "nobody", "user-0000003", "user-0000001" } })
      assert.same({ "user-0000003", "user-0000001" }, ids_of(users))
      assert.same({ "user-0000003", "nobody", "user-0000001" }, sent()[1].json.userIds)
    end)

    it("sends the window in milliseconds, which today's server needs to select the right rows", function()
      local since, till = data.BASE + 60 * 200, data.BASE + 60 * 210
      local users = all(client(), { user_ids = ids(N), since = since, ["until"] = "2025-01-01T03:30:00Z" })
      local want = {}
      for i = 1, N do
        local u = data.user(i)
        if u.last >= since and u.first <= till then want[#want + 1] = u.id end
      end
      assert.is_true(#want > 0 and #want < N)
      assert.same(want, ids_of(users))
      assert.same({ startTimeUnixSeconds = since * 1000, endTimeUnixSeconds = till * 1000 },
        sent()[1].json.timeFilter)
    end)

    it("sends seconds with time_filter_in_seconds = true (for a fixed server; today's reads 1970)", function()
      local users = all(client{ time_filter_in_seconds = true },
        { user_ids = ids(10), since = data.BASE, ["until"] = data.BASE + 86400 * 365 })
      assert.same({}, users) -- the emulator keeps the bug: seconds read as milliseconds
      assert.same({ startTimeUnixSeconds = data.BASE, endTimeUnixSeconds = data.BASE + 86400 * 365 },
        sent()[1].json.timeFilter)
    end)

    it("maps a row to the common fields and keeps the provider's", function()
      local u = all(client(), { user_ids = { "user-0000011" } })[1]
      local d = data.user(11)
      assert.same({
        user_id = d.id, count = d.requests, prompt_tokens = d.prompt_tokens,
        completion_tokens = d.completion_tokens, cost = tonumber(data.usd(d.cost)),
        id = d.id, requests = d.requests, tokens = d.tokens,
      }, u)
      for _, k in ipairs{ "count", "prompt_tokens", "completion_tokens", "requests", "tokens" } do
        assert.is_true(is_integer(u[k]), k)
      end
    end)

    it("keeps the row of requests with no user id (user_id \"\")", function()
      emu.config{ helicone_blank_user = true }
      local users = all(client(), { user_ids = { "", "user-0000001" } })
      assert.same({ "", "user-0000001" }, ids_of(users))
      assert.equal(7, users[1].requests)
    end)

    it("pages through the ids with page() and `offset`", function()
      local c, want = client(), ids(150)
      local p = assert(c:page{ user_ids = want })
      assert.equal(100, #p.users)
      assert.equal(100, p.next)
      assert.is_false(p.truncated)
      local p2 = assert(c:page{ user_ids = want, offset = p.next })
      assert.same(ids(50, 100), ids_of(p2.users))
      assert.is_nil(p2.next)
    end)
  end)

  describe("query() (one seed request, as documented)", function()
    it("reports truncated = true when the server's 100-row cap was reached", function()
      local r = assert(client():query())
      assert.equal(100, #r.users)
      assert.is_true(r.truncated)
      assert.equal(100, r.row_cap)
      assert.same({}, sent()[1].json)
      r = assert(client{ users = 50 }:query{})
      assert.equal(50, #r.users)
      assert.is_false(r.truncated)
    end)

    it("is never truncated with user_ids, and refuses more than 100", function()
      local r = assert(client():query{ user_ids = ids(100) })
      assert.equal(100, #r.users)
      assert.is_false(r.truncated)
      assert.same(ids(100), ids_of(r.users))
      local before = count_requests()
      local none, err = client():query{ user_ids = ids(101) }
      assert.is_nil(none)
      assert.equal("invalid", err.kind)
      assert.equal("user_ids", err.field)
      assert.equal(before, count_requests())
    end)

    it("sends the window in milliseconds too", function()
      local day = data.BASE + 86400
      local r = assert(client():query{ user_ids = { "user-0000001" }, since = data.BASE, ["until"] = day })
      assert.equal(1, #r.users)
      assert.same({ startTimeUnixSeconds = data.BASE * 1000, endTimeUnixSeconds = day * 1000 },
        sent()[1].json.timeFilter)
    end)

    it("includes the no-user row and its empty id", function()
      emu.config{ helicone_blank_user = true }
      local r = assert(client():query())
      assert.equal("", r.users[1].id)
    end)
  end)

  describe("one user shape", function()
    it("keeps every metrics field and adds the common ones, integers as integers", function()
      local u = assert(client():page{ limit = 1, offset = 10 }).users[1]
      local d = data.user(11)
      assert.same({
        id = d.id, user_id = d.id, active_for = d.active_for,
        first_active = data.iso_ms(d.first), last_active = data.iso_ms(d.last),
        total_requests = d.requests,
        average_requests_per_day_active = tonumber(("%.4f"):format(d.requests / math.max(d.active_for, 1))),
        average_tokens_per_request = tonumber(("%.4f"):format(d.tokens / d.requests)),
        total_prompt_tokens = d.prompt_tokens, total_completion_tokens = d.completion_tokens,
        cost = tonumber(data.usd(d.cost)), rate_limited_count = d.rate_limited,
        requests = d.requests, prompt_tokens = d.prompt_tokens, completion_tokens = d.completion_tokens,
        tokens = d.tokens, first_seen = d.first, last_seen = d.last,
      }, u)
      for _, k in ipairs{ "active_for", "total_requests", "total_prompt_tokens", "total_completion_tokens",
        "rate_limited_count", "requests", "tokens", "first_seen", "last_seen" } do
        assert.is_true(is_integer(u[k]), k)
      end
      assert.is_nil(u.sessions) -- Helicone has no sessions or emails
      assert.is_nil(u.email)
    end)

    it("turns totals sent as JSON strings into numbers", function()
      emu.config{ helicone_string_totals = true }
      local u = assert(client():page{ limit = 11 }).users[11]
      local d = data.user(11)
      assert.equal(d.requests, u.total_requests)
      assert.equal(d.prompt_tokens, u.prompt_tokens)
      assert.equal(d.active_for, u.active_for)
      assert.equal(d.rate_limited, u.rate_limited_count)
      assert.is_true(is_integer(u.total_requests) and is_integer(u.tokens))
      local row = all(client(), { user_ids = { "user-0000011" } })[1]
      assert.equal(d.requests, row.count)
      assert.equal(d.tokens, row.tokens)
      assert.is_true(is_integer(row.count))
    end)

    it("reads the cost of servers from before 2025-08 from cost_usd", function()
      emu.config{ helicone_cost_field = "cost_usd" }
      local u = all(client(), { user_ids = { "user-0000004" } })[1]
      local usd = tonumber(data.usd(data.user(4).cost))
      assert.equal(usd, u.cost)
      assert.equal(usd, u.cost_usd)
    end)

    it("drops JSON nulls, keeps ids as strings and reads both time formats", function()
      emu.faults("/v1/user/metrics/query", { { body = metrics_body{
        '{"id":12345678901,"user_id":12345678901,"active_for":"2","first_active":"2025-01-01 00:01:00",'
          .. '"last_active":"2025-01-02 00:01:00.500","total_requests":"3","cost":null,'
          .. '"total_prompt_tokens":null,"total_prompt_token":"20","total_completion_tokens":10,'
          .. '"rate_limited_count":null,"average_tokens_per_request":null}' } } })
      local u = all(client(), { limit = 5 })[1]
      assert.equal("12345678901", u.id)
      assert.equal("12345678901", u.user_id)
      assert.is_nil(u.cost)
      assert.is_nil(u.rate_limited_count)
      assert.is_nil(u.average_tokens_per_request)
      assert.equal(2, u.active_for)
      assert.equal(3, u.requests)
      -- some server versions name the prompt sum total_prompt_token
      assert.equal(20, u.prompt_tokens)
      assert.equal(30, u.tokens)
      assert.equal(data.BASE + 60, u.first_seen)
      assert.equal(data.BASE + 86400 + 60.5, u.last_seen)
    end)
  end)

  describe("errors", function()
    it("raise from users() when the seed endpoint answers 200 with an `error`", function()
      emu.config{ helicone_error = "Error executing query: timeout" }
      local err = raised(function() all(client(), { user_ids = { "user-0000001" } }) end)
      assert.equal("api", err.kind)
      assert.equal(200, err.status)
      assert.equal("helicone", err.provider)
      assert.equal("Error executing query: timeout", err.message)
      assert.is_true(err.retryable)
    end)

    it("retry a 200-with-error database answer when max_retries allows", function()
      emu.faults("/v1/user/query", { { helicone_error = true } })
      local users = all(client{ max_retries = 1 }, { user_ids = { "user-0000001" } })
      assert.equal(1, #users)
      assert.equal(2, #sent())
      assert.equal(1, #slept)
    end)

    it("raise the metrics endpoint's database error (400 with `error`) with its message", function()
      emu.config{ helicone_error = "Error executing query: boom" }
      local err = raised(function() all(client()) end)
      assert.equal("http", err.kind)
      assert.equal(400, err.status)
      assert.equal("Error executing query: boom", err.message)
      -- and a 200 with `error` from it is an error too
      emu.reset()
      emu.faults("/v1/user/metrics/query", { { helicone_error = "late" } })
      err = raised(function() all(client()) end)
      assert.equal("api", err.kind)
      assert.equal("late", err.message)
    end)

    it("end a listing with an error, never in silence, when a later page fails", function()
      emu.faults("/v1/user/metrics/query", { { delay_ms = 0 }, { status = 503 } })
      local n = 0
      local err = raised(function()
        for _ in client():users{ limit = 100 } do n = n + 1 end
      end)
      assert.equal(100, n)
      assert.equal(503, err.status)
      assert.equal("Service Unavailable", err.message)
      assert.is_true(err.retryable)
    end)

    it("come back as nil, err from page(), never raised", function()
      emu.config{ helicone_error = "down" }
      local p, err = client():page{}
      assert.is_nil(p)
      assert.equal("down", err.message)
      p, err = client():page{ limit = 0 }
      assert.is_nil(p)
      assert.equal("invalid", err.kind)
    end)

    it("carry 401's message and trace for a wrong key", function()
      local c = userlist.helicone{ api_key = "sk-wrong", base_url = emu.http, max_retries = 0 }
      local p, err = c:page{}
      assert.is_nil(p)
      assert.equal(401, err.status)
      assert.equal("Invalid API key", err.message)
      assert.equal("isAuthenticated.error", err.code)
      assert.is_false(err.retryable)
    end)

    it("say a read-only key needs write permission (401, `error` null) on both endpoints", function()
      local ro = client{ api_key = emu.keys.helicone_read_only }
      local wrong = select(2, client{ api_key = "sk-wrong" }:page{})
      local errs = {
        raised(function() all(ro, { limit = 10 }) end), -- /v1/user/metrics/query
        raised(function() all(ro, { user_ids = { "user-0000001" } }) end), -- /v1/user/query
        select(2, ro:query()), select(2, ro:query{ user_ids = { "user-0000001" } }),
      }
      for _, err in ipairs(errs) do
        assert.equal("Helicone needs a key with write permission for these endpoints", err.message)
        assert.equal("isAuthenticated.error", err.code)
        assert.equal(401, err.status)
        assert.equal(wrong.kind, err.kind) -- as for any 401
        assert.is_false(err.retryable)
        assert.not_matches(emu.keys.helicone_read_only, tostring(err), 1, true)
      end
      assert.equal(5, #sent()) -- the wrong key's, then one each: nothing retried
    end)

    it("read the plain-text 400 'Invalid token.' and the 422 validation answer", function()
      emu.faults("/v1/user/", { { status = 400 }, { status = 422 } })
      local _, err = client():page{}
      assert.equal(400, err.status)
      assert.equal("Invalid token.", err.message)
      _, err = client():page{}
      assert.equal(422, err.status)
      assert.matches("^Validation Failed", err.message)
    end)

    it("wait out 429 for Retry-After seconds, then go on", function()
      emu.faults("/v1/user/metrics/query", { { status = 429, headers = { ["Retry-After"] = "3" } } })
      local users = all(client{ max_retries = 2 }, { limit = 100 })
      assert.equal(N, #users)
      assert.same({ 3 }, slept)
    end)

    it("give up after max_retries on a lasting 500", function()
      emu.faults("/v1/user/metrics/query", { { status = 500 }, { status = 500 }, { status = 500 } })
      local err = raised(function() all(client{ max_retries = 2 }) end)
      assert.equal(500, err.status)
      assert.equal(3, #sent())
      assert.equal(2, #slept)
    end)

    it("report an answer with no data.users array as a decode error", function()
      emu.faults("/v1/user/metrics/query", { { body = '{"data":null,"error":null}' } })
      local err = raised(function() all(client()) end)
      assert.equal("decode", err.kind)
      assert.matches("data%.users", err.message)
      emu.faults("/v1/user/query", { { invalid_json = true } })
      err = raised(function() all(client(), { user_ids = { "x" } }) end)
      assert.equal("decode", err.kind)
    end)
  end)

  describe("argument checks, before any request", function()
    local cases = {
      { { limit = 0 }, "limit" }, { { limit = 1001 }, "limit" }, { { limit = 1.5 }, "limit" },
      { { limit = "10" }, "limit" }, { { offset = -1 }, "offset" }, { { max_pages = 0 }, "max_pages" },
      { { sort = { bogus = "asc" } }, "sort" }, { { sort = { cost = "up" } }, "sort.cost" },
      { { sort = { cost = "asc", user_id = "asc" } }, "sort" }, { { sort = 42 }, "sort" },
      { { since = "yesterday" }, "since" }, { { ["until"] = {} }, "until" },
      { { since = 2000, ["until"] = 1000 }, "until" }, { { since = 0 / 0 }, "since" },
      { { user_ids = 42 }, "user_ids" }, { { user_ids = { "a", 2 } }, "user_ids" },
      { { user_ids = {} }, "user_ids" }, { { user_ids = { a = "b" } }, "user_ids" },
      { { user_ids = { "a" }, limit = 10 }, "limit" }, { { user_ids = { "a" }, sort = "cost" }, "sort" },
      { { user_ids = { "a" }, filter = "all" }, "filter" },
      { { user_ids = { "a" }, time_zone_difference_minutes = 60 }, "time_zone_difference_minutes" },
      { { user_ids = { "a", "b" }, offset = 2 }, "offset" },
      { { filter = 42 }, "filter" }, { { filter = { 1, 2 } }, "filter" },
      { { time_zone_difference_minutes = 2000 }, "time_zone_difference_minutes" },
      { { dedupe = "yes" }, "dedupe" }, { { userIds = { "a" } }, "userIds" },
    }
    local function show(v)
      if type(v) ~= "table" then return type(v) == "string" and ("%q"):format(v) or tostring(v) end
      local keys, out = {}, {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      for _, k in ipairs(keys) do out[#out + 1] = tostring(k) .. " = " .. show(v[k]) end
      return "{ " .. table.concat(out, ", ") .. " }"
    end
    for _, case in ipairs(cases) do
      local q, field = case[1], case[2]
      it("name the field at fault: " .. field .. " in " .. show(q), function()
        local c, before = client(), count_requests()
        local err = raised(function() c:users(q) end)
        assert.equal("invalid", err.kind)
        assert.equal(field, err.field)
        assert.equal("helicone", err.provider)
        err = raised(function() c:pages(q) end)
        assert.equal(field, err.field)
        local p, perr = c:page(q)
        assert.is_nil(p)
        assert.equal(field, perr.field)
        assert.equal(before, count_requests())
      end)
    end

    it("reject a query that is not a table", function()
      local err = raised(function() client():users("all") end)
      assert.equal("invalid", err.kind)
      assert.equal("query", err.field)
    end)
  end)

  describe("iterators", function()
    it("pages() yields each page with its offset, limit and the server's count", function()
      local got = {}
      for p in client():pages{ limit = 100 } do
        got[#got + 1] = { p.number, p.offset, #p.users, p.count, p.status }
      end
      assert.same({ { 1, 0, 100, N, 200 }, { 2, 100, 100, N, 200 }, { 3, 200, 50, N, 200 } }, got)
    end)

    it("page() gives one page and the offset of the next", function()
      local p = assert(client():page{ limit = 100, offset = 200 })
      assert.equal(50, #p.users)
      assert.is_nil(p.next)
      p = assert(client():page{ limit = 100 })
      assert.equal(100, p.next)
    end)

    it("hands a closing value to the generic for", function()
      local f, _, _, closing = client():users{ limit = 10 }
      assert.equal("function", type(f))
      assert.equal("function", type(getmetatable(closing).__close))
    end)

    if IS_54 then
      it("closes the listing when a Lua 5.4 generic for breaks", function()
        local c = client()
        local f, s, c0, closing = c:users{ limit = 10 }
        -- (load: the 4-value generic for is Lua 5.4 syntax)
        local n = assert(load([[
          local f, s, c0, closing = ...
          local n = 0
          for _ in f, s, c0, closing do n = n + 1 if n == 3 then break end end
          return n
        ]]))(f, s, c0, closing)
        assert.equal(3, n)
        -- the walk is closed: what the first page still held comes out,
        -- then the end, with no further page asked for (250 users exist)
        local before, rest = count_requests(), 0
        while f() do rest = rest + 1 end
        assert.equal(7, rest)
        assert.equal(before, count_requests())
        assert.equal(1, #sent())
      end)
    end
  end)

  describe("the emulator keeps the server's quirks", function()
    local function post(path, body)
      local s = core.session()
      local res, err = s:request{ method = "POST", url = emu.http .. path, api_key = KEY, json = body }
      s:close()
      return res, err
    end

    it("answers a read-only key 401 {\"error\":null,...} on both endpoints (POSTs need write)", function()
      for _, path in ipairs{ "/v1/user/query", "/v1/user/metrics/query" } do
        local s = core.session()
        local _, err = s:request{ method = "POST", url = emu.http .. path,
          api_key = emu.keys.helicone_read_only, json = { filter = "all", offset = 0, limit = 1 } }
        s:close()
        assert.equal(401, err.status)
        assert.same({ error = core.null, trace = "isAuthenticated.error" }, err.body)
      end
    end)

    it("plays older servers by X-Emu-Helicone-Version: no `sort` before 2025-03-29, "
      .. "a user_id sort failing with 400 until 2025-06-17", function()
      local function ask(version, sort)
        local s = core.session()
        local res, err = s:request{ method = "POST", url = emu.http .. "/v1/user/metrics/query",
          api_key = KEY, headers = { ["X-Emu-Helicone-Version"] = version },
          json = { filter = "all", offset = 0, limit = 2, sort = sort } }
        s:close()
        return res, err
      end
      local _, err = ask("2025-03-28", { cost = "desc" })
      assert.equal(422, err.status)
      assert.equal('"sort" is an excess property and therefore is not allowed',
        err.body.details["requestBody.sort"].message)
      assert.equal(2, #assert(ask("2025-03-28")).body.data.users)
      _, err = ask("2025-06-16", { user_id = "asc" })
      assert.equal(400, err.status)
      assert.matches("^Error executing query", err.body.error)
      assert.equal(core.null, err.body.data)
      assert.equal(2, #assert(ask("2025-06-16", { cost = "desc" })).body.data.users)
      assert.equal(data.id(1), assert(ask("2025-06-17", { user_id = "asc" })).body.data.users[1].id)
      _, err = ask("last week")
      assert.equal(400, err.status)
    end)

    it("answers the seed endpoint with at most 100 rows and nothing saying more exist", function()
      local res = assert(post("/v1/user/query", {}))
      assert.equal(100, #res.body.data)
      assert.equal(core.null, res.body.error)
    end)

    it("reads the seed endpoint's *UnixSeconds as milliseconds", function()
      local tf = { startTimeUnixSeconds = data.BASE, endTimeUnixSeconds = data.BASE + 86400 * 365 }
      assert.equal(0, #assert(post("/v1/user/query", { timeFilter = tf })).body.data)
      tf = { startTimeUnixSeconds = tf.startTimeUnixSeconds * 1000,
             endTimeUnixSeconds = tf.endTimeUnixSeconds * 1000 }
      assert.equal(100, #assert(post("/v1/user/query", { timeFilter = tf })).body.data)
    end)

    it("rejects unknown body fields with 422 and limit > 1000 with 400", function()
      local _, err = post("/v1/user/query", { user_ids = { "a" } })
      assert.equal(422, err.status)
      assert.equal("Validation Failed", err.body.message)
      _, err = post("/v1/user/metrics/query", { filter = "all", offset = 0, limit = 1001 })
      assert.equal(400, err.status)
      assert.equal("Limit cannot be greater than 1000", err.body.error)
    end)

    it("sorts metrics by last_active desc without a sort, and by the first key of `sort`", function()
      local res = assert(post("/v1/user/metrics/query", { filter = "all", offset = 0, limit = N }))
      local users = res.body.data.users
      for i = 2, #users do assert.is_true(users[i - 1].last_active >= users[i].last_active) end
      local s = core.session()
      res = assert(s:request{ method = "POST", url = emu.http .. "/v1/user/metrics/query", api_key = KEY,
        body = '{"filter":"all","offset":0,"limit":3,"sort":{"user_id":"desc","cost":"asc"}}',
        headers = { ["Content-Type"] = "application/json" } })
      s:close()
      assert.equal(data.id(N), res.body.data.users[1].user_id)
    end)
  end)
end)
