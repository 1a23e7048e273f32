-- Pages fetched ahead (the `concurrency` option): page-number and offset
-- listings keep up to `concurrency` requests in flight on sessions that
-- share one libcurl multi handle; cursor listings ask for the next page as
-- soon as its cursor is known: read from the raw body before it is decoded,
-- a guess that is dropped when the decoded page says otherwise. Users still come complete and in order, a
-- failed prefetch is retried like any request, and the end costs at most
-- `concurrency` requests past it (the next one goes out as a page arrives,
-- before it is known to be the last).
local userlist = require "userlist"
local emu = require "support.emu"

local data = dofile("spec/emulator/lua/emu/data.lua")
local PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


-- Each listing: the client, its query for pages of `per` users, the key of
-- a yielded row and the expected keys for n users.
local LISTINGS = {
  { name = "helicone", path = "/v1/user/metrics/query",
    new = function(o) return userlist.helicone(o) end,
    query = function(per) return { limit = per } end },
  { name = "openlayer", path = "/v1/inference-pipelines/",
    new = function(o)
      o.base_url = o.base_url .. "/v1"
      return userlist.openlayer(o)
    end,
    query = function(per) return { pipeline_id = PIPE, per_page = per } end },
  { name = "arthur", path = "/api/v1/traces/users",
    new = function(o) return userlist.arthur(o) end,
    query = function(per) return { task_ids = { "task-1" }, page_size = per, sort = "asc" } end,
    key = function(u) return u.id .. "/" .. u.task_id end,
    expect = emu.arthur_task1_rows },
  { name = "usertour", path = "/v1/users", cursor = true,
    new = function(o) return userlist.usertour(o) end,
    query = function(per) return { limit = per } end },
}
local KEYS = { helicone = emu.keys.helicone, openlayer = emu.keys.openlayer, arthur = emu.keys.arthur,
  usertour = emu.keys.usertour }

local function expected(L, n)
  if L.expect then return L.expect(n) end
  local ids = {}
  for i = 1, n do ids[i] = data.id(i) end
  return ids
end

local function client(L, n, opts)
  local o = { api_key = KEYS[L.name], base_url = emu.http, concurrency = 4,
    headers = { ["X-Emu-Users"] = tostring(n) } }
  for k, v in pairs(opts or {}) do o[k] = v end
  return L.new(o)
end

