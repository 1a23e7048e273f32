-- Resume tokens (userlist.resume) over the emulator, for every provider: a
-- listing cut at a page by a fault that outlasts the retries continues from
-- err.resume, or from the token on_checkpoint saved (in this process or
-- another), and gives the users of an uncut listing, none twice; tokens
-- are refused when damaged, truncated, or of another listing.
local userlist = require "userlist"
local core = require "userlist.core"
local emu = require "support.emu"

local data = dofile("spec/emulator/lua/emu/data.lua")
local PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
local V2 = "/v2/projects/proj-1/environments/env-1/users"
local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA is unset: run the specs with make test")

local N, PER = 95, 10 -- ten pages, the last one short
local RETRIES = 2

-- Each listing: its constructor's options, its query for pages of `per`,
-- the path its faults go to, a row's key and the keys of an uncut listing.
local LISTINGS = {
  { name = "helicone", path = "/v1/user/metrics/query", key_name = "helicone",
    query = function(per) return { limit = per } end, child = "{ limit = per }" },
  { name = "helicone", label = "helicone (user_ids)", path = "/v1/user/query",
    key_name = "helicone", per = 100, n = 950, -- the seed endpoint takes 100 ids a request
    query = function()
      local ids = {}
      for i = 1, 950 do ids[i] = data.id(i) end
      return { user_ids = ids }
    end,
    other = { since = 1 },
    child = "{ user_ids = (function() local t = {} for i = 1, n do t[i] = ('user-%07d'):format(i) end "
      .. "return t end)() }" },
  { name = "openlayer", path = "/v1/inference-pipelines/", key_name = "openlayer", base = "/v1",
    query = function(per) return { pipeline_id = PIPE, per_page = per } end,
    child = ("{ pipeline_id = %q, per_page = per }"):format(PIPE) },
  { name = "arthur", path = "/api/v1/traces/users", key_name = "arthur",
    query = function(per) return { task_ids = { "task-1" }, page_size = per, sort = "asc" } end,
    key = function(u) return u.id .. "/" .. u.task_id end,
    expect = emu.arthur_task1_rows,
    child = "{ task_ids = { 'task-1' }, page_size = per, sort = 'asc' }",
    child_key = "u.id .. '/' .. u.task_id" },
  { name = "usertour", label = "usertour (v1)", path = "/v1/users", key_name = "usertour",
    query = function(per) return { limit = per } end, child = "{ limit = per }" },
  { name = "usertour", label = "usertour (v2)", path = V2, key_name = "usertour_v2",
    options = { project_id = "proj-1", environment_id = "env-1" },
    query = function(per) return { limit = per } end, child = "{ limit = per }" },
}

local function key_of(L, u) return (L.key or function(x) return x.id end)(u) end

local function expected(L)
  local n = L.n or N
  if L.expect then return L.expect(n) end
  local ids = {}
  for i = 1, n do ids[i] = data.id(i) end
  return ids
end

local function client(L, opts)
  local o = { api_key = emu.keys[L.key_name], base_url = emu.http .. (L.base or ""),
    headers = { ["X-Emu-Users"] = tostring(L.n or N) }, max_retries = RETRIES, sleep = function() end }
  for k, v in pairs(L.options or {}) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  return userlist[L.name](o)
end

local function query(L, extra)
  local q = L.query(L.per or PER)
  for k, v in pairs(extra or {}) do q[k] = v end
  return q
end

