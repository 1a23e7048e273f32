-- The pager over a fake transport: no network, no emulator. What it shows
-- is the pager's own contract: pages in order whatever order requests
-- complete in, the window of requests fetched ahead (concurrency, the rate
-- limit), max_pages, dedupe, the loop guard, and that break, an error or the
-- end releases every session. The transport's interface is what
-- userlist.transport documents; its behaviour over HTTP is spec/1x's.
local errors = require "userlist.errors"
local pager = require "userlist.pager"

-- A fake session: counts cancels and closes.
local function new_session(log)
  local s = { open = true }
  function s.cancel() log.cancels = log.cancels + 1 end
  function s.close()
    assert.is_true(s.open, "a session closed twice")
    s.open = false
    log.closed = log.closed + 1
  end
  log.sessions = log.sessions + 1
  return s
end

-- A fake transport over `pages` (a list of lists of user ids, the server's
-- pages by number from 1); `fail[n]` makes page n fail with that error.
local function fake(pages, o)
  o = o or {}
  local log = { sessions = 0, closed = 0, cancels = 0, asked = {}, in_flight = 0, most = 0 }
  local t = { concurrency = o.concurrency or 4, strict = false, log = log }
  local function answer(req)
    log.asked[#log.asked + 1] = req.page
    if o.fail and o.fail[req.page] then return nil, o.fail[req.page] end
    return { status = 200, bytes = 100, body = { users = pages[req.page] or {} } }
  end
  function t.session() return new_session(log) end
  function t.acquire() return new_session(log) end
  function t.release(_, s) s.close() end
  function t.deadline_at() return nil end
  function t.url(_, req) return "http://fake" .. req.path end
  function t.window(_, n) return math.min(n, o.remaining or n) end
  function t.paused() return false end
  function t.emit() end
  function t.scrub(_, v) return v end
  function t.begin(_, req)
    log.in_flight = log.in_flight + 1
    if log.in_flight > log.most then log.most = log.in_flight end
    return { req = req }
  end
  function t.collect(_, req, _, _, begun)
    if begun then log.in_flight = log.in_flight - 1 end
    return answer(req)
  end
  return t
end

-- A page-number listing: a full page (of `size`) means there may be more.
local function listing(size)
  return {
    prepare = function(_, q)
      return { max_pages = q.max_pages, dedupe = q.dedupe, size = size or 2 }
    end,
    first = function() return 1 end,
    request = function(_, _, n) return { method = "GET", path = "/users", page = n } end,
    parse = function(_, body, p, n)
      local users = {}
      for i, id in ipairs(body.users) do users[i] = { id = id } end
      return users, (#users == p.size) and (n + 1) or nil, { page = n }
    end,
    ahead = function(_, n) return n + 1 end,
    key = function(u) return u.id end,
  }
end

local function client(t, l) return { transport = t, listing = l, provider = "fake" } end

local function ids(c, q)
  local out = {}
  for u in pager.users(c, c.listing, q) do out[#out + 1] = u.id end
  return table.concat(out, " ")
end

describe("the pager over a fake transport", function()
  it("gives every user of every page in order and releases every session at the end", function()
    local t = fake{ { "a", "b" }, { "c", "d" }, { "e" } }
    assert.equal("a b c d e", ids(client(t, listing())))
    assert.equal(t.log.sessions, t.log.closed)
  end)

  it("fetches ahead at most `concurrency` pages, lowered by the rate limit's window", function()
    local pages = {}
    for n = 1, 20 do pages[n] = { "u" .. (2 * n - 1), "u" .. (2 * n) } end
    local t = fake(pages, { concurrency = 4 })
    ids(client(t, listing()))
    assert.equal(4, t.log.most)
    t = fake(pages, { concurrency = 4, remaining = 2 })
    ids(client(t, listing()))
    assert.equal(2, t.log.most)
  end)

  it("asks for nothing ahead at concurrency 1: one request at a time", function()
    local t = fake({ { "a", "b" }, { "c" } }, { concurrency = 1 })
    assert.equal("a b c", ids(client(t, listing())))
    assert.equal(1, t.log.most)
    assert.same({ 1, 2 }, t.log.asked)
  end)

  it("stops at max_pages, and what was fetched past it is cancelled and closed", function()
    local t = fake{ { "a", "b" }, { "c", "d" }, { "e", "f" }, { "g" } }
    assert.equal("a b c d", ids(client(t, listing()), { max_pages = 2 }))
    for _, n in ipairs(t.log.asked) do assert.is_true(n <= 2, "asked for page " .. n) end
    assert.equal(t.log.sessions, t.log.closed)
  end)

  it("drops a user seen before with dedupe = true, and only then", function()
    local t = fake{ { "a", "b" }, { "b", "c" }, { "d" } }
    assert.equal("a b c d", ids(client(t, listing()), { dedupe = true }))
    t = fake{ { "a", "b" }, { "b", "c" }, { "d" } }
    assert.equal("a b b c d", ids(client(t, listing())))
  end)

  it("raises a loop error when a page repeats the page before, and releases the sessions", function()
    local t = fake{ { "a", "b" }, { "a", "b" }, { "a", "b" } }
    local ok, err = pcall(ids, client(t, listing()))
    assert.is_false(ok)
    assert.is_true(errors.is(err), tostring(err))
    assert.equal("loop", err.kind)
    assert.matches("page 2 returned exactly the users of page 1", err.message)
    assert.equal(t.log.sessions, t.log.closed)
  end)

  it("raises the transport's error for a failed page after the users before it", function()
    local boom = errors.new{ kind = "http", status = 503, message = "unavailable" }
    local t = fake({ { "a", "b" }, { "c", "d" } }, { fail = { [2] = boom } })
    local seen = {}
    local ok, err = pcall(function()
      for u in pager.users(client(t, listing()), listing()) do seen[#seen + 1] = u.id end
    end)
    assert.is_false(ok)
    assert.equal(boom, err)
    assert.same({ "a", "b" }, seen)
    assert.equal(t.log.sessions, t.log.closed)
  end)

  it("page() gives one page with the next position, or nil, err without raising", function()
    local t = fake{ { "a", "b" }, { "c" } }
    local page = assert(pager.page(client(t, listing()), listing(), {}))
    assert.equal(2, #page.users)
    assert.equal(2, page.next)
    local boom = errors.new{ kind = "network", message = "reset" }
    t = fake({ { "a" } }, { fail = { [1] = boom } })
    local none, err = pager.page(client(t, listing()), listing(), {})
    assert.is_nil(none)
    assert.equal(boom, err)
  end)

  it("turns a bad query into an invalid error raised from the listing's prepare", function()
    local l = listing()
    l.prepare = function() errors.raise_invalid("limit", "must be an integer, got string") end
    local ok, err = pcall(pager.users, client(fake{}, l), l, { limit = "x" })
    assert.is_false(ok)
    assert.equal("invalid", err.kind)
    assert.equal("fake", err.provider)
    assert.equal("'limit' must be an integer, got string", err.message)
  end)
end)
