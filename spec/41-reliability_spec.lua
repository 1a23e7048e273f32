-- Retries, waits, rate limits, the event hook, the deadline and the loop
-- guards of the one request path and the one pager, against the emulator.
-- Waits are recorded by an injected sleep, never slept.
local userlist = require "userlist"
local emu = require "support.emu"

local USERS_PATH = "/v1/users" -- Usertour v1: cursor paging
local PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
local OL_PATH = "/v1/inference-pipelines/" .. PIPE .. "/users"

-- A Usertour v1 client over n users whose waits and events are recorded.
local function client(n, opts)
  opts = opts or {}
  local rec = { waits = {}, events = {} }
  opts.api_key = emu.keys.usertour
  opts.base_url = emu.http
  opts.headers = { ["X-Emu-Users"] = tostring(n or 30) }
  opts.sleep = opts.sleep or function(s) rec.waits[#rec.waits + 1] = s end
  opts.on_event = opts.on_event or function(ev) rec.events[#rec.events + 1] = ev end
  -- one request at a time, so each can be pinned down (spec/14 fetches ahead)
  if opts.concurrency == nil then opts.concurrency = 1 end
  return userlist.usertour(opts), rec
end

local function list(c, q)
  local ids = {}
  for u in c:users(q or { limit = 10 }) do ids[#ids + 1] = u.id end
  return ids
end

local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "no error was raised")
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  return err
end

local function count() return emu.stats().requests end

describe("retries", function()
  before_each(function() emu.reset() end)

  it("retry a 503 twice by default, then recover with the full list", function()
    emu.faults(USERS_PATH, { { status = 503 }, { status = 503 } })
    local c, rec = client(30)
    assert.equal(30, #list(c))
    assert.equal(3 + 2, count()) -- three pages of ten, plus two retries
    assert.equal(2, #rec.waits)
  end)

  it("give up after max_retries with one clear error", function()
    emu.faults(USERS_PATH, { { status = 502 }, { status = 502 }, { status = 502 } })
    local c = client(30)
    local err = raised(function() list(c) end)
    assert.equal("http", err.kind)
    assert.equal(502, err.status)
    assert.equal(3, count())
  end)

  it("make exactly one request with max_retries = 0", function()
    emu.faults(USERS_PATH, { { status = 500 } })
    local c = client(30, { max_retries = 0 })
    assert.equal(500, raised(function() list(c) end).status)
    assert.equal(1, count())
  end)

  for _, status in ipairs{ 408, 409, 429, 500, 504 } do
    it("retry " .. status, function()
      emu.faults(USERS_PATH, { { status = status } })
      local c = client(10)
      assert.equal(10, #list(c))
      assert.equal(2, count()) -- the failed try and its retry (ten users: one page)
    end)
  end

  for _, status in ipairs{ 400, 401, 403, 404, 422 } do
    it("never retry " .. status .. ", even when x-should-retry says true", function()
      emu.faults(USERS_PATH, { { status = status, headers = { ["x-should-retry"] = "true" } } })
      local c = client(10)
      assert.equal(status, raised(function() list(c) end).status)
      assert.equal(1, count())
    end)
  end

  it("do not retry a 503 the server marks x-should-retry: false", function()
    emu.faults(USERS_PATH, { { status = 503, headers = { ["x-should-retry"] = "false" } } })
    assert.equal(503, raised(function() list((client(10))) end).status)
    assert.equal(1, count())
  end)

  it("retry network errors (a reset connection)", function()
    emu.faults(USERS_PATH, { { reset = true } })
    assert.equal(10, #list((client(10))))
  end)
end)

describe("waits", function()
  before_each(function() emu.reset() end)

  it("honour Retry-After seconds", function()
    emu.faults(USERS_PATH, { { status = 429, headers = { ["Retry-After"] = "7" } } })
    local c, rec = client(10)
    list(c)
    assert.same({ 7 }, rec.waits)
  end)

  it("prefer retry-after-ms to Retry-After", function()
    emu.faults(USERS_PATH,
      { { status = 503, headers = { ["retry-after-ms"] = "1500", ["Retry-After"] = "9" } } })
    local c, rec = client(10)
    list(c)
    assert.same({ 1.5 }, rec.waits)
  end)

  it("read an HTTP-date Retry-After as seconds from now", function()
    local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 20)
    emu.faults(USERS_PATH, { { status = 503, headers = { ["Retry-After"] = date } } })
    local c, rec = client(10)
    list(c)
    assert.is_true(rec.waits[1] > 15 and rec.waits[1] <= 20, tostring(rec.waits[1]))
  end)

  it("cap a server's wait at max_retry_wait (default 60 s)", function()
    emu.faults(USERS_PATH, { { status = 429, headers = { ["Retry-After"] = "3600" } },
                             { status = 429, headers = { ["Retry-After"] = "3600" } } })
    local c, rec = client(10, { max_retries = 1 })
    pcall(list, c)
    assert.same({ 60 }, rec.waits)
    emu.reset()
    emu.faults(USERS_PATH, { { status = 429, headers = { ["Retry-After"] = "3600" } } })
    c, rec = client(10, { max_retry_wait = 5 })
    list(c)
    assert.same({ 5 }, rec.waits)
  end)

  it("back off 0.5 s doubling, with at most 25% jitter, when the server gives no wait", function()
    emu.faults(USERS_PATH, { { status = 500 }, { status = 500 }, { status = 500 }, { status = 500 } })
    local c, rec = client(10, { max_retries = 4 })
    list(c)
    assert.equal(4, #rec.waits)
    for i, w in ipairs(rec.waits) do
      local base = 0.5 * 2 ^ (i - 1)
      assert.is_true(w <= base and w >= 0.75 * base, ("wait %d: %g"):format(i, w))
    end
  end)

  it("pause before the next request when the rate-limit budget is spent, instead of a 429", function()
    emu.faults(USERS_PATH, { { rate_limit_remaining = 0, rate_limit_reset = 4 } })
    local c, rec = client(30)
    assert.equal(30, #list(c))
    assert.equal(1, #rec.waits)
    assert.near(4, rec.waits[1], 0.5) -- the reset, less the time the page took
    assert.equal(3, count()) -- three pages, no request spent on a 429
    local reasons = {}
    for _, ev in ipairs(rec.events) do
      if ev.type == "wait" then reasons[#reasons + 1] = ev.reason end
    end
    assert.same({ "rate_limit" }, reasons)
  end)

  it("do not pause while budget remains", function()
    emu.faults(USERS_PATH, { { rate_limit_remaining = 5, rate_limit_reset = 4 } })
    local c, rec = client(30)
    list(c)
    assert.same({}, rec.waits)
  end)
end)

describe("the event hook", function()
  before_each(function() emu.reset() end)

  it("sees every request, response, retry and wait, with no key in any of them", function()
    emu.faults(USERS_PATH, { { status = 503, headers = { ["Retry-After"] = "2" } } })
    local c, rec = client(10)
    list(c)
    local kinds = {}
    for _, ev in ipairs(rec.events) do
      kinds[#kinds + 1] = ev.type .. (ev.status and (":" .. ev.status) or "")
      assert.equal("usertour", ev.provider)
      assert.equal("GET", ev.method)
      assert.matches("^http://127%.0%.0%.1:%d+/v1/users", ev.url)
      for _, v in pairs(ev) do assert.is_nil(tostring(v):find(emu.keys.usertour, 1, true)) end
    end
    assert.same({ "request", "response:503", "retry:503", "wait", "request", "response:200" }, kinds)
    assert.equal(2, rec.events[3].wait)
    assert.equal(1, rec.events[3].attempt)
    assert.equal("retry", rec.events[4].reason)
    assert.equal(2, rec.events[5].attempt)
  end)
end)

describe("the deadline", function()
  before_each(function() emu.reset() end)

  it("bounds a whole listing: slow pages end in one timeout error", function()
    local slow = {}
    for i = 1, 6 do slow[i] = { delay_ms = 300 } end
    emu.faults(USERS_PATH, slow)
    local c = client(60, { deadline = 1 })
    local got = {}
    local err = raised(function() for u in c:users{ limit = 10 } do got[#got + 1] = u.id end end)
    assert.equal("timeout", err.kind)
    assert.is_true(#got < 60)
    assert.matches("deadline of 1s", tostring(err))
  end)

  it("fails at once instead of waiting past it", function()
    emu.faults(USERS_PATH, { { status = 429, headers = { ["Retry-After"] = "30" } } })
    local c, rec = client(10, { deadline = 5 })
    local err = raised(function() list(c) end)
    assert.equal("timeout", err.kind)
    assert.equal(429, err.cause.status)
    assert.same({}, rec.waits)
  end)

  it("is refused when negative", function()
    assert.has_error(function() client(10, { deadline = -1 }) end)
  end)
end)

describe("pagination safety", function()
  before_each(function() emu.reset() end)

  local function page_body(first, next_cursor)
    local results = {}
    for i = first, first + 1 do
      results[#results + 1] = ('{"id":"u%d","object":"user","attributes":{},'
        .. '"createdAt":"2025-01-01T00:00:00.000Z"}'):format(i)
    end
    return ('{"results":[%s],"next":%s,"previous":null}'):format(table.concat(results, ","),
      next_cursor and ('"/v1/users?cursor=%s&limit=2"'):format(next_cursor) or "null")
  end

  it("stops with a loop error when a cursor comes back (A, B, A)", function()
    emu.faults(USERS_PATH, { { body = page_body(1, "a") }, { body = page_body(3, "b") },
                             { body = page_body(5, "a") } })
    local c = client(10)
    local got = {}
    local err = raised(function() for u in c:users{ limit = 2 } do got[#got + 1] = u.id end end)
    assert.equal("loop", err.kind)
    assert.matches("already listed", err.message)
    assert.same({ "u1", "u2", "u3", "u4" }, got) -- the third page is not yielded
    assert.equal(3, count())
  end)

  it("stops with a loop error on a longer cycle too (a, b, c, a, b, c), in flat memory", function()
    local bodies = {}
    for i, cur in ipairs{ "a", "b", "c", "a", "b", "c", "a" } do
      bodies[i] = { body = page_body(2 * i - 1, cur) }
    end
    emu.faults(USERS_PATH, bodies)
    local c = client(10)
    local err = raised(function() for _ in c:users{ limit = 2 } do end end)
    assert.equal("loop", err.kind)
    assert.is_true(count() <= 7, tostring(count()))
  end)

  it("stops with a loop error when a page repeats the users of the page before", function()
    emu.faults(OL_PATH, { { body = '{"items":[{"id":"a"},{"id":"b"}]}' },
                          { body = '{"items":[{"id":"a"},{"id":"b"}]}' } })
    local ol = userlist.openlayer{ api_key = emu.keys.openlayer, base_url = emu.http .. "/v1",
      sleep = function() end }
    local err = raised(function() for _ in ol:users{ pipeline_id = PIPE, per_page = 2 } do end end)
    assert.equal("loop", err.kind)
    assert.matches("page 2 returned exactly the users of page 1", err.message)
  end)

  it("stops after max_pages pages when asked to", function()
    local c = client(100)
    assert.equal(30, #list(c, { limit = 10, max_pages = 3 }))
    assert.equal(3, count())
  end)
end)
