-- Usertour (seed 003: GET /v1/users; and v2) against the emulator, which
-- answers as the real server does, quirks included.
local userlist = require "userlist"
local core = require "userlist.core"
local time = require "userlist.time"
local emu = require "support.emu"
local data = dofile("spec/emulator/lua/emu/data.lua")

local lua = assert(os.getenv("USERLIST_LUA"), "USERLIST_LUA unset: run through make test")
local INTEGERS = math.type ~= nil -- Lua 5.3+

-- A v1 client over `n` emulated users (n nil: the emulator's default, 250).
local function v1(n, opts)
  opts = opts or {}
  opts.api_key = opts.api_key or emu.keys.usertour
  opts.base_url = opts.base_url or emu.http
  if n then opts.headers = { ["X-Emu-Users"] = tostring(n) } end
  -- one request at a time, so each can be pinned down (spec/14 fetches ahead)
  if opts.concurrency == nil then opts.concurrency = 1 end
  return userlist.usertour(opts)
end

local function v2(n, opts)
  opts = opts or {}
  opts.api_key = opts.api_key or emu.keys.usertour_v2
  opts.project_id = opts.project_id or "proj-1"
  opts.environment_id = opts.environment_id or "env-1"
  return v1(n, opts)
end

local V2_PATH = "/v2/projects/proj-1/environments/env-1/users"

local function ids(client, q)
  local out = {}
  for u in client:users(q) do out[#out + 1] = u.id end
  return out
end

-- data.id(i) for every i in `list`, or for a..b
local function expected(a, b)
  local out = {}
  if type(a) == "table" then
    for k, i in ipairs(a) do out[k] = data.id(i) end
  else
    for i = a, b do out[#out + 1] = data.id(i) end
  end
  return out
end

-- The data-plane requests made since the last reset.
local function requests() return emu.requests() end

local function request_count() return emu.stats().requests end

-- libcurl writes %3a; compare escapes in upper case
local function upper(args) return (args:gsub("%%%x%x", string.upper)) end

-- Asserts that fn gives an `invalid` error naming `field` and sends nothing.
local function refuses(field, fn, pattern)
  local before = request_count()
  local ok, a, b = pcall(fn)
  local err = ok and b or a -- a nil, err call, or a raised error
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  assert.equal("invalid", err.kind, tostring(err))
  assert.equal(field, err.field, tostring(err))
  assert.equal("usertour", err.provider)
  if pattern then assert.matches(pattern, err.message) end
  assert.equal(before, request_count(), "a request was sent")
  return err
end

-- Runs the listing and returns the raised error (it must raise).
local function raised(client, q)
  local seen = {}
  local ok, err = pcall(function()
    for u in client:users(q) do seen[#seen + 1] = u.id end
  end)
  assert.is_false(ok, "the listing ended without an error")
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  return err, seen
end

local function fault_body(results, next_link)
  local parts = {}
  for k, i in ipairs(results) do
    parts[k] = ('{"id":"%s","object":"user","attributes":{},"createdAt":"%s",'
      .. '"companies":null,"memberships":null}'):format(data.id(i), data.iso_ms(data.created(i)))
  end
  return '{"results":[' .. table.concat(parts, ",") .. '],"next":'
    .. (next_link and ('"' .. next_link .. '"') or "null") .. ',"previous":null}'
end

describe("usertour", function()
  before_each(function() emu.reset() end)

  describe("constructor", function()
    local function run(env, code)
      local file = os.tmpname()
      local f = assert(io.open(file, "w"))
      f:write(code)
      f:close()
      local p = assert(io.popen(("env %s %s %s %s 2>&1"):format(env, emu.child_env, lua, file)))
      local out = p:read("*a")
      p:close()
      os.remove(file)
      return out
    end

    it("takes the key from USERTOUR_API_KEY when api_key is not given", function()
      local out = run("USERTOUR_API_KEY=ak_emu", ([[
        local c = require("userlist").usertour{ base_url = %q, headers = { ["X-Emu-Users"] = "3" } }
        local n = 0
        for _ in c:users() do n = n + 1 end
        io.write("users=", n)
      ]]):format(emu.http))
      assert.equal("users=3", out)
      assert.equal("Bearer ak_emu", requests()[1].headers.authorization)
    end)

    it("raises naming the variable when there is no key at all", function()
      local out = run("-u USERTOUR_API_KEY", [[
        local ok, e = pcall(require("userlist").usertour, {})
        io.write(tostring(ok), " ", e)
      ]])
      assert.matches("^false .*no API key %(pass api_key or set USERTOUR_API_KEY%)", out)
    end)

    it("takes a v1 key without its ak_ prefix, as the server's guard does", function()
      assert.same(expected(1, 2), ids(v1(2, { api_key = "emu" })))
      assert.equal("Bearer emu", requests()[1].headers.authorization)
    end)

    it("defaults to https://api.usertour.io and never shows the key", function()
      local c = userlist.usertour{ api_key = "ak_secret_123" }
      assert.equal("https://api.usertour.io", c.base_url)
      assert.equal("userlist.usertour client (https://api.usertour.io)", tostring(c))
      assert.is_nil(c.options.api_key)
    end)

    it("raises at once for an unknown option or a wrongly typed project_id", function()
      assert.has_error(function() userlist.usertour{ api_key = "k", projectId = "p" } end,
        "userlist.usertour: unknown option 'projectId'")
      assert.has_error(function() userlist.usertour{ api_key = "k", project_id = 7 } end,
        "userlist.usertour: bad option 'project_id' (string expected, got number)")
    end)
  end)

  describe("v1 listing", function()
    it("lists every user across pages, oldest first, following each next link verbatim", function()
      local c = v1(7)
      local pages, users = {}, {}
      for page in c:pages{ limit = 3 } do
        pages[#pages + 1] = page
        for _, u in ipairs(page.users) do users[#users + 1] = u.id end
      end
      assert.same(expected(1, 7), users)
      assert.equal(3, #pages)
      assert.same({ 1, 2, 3 }, { pages[1].number, pages[2].number, pages[3].number })
      local log = requests()
      assert.equal(3, #log)
      assert.equal("/v1/users", log[1].uri)
      assert.equal("limit=3", log[1].args)
      -- the server's relative links, resolved against the base URL, sent as they came
      assert.equal(emu.http .. "/v1/users?limit=3&cursor=user-0000003", pages[1].next)
      assert.equal("user-0000003", pages[1].cursor)
      assert.equal("limit=3&cursor=user-0000003", log[2].args)
      assert.equal("limit=3&cursor=user-0000006", log[3].args)
      assert.is_nil(pages[3].next)
      assert.is_nil(pages[1].previous)
      assert.equal(emu.http .. "/v1/users?limit=3", pages[2].previous)
    end)

    it("ends at once on an empty list: no user, one request", function()
      local n = 0
      for _ in v1(0):users() do n = n + 1 end
      assert.equal(0, n)
      assert.equal(1, request_count())
    end)

    it("lists a one-user list in one request", function()
      assert.same({ "user-0000001" }, ids(v1(1)))
      assert.equal(1, request_count())
    end)

    it("stops at an exact page multiple without asking for an empty page", function()
      assert.same(expected(1, 6), ids(v1(6), { limit = 3 }))
      assert.equal(2, request_count())
      emu.reset()
      assert.equal(100, #ids(v1(100)))
      assert.equal(1, request_count())
    end)

    it("asks for 100 users a page unless told otherwise", function()
      assert.equal(250, #ids(v1()))
      assert.equal(3, request_count())
      assert.equal("limit=100", requests()[1].args)
    end)

    it("gives users the one shape: provider fields kept, nulls gone, common fields added", function()
      local u = assert(v1(3):page{ limit = 1, cursor = "user-0000001" }).users[1]
      assert.equal("user-0000002", u.id)
      assert.equal("user", u.object)
      local first, last = data.seen(2)
      assert.same({ name = "User 0000002", email = "user0000002@example.com",
                    plan = data.PLANS[data.hash(2) % 3 + 1], first_seen_at = data.iso_ms(first),
                    last_seen_at = data.iso_ms(last) }, u.attributes)
      assert.equal("2025-01-01T00:02:00.000Z", u.createdAt)
      assert.is_nil(u.companies) -- null unless expanded
      assert.is_nil(u.memberships)
      assert.equal("user0000002@example.com", u.email)
      assert.equal(first, u.first_seen) -- the attributes' seen times (see "seen times")
      assert.equal(last, u.last_seen)
      if INTEGERS then assert.equal("integer", math.type(u.first_seen)) end
      for _, k in ipairs{ "requests", "sessions", "prompt_tokens", "completion_tokens", "tokens",
                          "cost" } do
        assert.is_nil(u[k], k)
      end
    end)

    it("turns whole-number attributes into integers and JSON nulls into nil", function()
      local c = v1(2)
      assert(c:upsert{ id = "user-0000002", attributes = { logins = 5, score = 2.5,
                                                          nickname = core.null } })
      local u
      for x in c:users() do u = x end
      assert.equal("user-0000002", u.id)
      assert.equal(5, u.attributes.logins)
      if INTEGERS then assert.equal("integer", math.type(u.attributes.logins)) end
      assert.equal(2.5, u.attributes.score)
      assert.is_nil(u.attributes.nickname)
      assert.matches('"nickname":null', requests()[1].body)
    end)

    it("orders newest first with order_by = '-createdAt'", function()
      assert.same({ "user-0000005", "user-0000004", "user-0000003", "user-0000002", "user-0000001" },
        ids(v1(5), { order_by = "-createdAt", limit = 2 }))
      assert.matches("orderBy=%-createdAt", requests()[2].args)
      -- the later pages keep the order: their links carry orderBy
      assert.matches("orderBy=%-createdAt", requests()[3].args)
    end)

    it("filters by exact email, which is case-sensitive on the server", function()
      local c = v1(50)
      assert.same({ "user-0000042" }, ids(c, { email = "user0000042@example.com" }))
      assert.equal("email=user0000042%40example.com&limit=100", requests()[1].args)
      assert.same({}, ids(c, { email = "USER0000042@example.com" }))
    end)

    it("filters by segment_id, and an unknown segment is ignored (all users)", function()
      assert.same(expected{ 2, 7, 12, 17 }, ids(v1(20), { segment_id = "seg-2" }))
      assert.equal("limit=100&segmentId=seg-2", requests()[1].args)
      assert.same(expected(1, 20), ids(v1(20), { segment_id = "seg-nope" }))
    end)

    it("filters by company_id, and an unknown company is an empty list", function()
      -- user i is in co-(i%10), and in co-((i+3)%10) when i%4 == 0
      assert.same(expected{ 3, 13, 20, 23, 33, 40 }, ids(v1(40), { company_id = "co-3" }))
      assert.equal("companyId=co-3&limit=100", requests()[1].args)
      assert.same({}, ids(v1(40), { company_id = "co-nope" }))
    end)

    it("sends expand as repeated keys and keeps it on every page through the next links", function()
      local c = v1(8)
      local users = {}
      for u in c:users{ expand = { "companies", "memberships.company" }, limit = 5 } do
        users[#users + 1] = u
      end
      assert.equal(8, #users)
      local log = requests()
      assert.equal("expand=companies&expand=memberships.company&limit=5", log[1].args)
      assert.equal("limit=5&cursor=user-0000005&expand%5B%5D=companies"
        .. "&expand%5B%5D=memberships.company", log[2].args)
      local u8 = users[8]
      assert.same({ "co-8", "co-1" }, { u8.companies[1].id, u8.companies[2].id })
      assert.equal("Company 1", u8.companies[2].attributes.name)
      local m = u8.memberships[1]
      assert.equal("companyMembership", m.object)
      assert.equal("int-co-8", m.companyId) -- v1 gives internal ids
      assert.equal("int-user-0000008", m.userId)
      assert.equal("co-8", m.company.id)
      assert.same({}, m.attributes)
    end)

    it("takes one expand name as a string", function()
      local u
      for x in v1(1):users{ expand = "memberships" } do u = x end
      assert.equal("expand=memberships&limit=100", requests()[1].args)
      assert.equal("int-co-1", u.memberships[1].companyId)
      assert.is_nil(u.memberships[1].company)
      assert.is_nil(u.companies)
    end)

    it("starts after a given cursor", function()
      assert.same(expected(4, 6), ids(v1(6), { cursor = "user-0000003" }))
      assert.equal("cursor=user-0000003&limit=100", requests()[1].args)
    end)

    it("stops after max_pages pages", function()
      assert.same(expected(1, 4), ids(v1(10), { limit = 2, max_pages = 2 }))
      assert.equal(2, request_count())
    end)

    it("drops repeated users with dedupe = true", function()
      emu.faults("/v1/users", { { body = fault_body({ 1, 2, 2 }, "/v1/users?limit=3&cursor=user-0000002") } })
      assert.same(expected(1, 4), ids(v1(4), { limit = 3, dedupe = true }))
      emu.faults("/v1/users", { { body = fault_body({ 1, 1 }) } })
      assert.same(expected{ 1, 1 }, ids(v1(4)))
    end)

    it("follows an absolute next link, and one naming another host on the configured host", function()
      emu.faults("/v1/users", {
        { body = fault_body({ 1 }, emu.http .. "/v1/users?limit=1&cursor=user-0000001") },
        { body = fault_body({ 2 }, "https://elsewhere.example/v1/users?limit=1&cursor=user-0000002") },
      })
      assert.same(expected(1, 3), ids(v1(3), { limit = 1 }))
      local log = requests()
      assert.equal(3, #log)
      assert.equal("limit=1&cursor=user-0000002", log[3].args)
      assert.equal("/v1/users", log[3].uri)
    end)

    it("keeps the base URL's path prefix on a root-relative link", function()
      -- a server behind a proxy that strips /ut: its links lack the prefix
      local c = userlist.usertour{ api_key = "ak_emu", base_url = emu.http .. "/_emu/echo/ut" }
      emu.faults("/_emu/echo/ut/v1/users", {
        { body = fault_body({ 1 }, "/v1/users?limit=1&cursor=user-0000001") },
        { body = fault_body({ 2 }) },
      })
      local list = ids(c, { limit = 1 })
      assert.same(expected(1, 2), list)
      assert.equal("/_emu/echo/ut/v1/users", requests()[2].uri)
      assert.equal("limit=1&cursor=user-0000001", requests()[2].args)
    end)

    it("raises rather than loop when the server repeats a next link", function()
      local link = "/v1/users?limit=1&cursor=user-0000001"
      emu.faults("/v1/users", { { body = fault_body({ 1 }, link) }, { body = fault_body({ 2 }, link) } })
      local err, seen = raised(v1(5), { limit = 1 })
      assert.equal("api", err.kind)
      assert.matches("same next link twice", err.message)
      assert.same(expected(1, 1), seen) -- the page with the repeated link is refused whole
    end)

    it("returns an unknown cursor's E1007 from page() as nil, err: no listing to recover in", function()
      local page, err = v1(3):page{ cursor = "user-9999999" }
      assert.is_nil(page)
      assert.equal("http", err.kind)
      assert.equal(400, err.status)
      assert.equal("E1007", err.code)
      assert.equal("usertour", err.provider)
      assert.matches("Invalid cursor parameter %(no user has the cursor's id", tostring(err))
      assert.matches("cursor=user%-9999999", err.url)
      assert.equal(1, #requests()) -- nothing asked again
    end)

    it("reads one page with page(), and the next one from its cursor", function()
      local c = v1(5)
      local p1 = assert(c:page{ limit = 2 })
      assert.same(expected(1, 2), { p1.users[1].id, p1.users[2].id })
      assert.equal(1, p1.number)
      assert.equal(200, p1.status)
      assert.equal("user-0000002", p1.cursor)
      local p2 = assert(c:page{ limit = 2, cursor = p1.cursor })
      assert.equal("user-0000003", p2.users[1].id)
      assert.equal(emu.http .. "/v1/users?limit=2&cursor=user-0000004", p2.next)
      local p3 = assert(c:page{ limit = 2, cursor = p2.cursor })
      assert.same({ "user-0000005" }, { p3.users[1].id, p3.users[2] })
      assert.is_nil(p3.next)
      assert.is_nil(p3.cursor)
    end)

    it("keeps the server's off-by-one previous link of v1", function()
      local c = v1(10)
      local p = assert(c:page{ limit = 2, cursor = "user-0000006" })
      -- the real previous page starts after user-0000004; v1 points after user-0000005
      assert.equal(emu.http .. "/v1/users?limit=2&cursor=user-0000005", p.previous)
    end)

    it("refuses since/until: v1 cannot filter by time", function()
      refuses("since", function() return v1(1):users{ since = 0 } end, "needs API v2")
      refuses("until", function() return v1(1):page{ ["until"] = "2025-01-02" } end, "needs API v2")
    end)
  end)

  describe("arguments are checked before any request", function()
    local c
    before_each(function() c = v1(5) end)

    it("limit: 1 to 100, a whole number", function()
      for _, bad in ipairs{ 0, 101, 1.5, "10", -1 } do
        refuses("limit", function() return c:users{ limit = bad } end)
      end
      assert.same(expected(1, 5), ids(c, { limit = 1 }))
      assert.equal(5, request_count())
    end)

    it("expand: known names only, as a list; a comma-separated string is refused", function()
      refuses("expand", function() return c:users{ expand = { "companies", "users" } } end,
        "must be one of companies, memberships, memberships.company")
      refuses("expand", function() return c:users{ expand = "companies,memberships" } end,
        "comma%-separated")
      refuses("expand", function() return c:users{ expand = { x = "companies" } } end, "not a map")
      refuses("expand", function() return c:user("user-0000001", { expand = { "segments" } }) end)
    end)

    it("order_by: createdAt or -createdAt", function()
      refuses("order_by", function() return c:users{ order_by = "name" } end,
        "must be one of createdAt, %-createdAt")
    end)

    it("email: an email address", function()
      refuses("email", function() return c:users{ email = "nobody" } end, "email address")
      refuses("email", function() return c:users{ email = 42 } end, "must be a string")
    end)

    it("segment_id, company_id, cursor: non-empty strings", function()
      refuses("segment_id", function() return c:users{ segment_id = "" } end, "must not be empty")
      refuses("company_id", function() return c:users{ company_id = 3 } end, "must be a string")
      refuses("cursor", function() return c:page{ cursor = false } end, "must be a string")
    end)

    it("max_pages and dedupe", function()
      refuses("max_pages", function() return c:users{ max_pages = 0 } end)
      refuses("dedupe", function() return c:users{ dedupe = "yes" } end, "must be a boolean")
    end)

    it("an unknown query key, named, with the known ones listed", function()
      refuses("orderBy", function() return c:users{ orderBy = "createdAt" } end,
        "is not a known query key %(known: company_id, cursor, dedupe, email")
      refuses("query", function() return c:users("all") end, "must be a table")
    end)

    it("(the server itself refuses a comma-separated expand and a limit of 0)", function()
      local session = core.session()
      for _, q in ipairs{ "expand=companies,memberships", "limit=0" } do
        local res, err = session:request{ url = emu.http .. "/v1/users?" .. q, api_key = "ak_emu" }
        assert.is_nil(res)
        assert.equal(400, err.status)
        assert.equal("E1017", err.body.error.code)
      end
      session:close()
    end)

    it("project_id and environment_id come together", function()
      refuses("environment_id", function() return c:users{ project_id = "p" } end,
        "is required with project_id")
      refuses("project_id", function() return c:page{ environment_id = "e" } end,
        "is required with environment_id")
      refuses("project_id", function() return c:users{ project_id = "", environment_id = "e" } end)
    end)
  end)

  describe("errors while listing", function()
    it("raise a structured error after the users already read, never ending in silence", function()
      emu.faults("/v1/users", { { delay_ms = 0 }, { status = 503 } })
      local err, seen = raised(v1(6, { max_retries = 0 }), { limit = 2 })
      assert.same(expected(1, 2), seen)
      assert.equal("http", err.kind)
      assert.equal(503, err.status)
      assert.equal("E1014", err.code)
      assert.is_true(err.retryable)
      assert.equal("GET", err.method)
    end)

    it("are retried when retryable, honouring Retry-After", function()
      local waits = {}
      local c = v1(4, { max_retries = 2, sleep = function(s) waits[#waits + 1] = s end })
      emu.faults("/v1/users", { { delay_ms = 0 }, { status = 429 } })
      assert.same(expected(1, 4), ids(c, { limit = 2 }))
      assert.same({ 1 }, waits) -- the emulator's Retry-After: 1
      assert.equal(3, request_count())
    end)

    it("raise a decode error for a body that is not the list object", function()
      emu.faults("/v1/users", { { invalid_json = true } })
      assert.equal("decode", (raised(v1(3))).kind)
      emu.faults("/v1/users", { { body = '{"data":[]}' } })
      local err = raised(v1(3))
      assert.equal("decode", err.kind)
      assert.matches("no 'results' array", err.message)
      emu.faults("/v1/users", { { body = '{"results":[],"next":42}' } })
      assert.matches("'next' is neither a link nor null", (raised(v1(3))).message)
    end)

    it("name a wrong key with the server's code and a hint", function()
      local page, err = v1(3, { api_key = "ak_wrong" }):page()
      assert.is_nil(page)
      assert.equal(403, err.status)
      assert.equal("E1000", err.code)
      assert.matches("Invalid API key provided %(v1 takes an environment key ak_", err.message)
      assert.is_nil(tostring(err):find("ak_wrong", 1, true))
      -- a v2 token on v1
      err = select(2, v1(3, { api_key = "utp_emu" }):page())
      assert.equal("E1000", err.code)
      err = select(2, v2(3, { api_key = "ak_emu" }):page())
      assert.equal("E1000", err.code)
      assert.matches("v2 takes a personal token utp_", err.message)
    end)

    it("are pcall-catchable from pages() too", function()
      emu.faults("/v1/users", { { status = 500 } })
      local ok, err = pcall(function()
        for _ in v1(3, { max_retries = 0 }):pages() do end
      end)
      assert.is_false(ok)
      assert.equal(500, err.status)
      assert.equal("E0000", err.code)
    end)
  end)

  describe("ending a listing early", function()
    it("returns a closing value that stops the listing: no request after it", function()
      local it, _, _, closer = v1(10):users{ limit = 2 }
      assert.equal("user-0000001", it().id)
      assert.equal("function", type(getmetatable(closer).__close))
      getmetatable(closer).__close(closer)
      getmetatable(closer).__close(closer) -- idempotent
      local before = request_count()
      assert.equal("user-0000002", it().id) -- already read
      assert.is_nil(it())
      assert.equal(before, request_count())
    end)

    if _VERSION == "Lua 5.4" then
      it("closes on break in a generic for (Lua 5.4)", function()
        local chunk = assert(load([[
          local c = ...
          local n = 0
          for _ in c:users{ limit = 2 } do n = n + 1 break end
          return n
        ]]))
        assert.equal(1, chunk(v1(10)))
        assert.equal(1, request_count())
      end)
    end
  end)

  describe("one user (v1)", function()
    it("gets a user by id, expanded on request", function()
      local c = v1(10)
      local u = assert(c:user("user-0000004", { expand = { "companies" } }))
      assert.equal("user-0000004", u.id)
      assert.equal("user0000004@example.com", u.email)
      assert.same({ "co-4", "co-7" }, { u.companies[1].id, u.companies[2].id })
      assert.is_nil(u.memberships)
      assert.equal("/v1/users/user-0000004", requests()[1].uri)
      assert.equal("expand=companies", requests()[1].args)
    end)

    it("answers nil, err for an unknown id (404 E1001)", function()
      local u, err = v1(10):user("user-0000011")
      assert.is_nil(u)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal("E1001", err.code)
      assert.equal("User not found", err.message)
    end)

    it("percent-encodes ids so they stay in their path segment", function()
      local c = v1(3)
      for _, id in ipairs{ "a/b?c#d é", "..", ".", "100%", "x&expand=companies" } do
        local u = assert(c:upsert{ id = id, attributes = { name = "odd" } })
        assert.equal(id, u.id)
        assert.equal(id, assert(c:user(id)).id)
        assert.is_true(assert(c:delete(id)))
        assert.equal(404, select(2, c:user(id)).status)
      end
      local uris = {}
      for _, r in ipairs(requests()) do
        if r.method == "GET" and r.uri ~= "/v1/users" then uris[r.uri] = true end
      end
      assert.is_true(uris["/v1/users/a%2Fb%3Fc%23d%20%C3%A9"])
      assert.is_true(uris["/v1/users/%2E%2E"])
      assert.is_true(uris["/v1/users/%2E"])
      assert.is_true(uris["/v1/users/100%25"])
      assert.is_true(uris["/v1/users/x%26expand%3Dcompanies"])
    end)

    it("takes a whole-number id as its decimal string", function()
      local c = v1(3)
      assert(c:upsert{ id = 42 })
      assert.equal("42", assert(c:user(42)).id)
      assert.equal("/v1/users/42", requests()[2].uri)
    end)

    it("refuses a missing, empty or non-string id with nil, err naming it", function()
      local c = v1(3)
      refuses("id", function() return c:user() end, "must be a string, got nil")
      refuses("id", function() return c:user("") end, "must not be empty")
      refuses("id", function() return c:delete({}) end, "must be a string")
      refuses("id", function() return c:user(1.5) end)
      refuses("id", function() return c:upsert{ attributes = {} } end)
      refuses("id", function() return c:upsert{ id = "  " } end, "must not be blank")
    end)

    it("upserts with POST /v1/users (201): attributes merge, companies and memberships too", function()
      local c = v1(3)
      local u = assert(c:upsert{ id = "new-1", attributes = { name = "New", email = "new@x.io" },
        companies = { { id = "acme", attributes = { tier = "gold" } } },
        memberships = { { company = { id = "co-2" }, attributes = { role = "admin" } } } })
      assert.equal("new-1", u.id)
      assert.equal("new@x.io", u.email)
      assert.is_nil(u.companies) -- the answer is never expanded
      local log = requests()
      assert.equal("POST", log[1].method)
      assert.equal("/v1/users", log[1].uri)
      assert.same({ id = "new-1", attributes = { name = "New", email = "new@x.io" },
        companies = { { id = "acme", attributes = { tier = "gold" } } },
        memberships = { { company = { id = "co-2" }, attributes = { role = "admin" } } } },
        core.json_decode(log[1].body))
      assert(c:upsert("new-1", { plan = "pro" }))
      local got = assert(c:user("new-1", { expand = "companies" }))
      assert.same({ name = "New", email = "new@x.io", plan = "pro" }, got.attributes)
      assert.same({ "acme", "co-2" }, { got.companies[1].id, got.companies[2].id })
      -- a new user was created now, so it lists after every generated one
      local list = ids(c)
      assert.same({ "user-0000001", "user-0000002", "user-0000003", "new-1" }, list)
      assert.is_true(math.abs(got.first_seen - os.time()) < 120)
    end)

    it("checks the upsert's fields before sending", function()
      local c = v1(3)
      refuses("attributes", function() return c:upsert{ id = "a", attributes = "x" } end)
      refuses("attributes", function() return c:upsert{ id = "a", attributes = { 1, 2 } } end, "not a list")
      refuses("companies[1].id", function() return c:upsert{ id = "a", companies = { {} } } end)
      refuses("companies", function() return c:upsert{ id = "a", companies = { x = {} } } end)
      refuses("memberships[1].company", function()
        return c:upsert{ id = "a", memberships = { { company = "co-1" } } }
      end)
      refuses("memberships[2].company.id", function()
        return c:upsert{ id = "a",
          memberships = { { company = { id = "co-1" } }, { company = { id = " " } } } }
      end, "must not be blank")
      refuses("company", function() return c:upsert{ id = "a", company = {} } end, "not a known user key")
      refuses("environment_id", function() return c:upsert({ id = "a" }, { project_id = "p" }) end)
    end)

    it("deletes with DELETE /v1/users/{id}; a second delete is 404 E1001", function()
      local c = v1(3)
      assert.is_true(c:delete("user-0000002"))
      assert.same({ "user-0000001", "user-0000003" }, ids(c))
      local ok, err = c:delete("user-0000002")
      assert.is_nil(ok)
      assert.equal("E1001", err.code)
      assert.equal("DELETE", requests()[1].method)
      assert.equal("/v1/users/user-0000002", requests()[1].uri)
    end)
  end)

  describe("v2", function()
    it("is chosen by project_id and environment_id, with the utp_ token", function()
      assert.same(expected(1, 3), ids(v2(3)))
      local r = requests()[1]
      assert.equal(V2_PATH, r.uri)
      assert.equal("Bearer utp_emu", r.headers.authorization)
    end)

    it("takes the ids from the query too, percent-encoded", function()
      local c = v1(2, { api_key = "utp_emu" })
      assert.same(expected(1, 2), ids(c, { project_id = "p/1 x", environment_id = ".." }))
      assert.equal("/v2/projects/p%2F1%20x/environments/%2E%2E/users", requests()[1].uri)
    end)

    it("follows its next links like v1, to the end", function()
      assert.same(expected(1, 5), ids(v2(5), { limit = 2 }))
      local log = requests()
      assert.equal(3, #log)
      assert.equal(V2_PATH, log[3].uri)
      assert.equal("limit=2&cursor=user-0000004", log[3].args)
    end)

    it("ends an empty list, a one-user list and an exact page multiple without an extra request", function()
      assert.same({}, ids(v2(0)))
      assert.equal(1, request_count())
      assert.same({ "user-0000001" }, ids(v2(1)))
      assert.equal(2, request_count())
      assert.same(expected(1, 4), ids(v2(4), { limit = 2 }))
      assert.equal(4, request_count())
    end)

    it("has a previous link that points at the real previous page (v1's is off by one)", function()
      local p = assert(v2(10):page{ limit = 2, cursor = "user-0000006" })
      assert.equal(emu.http .. V2_PATH .. "?limit=2&cursor=user-0000004", p.previous)
    end)

    it("sends since/until as createdAfter/createdBefore, both inclusive", function()
      local c = v2(3000)
      assert.same(expected(10, 20), ids(c, { since = data.created(10), ["until"] = data.created(20) }))
      assert.equal("createdAfter=2025-01-01T00%3A10%3A00.000Z&createdBefore=2025-01-01T00%3A20%3A00.000Z"
        .. "&limit=100", upper(requests()[1].args))
    end)

    it("reads ISO strings: zones converted to UTC, a naive time as UTC", function()
      local c = v2(3000)
      assert.same(expected(10, 11), ids(c, { since = "2025-01-01T02:10:00+02:00",
                                             ["until"] = "2025-01-01T00:11:00" }))
      local args = upper(requests()[1].args)
      assert.matches("createdAfter=2025%-01%-01T00%%3A10%%3A00%.000Z", args)
      assert.matches("createdBefore=2025%-01%-01T00%%3A11%%3A00%.000Z", args)
    end)

    it("sends a date as a date: until '2025-01-01' covers that whole day", function()
      local list = ids(v2(3000), { since = "2025-01-01", ["until"] = "2025-01-01" })
      assert.equal(1439, #list) -- user i is created at 00:00 + i minutes
      assert.equal("user-0001439", list[#list])
      assert.equal("createdAfter=2025-01-01&createdBefore=2025-01-01&limit=100", requests()[1].args)
    end)

    it("refuses a bad time, and until before since", function()
      local c = v2(10)
      refuses("since", function() return c:users{ since = "yesterday" } end, "not an ISO 8601 date")
      refuses("until", function() return c:users{ ["until"] = {} } end)
      refuses("until", function() return c:users{ since = 100, ["until"] = 50 } end, "is before 'since'")
    end)

    it("answers page() with an unknown cursor by an error, not a silent empty end", function()
      local page, err = v2(3):page{ cursor = "user-9999999" }
      assert.is_nil(page)
      assert.equal("api", err.kind)
      assert.equal("E1007", err.code)
      assert.equal("usertour", err.provider)
      assert.matches("empty page for the cursor given: no user has that id", err.message)
      assert.equal(1, #requests()) -- what the server answered: an empty last page
      err = raised(v2(3), { cursor = "user-9999999" }) -- a listing from it: the same error
      assert.equal("E1007", err.code)
    end)

    it("answers 404 for an unknown company or segment (v1 differs)", function()
      local err = raised(v2(10), { company_id = "co-nope" })
      assert.equal(404, err.status)
      assert.equal("E1002", err.code)
      err = raised(v2(10), { segment_id = "seg-9" })
      assert.equal("E1025", err.code)
      assert.same(expected{ 3 }, ids(v2(10), { company_id = "co-3" }))
    end)

    it("filters by email and expands with external membership ids", function()
      local c = v2(10)
      local u
      for x in c:users{ email = "user0000004@example.com", expand = { "memberships" } } do u = x end
      assert.equal("user-0000004", u.id)
      assert.equal("co-4", u.memberships[1].companyId)
      assert.equal("user-0000004", u.memberships[1].userId)
    end)

    it("waits out a 429 (E1013) for the server's Retry-After", function()
      local waits = {}
      local c = v2(4, { sleep = function(s) waits[#waits + 1] = s end })
      emu.faults(V2_PATH, { { status = 429 } })
      assert.same(expected(1, 4), ids(c))
      assert.same({ 1 }, waits)
    end)

    it("upserts with PUT .../users/{id} and {attributes} only (200)", function()
      local c = v2(3)
      local u = assert(c:upsert{ id = "user-0000002", attributes = { plan_level = 3 } })
      assert.equal("user-0000002", u.id)
      assert.equal(3, u.attributes.plan_level)
      assert.equal("User 0000002", u.attributes.name)
      local r = requests()[1]
      assert.equal("PUT", r.method)
      assert.equal(V2_PATH .. "/user-0000002", r.uri)
      assert.same({ attributes = { plan_level = 3 } }, core.json_decode(r.body))
      assert(c:upsert("v2 new/1"))
      assert.equal(V2_PATH .. "/v2%20new%2F1", requests()[2].uri)
      assert.equal('{"attributes":{}}', requests()[2].body)
      assert.equal("v2 new/1", assert(c:user("v2 new/1")).id)
    end)

    it("refuses companies, memberships and bad attribute names before a v2 upsert", function()
      local c = v2(3)
      refuses("companies", function() return c:upsert{ id = "a", companies = { { id = "x" } } } end,
        "attributes only")
      refuses("memberships", function() return c:upsert{ id = "a", memberships = {} } end)
      refuses("attributes.1st", function() return c:upsert("a", { ["1st"] = true }) end,
        "not a valid attribute name")
      refuses("attributes.x", function() return c:upsert("a", { x = true }) end)
    end)

    it("reports the issues of a validation error", function()
      emu.faults(V2_PATH, { { status = 400, body = '{"error":{"code":"E1017","message":"Validation error",'
        .. '"issues":[{"rule":"schema","message":"Expected string","path":"attributes.name"}],'
        .. '"doc_url":"https://docs.usertour.io"}}' } })
      local u, err = v2(3):upsert("a", { name = 5 })
      assert.is_nil(u)
      assert.equal("E1017", err.code)
      assert.equal("Validation error (attributes.name: Expected string)", err.message)
      assert.equal("schema", err.issues[1].rule)
    end)

    it("deletes with 204 and no body; the user is gone", function()
      local c = v2(3)
      assert.is_true(c:delete("user-0000001"))
      local r = requests()[1]
      assert.equal("DELETE", r.method)
      assert.equal(V2_PATH .. "/user-0000001", r.uri)
      local u, err = c:user("user-0000001")
      assert.is_nil(u)
      assert.equal("E1001", err.code)
      assert.same({ "user-0000002", "user-0000003" }, ids(c))
    end)
  end)

  -- Issue 13, item 3. A cursor is the last user of the page before; that
  -- user deleted between pages makes it stale (v1: 400 E1007; v2: an empty
  -- last page). At concurrency 1 the caller deletes as its users() loop
  -- reaches that user. At 4 the next page is asked for as soon as the page
  -- before arrives, before the caller sees it, so a second client deletes
  -- from the on_event hook as page k's response arrives: as at 1, the server
  -- gave page k with the user, and the next request carries a stale cursor.
  describe("a cursor whose user is deleted mid-listing", function()
    -- Lists n users, `limit` a page, deleting users `victims` once page k
    -- (whose last user is the cursor of page k + 1) is in.
    -- @return ids given, recover events, the error raised (or nil), the
    -- listing's requests (query strings, in order)
    local function listing(version, conc, n, limit, k, victims)
      local admin = v1(n)
      local events, done = {}, false
      local function delete_victims()
        done = true
        for _, i in ipairs(victims) do assert(admin:delete(data.id(i))) end
      end
      local function is_page_k(url)
        if k == 1 then return not url:find("cursor=", 1, true) end
        return url:find("cursor=" .. data.id((k - 1) * limit), 1, true) ~= nil
      end
      local opts = { concurrency = conc, on_event = function(ev)
        if ev.type == "recover" then
          events[#events + 1] = ev
        elseif conc > 1 and not done and ev.type == "response" and is_page_k(ev.url) then
          delete_victims()
        end
      end }
      local c = version == 1 and v1(n, opts) or v2(n, opts)
      local got = {}
      local ok, err = pcall(function()
        for u in c:users{ limit = limit } do
          got[#got + 1] = u.id
          if conc == 1 and not done and u.id == data.id(k * limit) then delete_victims() end
        end
      end)
      assert.is_true(done, "the users were not deleted")
      c:close()
      admin:close()
      local asked = {}
      for _, r in ipairs(requests()) do
        if r.method == "GET" then asked[#asked + 1] = r.args end
      end
      return got, events, (not ok) and err or nil, asked
    end

    local function without(list, gone)
      local out = {}
      for _, id in ipairs(list) do
        if id ~= gone then out[#out + 1] = id end
      end
      return out
    end

    for _, version in ipairs{ 1, 2 } do
      local path = version == 1 and "/v1/users" or V2_PATH
      for _, conc in ipairs{ 1, 4 } do
        local label = (" (v%d, concurrency %d)"):format(version, conc)

        -- one recover event: the page asked again and the stale link, and
        -- v1's E1007 that said so
        local function one_recovery(events, reasked, stale_cursor)
          assert.equal(1, #events)
          local ev = events[1]
          assert.equal("usertour", ev.provider)
          assert.equal("GET", ev.method)
          assert.equal(emu.http .. path .. reasked, ev.url)
          assert.equal(emu.http .. path .. "?limit=3&cursor=" .. stale_cursor, ev.stale)
          if version == 1 then
            assert.equal(400, ev.status)
            assert.equal("E1007", ev.code)
          else
            assert.is_nil(ev.status) -- v2's answer was a 200 empty page
          end
        end

        it("asks again for the page before and loses no one" .. label, function()
          local got, events, err, asked = listing(version, conc, 10, 3, 2, { 6 })
          assert.is_nil(err)
          -- every remaining user exactly once (user 6 was given before it was deleted)
          assert.same(without(expected(1, 10), "user-0000006"), without(got, "user-0000006"))
          assert.same(expected(1, 10), got)
          one_recovery(events, "?limit=3&cursor=user-0000003", "user-0000006")
          assert.same({ "limit=3", "limit=3&cursor=user-0000003", "limit=3&cursor=user-0000006",
                        "limit=3&cursor=user-0000003", "limit=3&cursor=user-0000007" }, asked)
          assert.same(without(expected(1, 10), "user-0000006"), ids(v1(10))) -- it is gone
        end)

        it("asks again for the first page, without a cursor, when its next link went stale"
            .. label, function()
          local got, events, err, asked = listing(version, conc, 10, 3, 1, { 3 })
          assert.is_nil(err)
          assert.same(expected(1, 10), got)
          one_recovery(events, "", "user-0000003")
          assert.same({ "limit=3", "limit=3&cursor=user-0000003", "limit=3",
                        "limit=3&cursor=user-0000004", "limit=3&cursor=user-0000007" }, asked)
        end)

        it("still gives the user after a stale cursor of the last page" .. label, function()
          -- v2's stale answer is an empty last page: taken for the end, user 7 would be lost
          local got, events, err = listing(version, conc, 7, 3, 2, { 6 })
          assert.is_nil(err)
          assert.same(expected(1, 7), got)
          one_recovery(events, "?limit=3&cursor=user-0000003", "user-0000006")
        end)

        it("ends normally when the page before, asked again, has no next link" .. label, function()
          local got, events, err, asked = listing(version, conc, 7, 3, 2, { 6, 7 })
          assert.is_nil(err)
          assert.same(expected(1, 6), got)
          one_recovery(events, "?limit=3&cursor=user-0000003", "user-0000006")
          assert.same({ "limit=3", "limit=3&cursor=user-0000003", "limit=3&cursor=user-0000006",
                        "limit=3&cursor=user-0000003" }, asked)
        end)

        it("raises naming the users that may be missing when both cursors are gone" .. label, function()
          local got, events, err = listing(version, conc, 10, 3, 2, { 3, 6 })
          assert.same(expected(1, 6), got)
          assert.is_true(userlist.is_error(err), tostring(err))
          assert.equal("usertour", err.provider)
          assert.matches("users after user%-0000006 may be missing: the cursor's user and the one "
            .. "before were both deleted", err.message)
          assert.equal(emu.http .. path .. "?limit=3&cursor=user-0000003", err.url)
          if version == 1 then
            assert.equal("http", err.kind)
            assert.equal(400, err.status)
            assert.equal("E1007", err.code)
          else
            assert.equal("api", err.kind)
          end
          one_recovery(events, "?limit=3&cursor=user-0000003", "user-0000006")
        end)
      end
    end
  end)

  -- Issue 13, item 4: current servers keep attributes.first_seen_at and
  -- last_seen_at; the emulator's generated user i has them (data.seen(i)),
  -- a user made by upsert has none unless it sets them.
  describe("seen times", function()
    local function check_seen(u, i)
      local first, last = data.seen(i)
      assert.equal(data.id(i), u.id)
      assert.equal(first, u.first_seen)
      assert.equal(last, u.last_seen)
      assert.is_true(u.first_seen > data.created(i)) -- not createdAt
      assert.is_true(u.last_seen >= u.first_seen)
      if INTEGERS then assert.equal("integer", math.type(u.last_seen)) end
    end

    for _, version in ipairs{ 1, 2 } do
      local label = (" (v%d)"):format(version)
      local function new(n) return version == 1 and v1(n) or v2(n) end

      it("maps first_seen and last_seen from the attributes, listed and one by one" .. label, function()
        local c = new(5)
        local i = 0
        for u in c:users{ limit = 2 } do
          i = i + 1
          check_seen(u, i)
        end
        assert.equal(5, i)
        check_seen(assert(c:user("user-0000004")), 4)
        local p = assert(c:page{ limit = 1, cursor = "user-0000002" })
        check_seen(p.users[1], 3)
      end)

      it("falls back to createdAt for first_seen, and no last_seen, without them" .. label, function()
        local c = new(2)
        assert(c:upsert("fresh"))
        assert(c:upsert("half", { last_seen_at = "2026-03-04T05:06:07.000Z" }))
        assert(c:upsert("odd", { first_seen_at = "2026-03-04T06:06:07.250+01:00", last_seen_at = "soon" }))
        local got = {}
        for u in c:users() do got[u.id] = u end
        local fresh, half = got.fresh, got.half
        assert.is_nil(fresh.attributes.first_seen_at)
        assert.equal(assert(time.parse_iso(fresh.createdAt)), fresh.first_seen)
        assert.is_nil(fresh.last_seen)
        assert.equal(assert(time.parse_iso(half.createdAt)), half.first_seen)
        assert.equal(data.timegm(2026, 3, 4, 5, 6, 7), half.last_seen)
        -- any ISO 8601 form is read; what is not a time stays in the attributes only
        assert.equal(data.timegm(2026, 3, 4, 5, 6, 7) + 0.25, got.odd.first_seen)
        assert.is_nil(got.odd.last_seen)
        assert.equal("soon", got.odd.attributes.last_seen_at)
        local one = assert(c:user("fresh"))
        assert.equal(fresh.first_seen, one.first_seen)
        assert.is_nil(one.last_seen)
        check_seen(got["user-0000002"], 2)
      end)
    end
  end)

  describe("a million users", function()
    -- Streaming means nothing is kept: what is alive after a full collection
    -- stays flat from the first 100,000 users to the millionth (keeping them
    -- would take hundreds of MiB). Between collections the heap may run
    -- ahead of the live data by the GC's pause, which depends on the Lua
    -- version and on busted's own heap, hence the looser peak bound.
    it("stream in 10,000 pages of 100 with memory that stays small", function()
      local c = v1(1000000)
      collectgarbage("collect")
      local base = collectgarbage("count")
      local peak, live = 0, 0
      local n, first, last = 0, nil, nil
      local started = os.clock()
      for u in c:users() do
        n = n + 1
        if n == 1 then first = u.id end
        last = u.id
        if n % 5000 == 0 then
          local kb = collectgarbage("count") - base
          if kb > peak then peak = kb end
          if n % 100000 == 0 then
            collectgarbage("collect")
            kb = collectgarbage("count") - base
            if kb > live then live = kb end
          end
        end
      end
      assert.equal(1000000, n)
      assert.equal("user-0000001", first)
      assert.equal("user-1000000", last)
      assert.equal(10000, request_count())
      assert.is_true(live < 1024, ("%.0f KiB still alive after a full collection"):format(live))
      assert.is_true(peak < 32768, ("the heap grew by %.0f KiB"):format(peak))
      print(("\n  a million Usertour users: %.1f s of CPU here, live +%.0f KiB, peak +%.0f KiB")
        :format(os.clock() - started, live, peak))
    end)
  end)
end)