-- The listing's `k`th request (in the order they arrive) and every one
-- after it fail, until each of `conc` requests in flight has failed on
-- every try: the page the walk reaches first among them fails past the
-- retries. The faults left over are cleared before a listing resumes.
local function cut_at(L, k, conc)
  local list = {}
  for _ = 1, k - 1 do list[#list + 1] = { delay_ms = 0 } end
  for _ = 1, (RETRIES + 1) * (conc or 1) do list[#list + 1] = { status = 500 } end
  emu.faults(L.path, list)
end
local function clear_faults() emu.reset() end

-- Lists into `got` until the listing ends or raises: the error, or nil.
local function drain(L, c, q, got)
  local ok, err = pcall(function()
    for u in c:users(q) do got[#got + 1] = key_of(L, u) end
  end)
  if ok then return nil end
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  return err
end

local function pages_of(L) return math.ceil(#expected(L) / (L.per or PER)) end

-- Every key once, in the uncut listing's order.
local function assert_once(L, got, why)
  local want = expected(L)
  local seen = {}
  for _, k in ipairs(got) do
    assert.is_nil(seen[k], ("%s: %s given twice"):format(why, k))
    seen[k] = true
  end
  assert.same(want, got, why)
end

-- A Lua script that lists L in a process of its own, writing each key to
-- `out` and the token of each page consumed to `tok` (atomically), and
-- prints "done" or the error's kind and status.
local function child_script(L, out, tok)
  local extra = ""
  for k, v in pairs(L.options or {}) do extra = extra .. ("opts[%q] = %q\n"):format(k, v) end
  return ([[
local userlist = require "userlist"
local name, key, base, n, per, out, tok = %q, %q, %q, %d, %d, %q, %q
local opts = { api_key = key, base_url = base, headers = { ["X-Emu-Users"] = tostring(n) },
  max_retries = %d, sleep = function() end }
%s
local q = %s
local keys = assert(io.open(out, "w"))
q.on_checkpoint = function(token)
  keys:flush() -- the keys given before the token that follows them
  local t = assert(io.open(tok .. ".tmp", "w"))
  t:write(token)
  t:close()
  assert(os.rename(tok .. ".tmp", tok))
end
local ok, err = pcall(function()
  for u in userlist[name](opts):users(q) do keys:write(%s, "\n") end
end)
keys:close()
io.stdout:write(ok and "done" or (err.kind .. " " .. tostring(err.status)))
]]):format(L.name, emu.keys[L.key_name], emu.http .. (L.base or ""), L.n or N, L.per or PER, out, tok,
    RETRIES, extra, L.child, L.child_key or "u.id")
end

math.randomseed(os.time())

describe("resume tokens", function()
  before_each(function() emu.reset() end)
  after_each(function() emu.reset() end)

  it("are shown here for every provider of the registry", function()
    local covered = {}
    for _, L in ipairs(LISTINGS) do covered[L.name] = true end
    for _, name in ipairs(userlist.providers.names) do
      assert.is_true(covered[name], name .. " has no listing in spec/43-resume_spec.lua")
    end
  end)

  for _, L in ipairs(LISTINGS) do
    describe(L.label or L.name, function()
      it("a listing cut at a random page by a fault past the retries, resumed from err.resume, "
        .. "gives the uncut listing's users, none twice", function()
        for _, conc in ipairs{ 1, 4 } do
          local k = math.random(1, pages_of(L))
          local why = ("cut at page %d of %d, concurrency %d"):format(k, pages_of(L), conc)
          cut_at(L, k, conc)
          local c, got = client(L, { concurrency = conc }), {}
          local err = drain(L, c, query(L), got)
          assert.is_not_nil(err, why .. ": no error")
          assert.equal(500, err.status, why)
          local per = L.per or PER
          -- one request at a time, the kth is page k; fetched ahead, requests can
          -- arrive out of page order, so the page that fails is near k
          if conc == 1 then assert.equal((k - 1) * per, #got, why) end
          assert.is_true(#got < #expected(L) and #got % per == 0, why)
          assert.is_string(err.resume, why)
          local info = userlist.token_info(err.resume)
          assert.same({ provider = L.name, pages = #got / per, users = #got, done = false }, info)
          clear_faults()
          assert.is_nil(drain(L, c, query(L, { resume = err.resume }), got), why)
          assert_once(L, got, why)
          c:close()
          emu.reset()
        end
      end)

      it("a token on_checkpoint saved in one process continues the listing in another", function()
        local k = math.random(2, pages_of(L))
        cut_at(L, k, 4) -- the child fetches ahead (concurrency 4)
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        local script, out, tok = dir .. "/list.lua", dir .. "/keys", dir .. "/token"
        local f = assert(io.open(script, "w"))
        f:write(child_script(L, out, tok))
        f:close()
        local p = assert(io.popen(emu.child_env .. " " .. lua .. " " .. script .. " 2>&1"))
        local said = p:read("*a")
        p:close()
        assert.equal("http 500", said)
        clear_faults()
        local got = {}
        for line in io.lines(out) do got[#got + 1] = line end
        local token = assert(io.open(tok)):read("*a")
        local per = L.per or PER
        assert.is_true(#got < #expected(L) and #got % per == 0)
        assert.same({ provider = L.name, pages = #got / per, users = #got, done = false },
          userlist.token_info(token))
        local c = client(L)
        assert.is_nil(drain(L, c, query(L, { resume = token }), got))
        assert_once(L, got, ("cut at page %d, continued in another process"):format(k))
        os.execute("rm -rf " .. dir)
      end)

      it("goes on in batches of max_pages, each from the last checkpoint, to the end", function()
        local c, got, token, runs, last = client(L), {}, nil, 0, nil
        repeat
          runs = runs + 1
          local q = query(L, { max_pages = 3, resume = token })
          q.on_checkpoint = function(t, info) token, last = t, info end
          assert.is_nil(drain(L, c, q, got))
        until last == nil or last.done or runs > 20
        assert_once(L, got, "in batches of 3 pages")
        assert.equal(math.ceil(pages_of(L) / 3), runs)
        assert.is_true(userlist.token_info(token).done)
        -- the end's token gives nothing more
        local more = {}
        assert.is_nil(drain(L, c, query(L, { resume = token }), more))
        assert.same({}, more)
      end)

      it("each page of pages() carries the token after it, and page numbers go on", function()
        local c = client(L)
        local tokens, numbers = {}, {}
        for page in c:pages(query(L)) do
          tokens[#tokens + 1] = page.resume
          numbers[#numbers + 1] = page.number
        end
        assert.equal(pages_of(L), #tokens)
        local mid = math.floor(#tokens / 2)
        local after = {}
        for page in c:pages(query(L, { resume = tokens[mid] })) do after[#after + 1] = page.number end
        local unpack_ = table.unpack or unpack
        assert.same({ unpack_(numbers, mid + 1) }, after)
        assert.is_true(userlist.token_info(tokens[#tokens]).done)
        for i = 1, #tokens - 1 do assert.is_false(userlist.token_info(tokens[i]).done) end
      end)

      it("refuses a token that is damaged, truncated, of another query, base URL or provider", function()
        local c = client(L)
        local page = assert(c:page(query(L)))
        local token = page.resume
        local function refused(t, q, pattern)
          local p, err = c:page(query(L, q or { resume = t }))
          assert.is_nil(p)
          assert.equal("invalid", err.kind)
          assert.equal("resume", err.field)
          assert.equal(L.name, err.provider)
          if pattern then assert.matches(pattern, err.message) end
          local ok, raised = pcall(function() for _ in c:users(query(L, q or { resume = t })) do end end)
          assert.is_false(ok)
          assert.equal("resume", raised.field)
        end
        -- every character changed, and every truncation
        for i = 1, #token do
          local ch = token:sub(i, i) == "A" and "B" or "A"
          refused(token:sub(1, i - 1) .. ch .. token:sub(i + 1))
        end
        for i = 0, #token - 1 do refused(token:sub(1, i)) end
        refused(token .. "A")
        refused("hello", nil, "not a userlist resume token")
        refused(nil, { resume = 42 }, "must be a string")
        -- another query: a different page size
        local other_query = L.other or { [L.name == "arthur" and "page_size" or
          L.name == "openlayer" and "per_page" or "limit"] = 7 }
        other_query.resume = token
        refused(nil, other_query, "another query")
        -- another base URL (the same server under another name)
        local other = client(L, { base_url = emu.http:gsub("127%.0%.0%.1", "localhost") .. (L.base or "") })
        local _, err = other:page(query(L, { resume = token }))
        assert.equal("resume", err.field)
        assert.matches("another base URL", err.message)
        -- another provider
        local foreign = L.name == "openlayer" and "usertour" or "openlayer"
        local o = userlist[foreign]{ api_key = emu.keys[foreign], base_url = emu.http }
        local q = foreign == "openlayer" and { pipeline_id = PIPE, resume = token } or { resume = token }
        local _, err2 = o:page(q)
        assert.equal("resume", err2.field)
        assert.matches("belongs to a listing of " .. L.name .. ", not " .. foreign, err2.message, 1, true)
        -- max_pages and dedupe may differ
        assert.is_not_nil(c:page(query(L, { resume = token, max_pages = 1,
          dedupe = L.name == "arthur" and "user" or true })))
      end)

      it("never holds the key", function()
        local c = client(L)
        local page = assert(c:page(query(L)))
        local key = emu.keys[L.key_name]
        assert.is_nil(page.resume:find(key, 1, true))
        assert.is_nil(core.token_open(page.resume):find(key, 1, true))
      end)
    end)
  end

  it("Helicone: a missing until is pinned in the token, so the window does not move", function()
    local L = LISTINGS[1]
    local c = client(L)
    local since = 1700000000
    local page = assert(c:page(query(L, { since = since })))
    local first = emu.requests()
    local window = core.json_decode(first[#first].body).timeFilter
    assert.equal(since, window.startTimeUnixSeconds)
    emu.reset()
    local again = assert(c:page(query(L, { since = since, resume = page.resume })))
    local reqs = emu.requests()
    local body = core.json_decode(reqs[#reqs].body)
    assert.same(window, body.timeFilter)
    assert.equal(PER, body.offset)
    assert.equal(2, again.number)
  end)

  it("on_checkpoint hears of a page once the caller asks for more after it, not before", function()
    local L = LISTINGS[3] -- openlayer
    local heard = {}
    local q = query(L, {
      on_checkpoint = function(t, info) heard[#heard + 1] = { t, info.page, info.done } end })
    local it_, st, ctl, closing = client(L):pages(q)
    local p1 = it_(st, ctl)
    assert.same({}, heard)
    local p2 = it_(st, ctl)
    assert.same({ { p1.resume, 1, false } }, heard)
    assert.equal(2, p2.number)
    if closing then getmetatable(closing).__close(closing) end
  end)

  it("an error of on_checkpoint ends the listing and comes out as it was raised", function()
    local L = LISTINGS[3]
    local q = query(L, { on_checkpoint = function() error("disk full", 0) end })
    local n = 0
    local ok, err = pcall(function()
      for _ in client(L):users(q) do n = n + 1 end
    end)
    assert.is_false(ok)
    assert.equal("disk full", err)
    assert.equal(PER, n) -- the first page's users, then its checkpoint
    assert.equal(0, emu.until_stats(function(st) return st.in_flight == 0 end).in_flight)
  end)

  for _, L in ipairs{ LISTINGS[5], LISTINGS[6] } do
    it(L.label .. ": a token whose cursor's user was deleted since fails, saying so, never ends early",
      function()
      local c = client(L)
      local last
      for page in c:pages(query(L, { max_pages = 2 })) do last = page end
      assert.equal(2, last.number)
      assert(c:delete(last.users[#last.users].id))
      local got = {}
      local err = drain(L, c, query(L, { resume = last.resume }), got)
      assert.is_not_nil(err, "the listing ended as if complete")
      assert.same({}, got)
      assert.matches("resume token's position went stale", err.message, 1, true)
      assert.equal(last.resume, err.resume)
      if L.key_name == "usertour" then assert.equal("E1007", err.code) end
    end)
  end

  it("page() returns an error with the token of the page that failed", function()
    local L = LISTINGS[3] -- openlayer
    local c = client(L)
    local first = assert(c:page(query(L)))
    cut_at(L, 1)
    local p, err = c:page(query(L, { resume = first.resume }))
    assert.is_nil(p)
    assert.equal(500, err.status)
    assert.equal(first.resume, err.resume)
    assert.is_nil(tostring(err):find(err.resume, 1, true)) -- one line, no token in it
  end)
end)