local function list(L, c, per)
  local keys = {}
  for u in c:users(L.query(per)) do keys[#keys + 1] = (L.key or function(x) return x.id end)(u) end
  return keys
end

local until_stats = emu.until_stats

describe("pages fetched ahead", function()
  before_each(function() emu.reset() end)
  after_each(function() emu.reset() end)

  -- each case driven by the caller (the default), and by a transfer thread
  for _, threaded in ipairs{ false, true } do
    local function on(L, n, opts)
      opts = opts or {}
      opts.transfer_thread = threaded
      return client(L, n, opts)
    end
    for _, L in ipairs(LISTINGS) do
      describe(L.name .. (threaded and ", on a transfer thread" or ""), function()
        it("lists every user once and in order, pages of 10 answered after 50 ms each", function()
          emu.config{ delay_ms = 50 }
          local n = 95
          local want = expected(L, n)
          assert.same(want, list(L, on(L, n), 10))
          local st = emu.stats()
          local pages = math.floor(#want / 10) + 1
          if L.cursor then
            -- one ahead at a time, as each cursor comes from the page before
            assert.equal(1, st.max_in_flight)
            assert.equal(pages, st.requests)
          else
            assert.equal(4, st.max_in_flight)
            assert.is_true(st.requests >= pages and st.requests <= pages + 4,
              ("%d requests for %d pages"):format(st.requests, pages))
          end
        end)

        it("has asked for what comes next while the caller still reads the first page", function()
          local it_ = on(L, 95):pages(L.query(10))
          local first = it_()
          assert.equal(1, first.number)
          -- page 1 read, and the next 4 in flight (cursor: the next one);
          -- Arthur's count, known from page 1, stops it at the last page
          local pages = math.ceil(#expected(L, 95) / 10)
          local want = L.cursor and 2 or math.min(5, pages)
          local st = until_stats(function(s) return s.requests >= want end)
          assert.equal(want, st.requests)
        end)

        it("retries a prefetched page that fails, and still lists every user in order", function()
          local n = 95
          local waits = {}
          emu.faults(L.path, { { delay_ms = 0 }, { status = 503 }, { status = 502 } })
          local c = on(L, n, { sleep = function(s) waits[#waits + 1] = s end })
          assert.same(expected(L, n), list(L, c, 10))
          assert.equal(2, #waits) -- two failed tries, each retried after a backoff wait
        end)

        it("sends at most concurrency requests past the end of a short listing", function()
          local n = 15
          local want = expected(L, n)
          assert.same(want, list(L, on(L, n), 10))
          local pages = math.floor(#want / 10) + 1
          local st = emu.stats()
          assert.is_true(st.requests <= pages + 4, ("%d requests for %d pages"):format(st.requests, pages))
          assert.equal(0, until_stats(function(s) return s.in_flight == 0 end).in_flight)
        end)

        it("fails with one structured error when a page fails on every try, after the right users", function()
          emu.faults(L.path, { { delay_ms = 0 }, { status = 500 }, { status = 500 }, { status = 500 },
            { status = 500 }, { status = 500 }, { status = 500 } })
          local c = on(L, 95, { sleep = function() end, concurrency = 1 })
          local keys = {}
          local ok, err = pcall(function()
            for u in c:users(L.query(10)) do keys[#keys + 1] = (L.key or function(x) return x.id end)(u) end
          end)
          assert.is_false(ok)
          assert.is_true(userlist.is_error(err))
          assert.equal(500, err.status)
          assert.equal(10, #keys)
        end)
      end)
    end
  end

  describe("openlayer, a page-number listing", function()
    local O = LISTINGS[2]

    it("asks for the next page as a page arrives, before decoding it", function()
      -- pages 1 and 2 whole, then broken JSON: page 3 fails to decode, and
      -- page 5 was asked for as page 3 arrived (at concurrency 2: pages 3
      -- and 4 once 1 and 2 came); asked after decoding, it never would be
      emu.faults(O.path, { { delay_ms = 0 }, { delay_ms = 0 }, { invalid_json = true },
        { invalid_json = true }, { invalid_json = true } })
      local ok, err = pcall(list, O, client(O, 95, { concurrency = 2 }), 10)
      assert.is_false(ok)
      assert.equal("decode", err.kind)
      local st = until_stats(function(s) return s.requests >= 5 and s.in_flight == 0 end)
      assert.equal(5, st.requests)
      local pages = {}
      for _, r in ipairs(emu.requests()) do pages[#pages + 1] = tonumber(r.args:match("page=(%d+)")) end
      table.sort(pages)
      assert.same({ 1, 2, 3, 4, 5 }, pages)
    end)
  end)

  describe("usertour, a cursor listing", function()
    local U = LISTINGS[4]
    -- page 1 as the server writes it, `next` after `results`, but broken
    -- before its end: only the raw bytes can tell where page 2 is
    local BROKEN = '{"results": [{"id": "user-0000001", oops], '
      .. '"next": "/v1/users?limit=10&cursor=user-0000010", "previous": null}'

    it("asks for the next page from the raw body as it arrives, before decoding it", function()
      emu.faults(U.path, { { body = BROKEN } })
      local ok, err = pcall(list, U, client(U, 95), 10)
      assert.is_false(ok)
      assert.equal("decode", err.kind)
      -- the decode error came after page 2 was asked for
      local st = until_stats(function(s) return s.requests >= 2 and s.in_flight == 0 end)
      assert.equal(2, st.requests)
      assert.equal("limit=10&cursor=user-0000010", emu.requests()[2].args)
    end)

    it("asks for nothing ahead with concurrency 1", function()
      emu.faults(U.path, { { body = BROKEN } })
      local ok, err = pcall(list, U, client(U, 95, { concurrency = 1 }), 10)
      assert.is_false(ok)
      assert.equal("decode", err.kind)
      assert.equal(1, emu.stats().requests)
    end)

    it("drops a wrong guess (a row's own \"next\" last, the real one first) and lists every user", function()
      emu.faults(U.path, { { body = '{"next": "/v1/users?limit=10&cursor=user-0000010", '
        .. '"previous": null, "results": [{"id": "user-0000001", "object": "user", '
        .. '"attributes": {"next": "/v1/users?limit=10&cursor=user-0000007"}, '
        .. '"createdAt": "2025-01-01T00:01:00.000Z", "companies": null, "memberships": null}]}' } })
      local want = { data.id(1) }
      for i = 11, 95 do want[#want + 1] = data.id(i) end
      assert.same(want, list(U, client(U, 95), 10))
      local st = until_stats(function(s) return s.in_flight == 0 end)
      local wrong = 0
      for _, r in ipairs(emu.requests()) do
        if r.args:find("cursor=user-0000007", 1, true) then wrong = wrong + 1 end
      end
      -- page 1, at most the one wrong guess, then pages 2..10 from the right cursors
      assert.is_true(wrong <= 1, ("%d requests for the wrong guess"):format(wrong))
      assert.is_true(st.requests >= 10 and st.requests <= 11, ("%d requests"):format(st.requests))
    end)
  end)

  it("refuses a concurrency that is not a whole number from 1 to 64", function()
    for _, bad in ipairs{ 0, 65, 1.5, -1 } do
      local ok, msg = pcall(userlist.usertour, { api_key = "ak_x", concurrency = bad })
      assert.is_false(ok)
      assert.matches("'concurrency'", msg)
    end
  end)
end)
