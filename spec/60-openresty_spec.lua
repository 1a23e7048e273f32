-- userlist inside real nginx (Debian's nginx + libnginx-mod-http-lua, LuaJIT)
-- never blocks a worker: an application server (spec/openresty/) runs
-- listings of every provider against the emulator, in request handlers and
-- in ngx.timer.at jobs, while a plain location on the same single worker is
-- asked again and again from outside (spec/openresty/load).
local core = require "userlist.core"
local emu = require "support.emu"

local data = dofile("spec/emulator/lua/emu/data.lua")
local N = 250

-- ------------------------------------------------------------ the app server

-- What the specs start (nginx, curl) must not inherit the spec run's Lua
-- paths (another Lua's, whose cjson.so nginx's LuaJIT cannot load) nor the
-- ASan run's preloaded runtime (curl hangs under it)
local CLEAN_ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4"
  .. " -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS"

local function sh(cmd)
  local p = assert(io.popen(CLEAN_ENV .. " sh -c '" .. cmd:gsub("'", "'\\''") .. "' 2>&1"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return out, (ok == true or ok == 0 or code == 0)
end

-- Starts spec/openresty/nginx.conf.in with `workers` workers: {dir, url}.
local function start_app(workers)
  local dir = assert(os.tmpname())
  os.remove(dir)
  local out, ok = sh(("USERLIST_NGINX_CONF=spec/openresty/nginx.conf.in USERLIST_EMU_WORKERS=%d "
    .. "spec/emulator/run start %s"):format(workers, dir))
  assert(ok, "the app server did not start: " .. out)
  return { dir = dir, url = assert(out:match("USERLIST_EMU_HTTP=(%S+)")) }
end

local function stop_app(app)
  if app then sh("spec/emulator/run stop " .. app.dir .. " && rm -rf " .. app.dir) end
end

local ctl = core.session()
-- GET url: the decoded JSON body (raw: the text).
local function get(url, raw)
  local res, err = ctl:request{ url = url, decode = not raw }
  assert(res, err and tostring(err))
  return res.body
end

-- Runs spec/openresty/load: {pings = {seconds...}, statuses, elapsed, rc, results}.
local function load(mode, app, args)
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = "'" .. a .. "'" end
  local out = sh(("spec/openresty/load %s %s %s"):format(mode, app.url, table.concat(quoted, " ")))
  local r = { pings = {}, statuses = {}, results = {} }
  for line in out:gmatch("[^\n]+") do
    local st, secs = line:match("^ping (%d+) ([%d.]+)$")
    if st then
      r.statuses[#r.statuses + 1] = tonumber(st)
      r.pings[#r.pings + 1] = tonumber(secs)
    end
    r.elapsed = r.elapsed or tonumber(line:match("^elapsed ([%d.]+)$") or "")
    r.rc = r.rc or tonumber(line:match("^curl (%d+)$") or "")
    local json = line:match("^result (.*)$")
    if json then r.results[#r.results + 1] = core.json_decode(json) end
  end
  r.output = out
  return r
end

-- ------------------------------------------------------------ expectations

-- Arthur lists (user, task) rows; the app asks for task-1 only.

local EXPECT = {
  helicone = { count = N, first = data.id(1), last = data.id(N), pages = 3 },
  openlayer = { count = N, first = data.id(1), last = data.id(N), pages = 3 },
  usertour = { count = N, first = data.id(1), last = data.id(N), pages = 3 },
  usertour_v2 = { count = N, first = data.id(1), last = data.id(N), pages = 3 },
}
do
  local rows = emu.arthur_task1_rows(N)
  EXPECT.arthur = { count = #rows, first = rows[1], last = rows[#rows], pages = math.ceil(#rows / 100) }
end
local NAMES = { "helicone", "openlayer", "arthur", "usertour", "usertour_v2" }

local function assert_complete(r)
  assert.is_table(r, "no result")
  local want = EXPECT[r.provider]
  assert.is_nil(r.error, r.error and r.error.text)
  assert.equal(want.count, r.count, r.provider)
  assert.equal(want.first, r.first, r.provider)
  assert.equal(want.last, r.last, r.provider)
  assert.equal(want.pages, r.pages, r.provider)
end

local function assert_free_loop(r)
  -- the plain location kept answering, each time within 50 ms. A worker
  -- that blocked on a transfer would hold a ping for a whole 1 s page. The
  -- 150 pages of the 50 listings land in the same millisecond: decoded all
  -- in that turn, they held pings for 40-70 ms; the nginx engine decodes at
  -- most 256 KiB per turn (8-24 ms here)
  assert.is_true(#r.pings >= 10, "only " .. #r.pings .. " pings: " .. r.output:sub(1, 500))
  local worst = 0
  for i, secs in ipairs(r.pings) do
    assert.equal(200, r.statuses[i])
    if secs > worst then worst = secs end
  end
  assert.is_true(worst < 0.05, ("a ping took %.1f ms"):format(worst * 1000))
  return worst
end

local function list(app, query)
  return get(app.url .. "/list?" .. query)
end

-- ------------------------------------------------------------ the specs

describe("inside nginx (one worker)", function()
  local app
  setup(function()
    emu.reset()
    app = start_app(1)
  end)
  teardown(function()
    stop_app(app)
    emu.reset()
  end)
  before_each(function() emu.reset() end)

  it("says clearly that it cannot wait in init_worker, log and header_filter, instead of blocking", function()
    get(app.url .. "/in_log", true)
    get(app.url .. "/in_header_filter", true)
    local errs = get(app.url .. "/phase_errors")
    for _, phase in ipairs{ "init_worker", "log", "header_filter" } do
      local e = errs[phase]
      assert.is_table(e, phase)
      assert.equal("invalid", e.kind, phase)
      assert.matches("cannot wait for HTTP in nginx's " .. phase .. " phase without blocking the worker",
        e.message, 1, true)
    end
    assert.equal(0, emu.stats().requests) -- nothing was sent
  end)

  it("lists every provider completely, each listing over its own few reused connections", function()
    for _, name in ipairs(NAMES) do
      emu.reset()
      local r = list(app, "provider=" .. name)
      r.provider = name
      assert_complete(r)
      -- page-number listings open at most one connection per page in
      -- flight (the default concurrency, 4) and reuse them; a cursor
      -- listing reuses one
      local conns = emu.stats().connections
      if name == "usertour" or name == "usertour_v2" then
        assert.equal(1, conns, name)
      else
        assert.is_true(conns >= 1 and conns <= 4, name .. ": " .. conns .. " connections")
      end
    end
  end)

  it("verifies TLS as outside nginx: the emulator's CA passes, the default store refuses", function()
    assert_complete(list(app, "provider=usertour&tls=1"))
    local r = list(app, "provider=usertour&tls=1&ca=0")
    assert.equal("tls", r.error.kind, r.error.text)
  end)

  it("retries a 503 after a backoff wait made with ngx.sleep", function()
    emu.faults("/v1/users", { { delay_ms = 0 }, { status = 503 } })
    local r = list(app, "provider=usertour")
    assert_complete(r)
    assert.equal(1, r.retries)
    assert.equal("retry", r.wait_reasons)
  end)

  it("times out a slow answer and fails with one timeout error after its retries", function()
    emu.faults("/v1/users", { { delay_ms = 3000 }, { delay_ms = 3000 }, { delay_ms = 3000 } })
    local r = list(app, "provider=usertour&timeout=0.3")
    assert.equal("timeout", r.error.kind, r.error.text)
    assert.equal(2, r.retries)
  end)

  it("waits out a spent rate limit before the next request instead of spending a 429", function()
    emu.faults("/v1/users", { { rate_limit_remaining = 0, rate_limit_reset = 1 } })
    local r = list(app, "provider=usertour")
    assert_complete(r)
    assert.equal(0, r.retries)
    assert.equal("rate_limit", r.wait_reasons)
  end)

  it("blocks only when asked to (engine = 'blocking'), with the same result", function()
    assert_complete(list(app, "provider=openlayer&engine=blocking"))
  end)

  it("runs no transfer thread in a worker: refused with the nginx engine, allowed with blocking", function()
    local r = list(app, "provider=openlayer&thread=1")
    assert.matches("bad option 'transfer_thread' (the nginx engine runs no threads)", r.error.text, 1, true)
    assert_complete(list(app, "provider=openlayer&engine=blocking&thread=1"))
    assert_complete(list(app, "provider=openlayer&engine=nginx&thread=0"))
  end)

  it("runs 50 concurrent listings, each page answered after 1 s, while /ping answers in < 50 ms", function()
    emu.config{ delay_ms = 1000 }
    local queries = {}
    for i = 1, 50 do queries[i] = "provider=" .. NAMES[(i - 1) % #NAMES + 1] end
    local r = load("list", app, queries)
    assert.equal(0, r.rc, r.output:sub(1, 2000))
    assert.equal(50, #r.results)
    for i, res in ipairs(r.results) do
      assert.equal(NAMES[(i - 1) % #NAMES + 1], res.provider)
      assert_complete(res)
    end
    local worst = assert_free_loop(r)
    -- 3 pages of 1 s each: together, not one after another (150 s)
    assert.is_true(r.elapsed < 12, ("50 listings took %.1f s"):format(r.elapsed))
    print(("  50 listings in %.1f s; %d pings, the slowest %.1f ms")
      :format(r.elapsed, #r.pings, worst * 1000))
  end)

  it("runs 50 listings in ngx.timer.at jobs into a lua_shared_dict, /ping answering in < 50 ms", function()
    emu.config{ delay_ms = 1000 }
    local r = load("timers", app, { "50" })
    assert.equal(0, r.rc, r.output:sub(1, 2000))
    local res = get(app.url .. "/results?n=50")
    assert.equal(50, res.done)
    for i = 1, 50 do
      assert.equal(NAMES[(i - 1) % #NAMES + 1], res.results[i].provider)
      assert_complete(res.results[i])
    end
    local worst = assert_free_loop(r)
    assert.is_true(r.elapsed < 12, ("50 timer listings took %.1f s"):format(r.elapsed))
    print(("  50 timer listings in %.1f s; %d pings, the slowest %.1f ms")
      :format(r.elapsed, #r.pings, worst * 1000))
  end)
end)

describe("inside nginx (two workers)", function()
  local app
  setup(function() app = start_app(2) end)
  teardown(function()
    stop_app(app)
    emu.reset()
  end)

  it("each worker reuses its own connection to the provider across requests", function()
    emu.reset()
    -- 40 requests, each on a new connection to the app, so both workers serve
    local out = sh(("for i in $(seq 1 40); do curl -s -H 'Connection: close' '%s/page?n='$i; echo; done")
      :format(app.url))
    local workers, n = {}, 0
    for line in out:gmatch("[^\n]+") do
      local r = core.json_decode(line)
      assert.is_nil(r.error, line)
      assert.equal(10, r.count)
      workers[r.worker] = true
      n = n + 1
    end
    assert.equal(40, n)
    local distinct = 0
    for _ in pairs(workers) do distinct = distinct + 1 end
    assert.equal(2, distinct)
    local st = emu.stats()
    assert.equal(40, st.requests)
    assert.equal(distinct, st.connections) -- one per worker, however many requests
  end)
end)

-- Starts examples/openresty/nginx.conf as shipped, on a free port, under a
-- temporary prefix, with the repository's paths where it names them
-- relative to its folder; `env`: the variables it reads. {dir, url}.
local function start_budget(env)
  local f = assert(io.open("examples/openresty/nginx.conf"))
  local text = f:read("*a")
  f:close()
  local function sub(from, to)
    local i, j = text:find(from, 1, true)
    assert(i, "examples/openresty/nginx.conf no longer says " .. from)
    text = text:sub(1, i - 1) .. to .. text:sub(j + 1)
  end
  sub("listen 127.0.0.1:8080;", "listen 127.0.0.1:@HTTP_PORT@;")
  sub("pid nginx.pid;", "@USER@\npid @DIR@/nginx.pid;")
  sub("$prefix/?.lua;$prefix/../../lua/", "@ROOT@/examples/openresty/?.lua;@ROOT@/lua/")
  sub("$prefix/../../lua/?/init.lua", "@ROOT@/lua/?/init.lua")
  sub("$prefix/../../build/", "@ROOT@/build/")
  local conf = os.tmpname()
  f = assert(io.open(conf, "w"))
  f:write(text)
  f:close()
  local dir = os.tmpname()
  os.remove(dir)
  local out, ok = sh(("HELICONE_API_KEY=%s HELICONE_BASE_URL=%s %s USERLIST_NGINX_CONF=%s "
    .. "spec/emulator/run start %s"):format(emu.keys.helicone, emu.http, env, conf, dir))
  os.remove(conf)
  assert(ok, "the example did not start: " .. out)
  return { dir = dir, url = assert(out:match("USERLIST_EMU_HTTP=(%S+)")) }
end

-- Polls the example's /_budget until `pred(status)` holds (bounded).
local function budget_until(app, pred, seconds)
  local status
  local t0 = core.now()
  repeat
    status = get(app.url .. "/_budget")
  until pred(status) or core.now() - t0 > (seconds or 20)
  return status
end

describe("examples/openresty (the budget gate)", function()
  local app
  setup(function()
    emu.reset()
    app = start_budget("BUDGET_USD=0.1")
  end)
  teardown(function()
    stop_app(app)
    emu.reset()
  end)

  it("refreshes every user's cost from a timer and answers 429 to users over budget", function()
    -- the first refresh runs at start; wait for its outcome (bounded)
    local status = budget_until(app, function(s) return s.users > 0 or s.last_error ~= core.null end)
    assert.equal(core.null, status.last_error)
    assert.equal(N, status.users)
    assert.equal(0.1, status.budget)
    local over, under
    for i = 1, N do
      local cost = data.user(i).cost / 1e6
      if cost > 0.1 then over = over or i elseif cost < 0.1 then under = under or i end
    end
    assert(over and under, "the emulator's users should straddle the budget")
    local function visit(user)
      local res, err = ctl:request{ url = app.url .. "/", decode = false, headers = { ["X-User-Id"] = user } }
      if res then return res.status, res.body end
      return err.status, err.body
    end
    local st, body = visit(data.id(over))
    assert.equal(429, st)
    assert.equal("budget exceeded", body.error)
    assert.near(data.user(over).cost / 1e6, body.cost, 1e-6)
    st, body = visit(data.id(under))
    assert.equal(200, st)
    assert.equal("hello " .. data.id(under) .. "\n", body)
    st = visit("someone-the-gate-has-not-seen")
    assert.equal(200, st)
  end)
end)

describe("examples/openresty (the budget gate) across reloads", function()
  -- six pages of 1,000 users (the example's page size), each answered after
  -- 2 s: four at once (the default concurrency), then the last two
  local TOTAL, PER, DELAY = 5500, 1000, 2000
  local app
  setup(function()
    emu.reset()
    emu.config{ users = TOTAL, delay_ms = DELAY }
    -- a budget of 0: every user (each has a cost) gets a 429 telling the cost the gate holds
    app = start_budget("BUDGET_USD=0")
  end)
  teardown(function()
    stop_app(app)
    emu.reset()
  end)

  -- HUP to the master: nginx reloads its configuration, starts new
  -- workers and lets the old ones finish gracefully (the shared dict stays)
  local function reload()
    local out, ok = sh("kill -HUP $(cat " .. app.dir .. "/nginx.pid)")
    assert(ok, "could not signal nginx: " .. out)
  end

  -- The listing's requests in the emulator's log from entry `from` on: offsets, in order.
  local function offsets(from)
    local out = {}
    for i, r in ipairs(emu.requests()) do
      if i >= from and r.uri == "/v1/user/metrics/query" then
        out[#out + 1] = core.json_decode(r.body).offset
      end
    end
    return out
  end
  local function count(t, v)
    local n = 0
    for _, x in ipairs(t) do if x == v then n = n + 1 end end
    return n
  end

  -- The status once a refresh has completed and none runs (bounded).
  local function settled()
    local s = budget_until(app, function(s)
      return s.generation ~= core.null and not s.refreshing and s.resume_users == core.null
    end, 30)
    assert.is_false(s.refreshing)
    return s
  end

  -- The status once a refresh after `last` has completed and none runs (bounded).
  local function next_generation(last)
    return budget_until(app, function(s) return s.generation ~= last.generation and not s.refreshing end, 30)
  end

  -- The cost the gate holds for users on each side of every page boundary
  -- and every 97th (all 5,500 would be 5,500 requests a test, slow under
  -- valgrind; the count is status.users).
  local function assert_costs()
    local users, seen = {}, {}
    local function add(i)
      if i >= 1 and i <= TOTAL and not seen[i] then
        seen[i] = true
        users[#users + 1] = i
      end
    end
    for i = 1, TOTAL, 97 do add(i) end
    for p = 1, math.ceil(TOTAL / PER) do
      add(p * PER)
      add(p * PER + 1)
    end
    add(TOTAL)
    for _, i in ipairs(users) do
      local res, err = ctl:request{ url = app.url .. "/", decode = false,
        headers = { ["X-User-Id"] = data.id(i) } }
      local st, body = res and res.status or err.status, res and res.body or err.body
      assert.equal(429, st, data.id(i))
      assert.near(data.user(i).cost / 1e6, body.cost, 1e-6, data.id(i))
    end
  end

  it("continues a refresh cut by a reload from the token of its last page, not from the first user",
  function()
    -- the first refresh runs at start: wait until it has consumed a page
    local status = budget_until(app, function(s) return s.resume_users ~= core.null end)
    assert.is_true(status.resume_users > 0 and status.resume_users < TOTAL, tostring(status.resume_users))
    assert.equal(core.null, status.generation) -- no complete refresh yet: the gate passes everyone
    assert.equal(0, status.users)
    local before = #emu.requests()
    reload()
    -- the old worker stops at its next page; the new worker 0 continues
    status = budget_until(app, function(s)
      return (s.users > 0 or s.last_error ~= core.null) and not s.refreshing
    end, 30)
    assert.equal(core.null, status.last_error)
    assert.equal(TOTAL, status.users)
    assert.equal(1, status.generation)
    assert.equal(core.null, status.resume_users) -- done: no token left
    assert.equal(1, status.resumed)
    local from = status.resumed_from
    assert.is_true(from > 0 and from < TOTAL and from % PER == 0, tostring(from))
    -- the first page was asked for once: the listing did not start over.
    -- The old worker asked for the page it stopped at (and for some ahead,
    -- before or after the reload); the new worker 0 asked for that page
    -- again and went on from there, for nothing before it
    local all, after = offsets(1), offsets(before + 1)
    assert.equal(1, count(all, 0), table.concat(all, " "))
    assert.equal(2, count(all, from), table.concat(all, " "))
    assert.is_true(count(after, from) >= 1, table.concat(after, " "))
    for _, o in ipairs(after) do assert.is_true(o >= from, table.concat(after, " ")) end
    assert_costs()
  end)

  it("continues a refresh cut by an error past the retries from err.resume, the last complete one still read",
  function()
    local last = settled()
    emu.reset()
    -- answered after 0.5 s: the first four pages are all asked for before
    -- the first answer, and with it the request for the fifth
    emu.config{ users = TOTAL, delay_ms = 500 }
    -- the first four pages pass; every request after them fails (the
    -- example retries 3 times), so the listing stops at the fifth page
    local faults = { { delay_ms = 0 }, { delay_ms = 0 }, { delay_ms = 0 }, { delay_ms = 0 } }
    for _ = 1, 16 do faults[#faults + 1] = { status = 500 } end
    emu.faults("/v1/user/metrics/query", faults)
    reload() -- a reload starts a refresh
    local status = budget_until(app, function(s) return s.last_error ~= core.null and not s.refreshing end)
    assert.matches("500", status.last_error)
    assert.equal(4 * PER, status.resume_users) -- err.resume: at the page that failed
    assert.equal(last.generation, status.generation) -- readers keep the last complete refresh
    assert.equal(TOTAL, status.users)
    -- the next refresh (the one the next reload starts) continues from there
    emu.reset()
    emu.config{ users = TOTAL }
    reload()
    status = next_generation(last)
    assert.equal(core.null, status.last_error)
    assert.equal(TOTAL, status.users)
    assert.equal(core.null, status.resume_users)
    assert.equal(last.resumed + 1, status.resumed)
    assert.equal(4 * PER, status.resumed_from)
    local asked = offsets(1)
    table.sort(asked)
    assert.equal(4 * PER, asked[1], table.concat(asked, " ")) -- nothing before the page that failed
    assert.equal(1, count(asked, 4 * PER))
    assert.equal(1, count(asked, 5 * PER))
    assert_costs()
  end)

  it("lists every user again, saying why, when the saved token is of another listing (a new base URL)",
  function()
    local last = settled()
    emu.reset()
    emu.config{ users = TOTAL, delay_ms = DELAY }
    -- a reload starts a refresh: wait until it has consumed a page
    reload()
    local status = budget_until(app, function(s) return s.resume_users ~= core.null end)
    assert.is_true(status.resume_users > 0, tostring(status.resume_users))
    assert.equal(last.generation, status.generation)
    -- the new configuration names the emulator by another name
    local conf = app.dir .. "/conf/nginx.conf"
    local f = assert(io.open(conf))
    local text = f:read("*a")
    f:close()
    local other = emu.http:gsub("127%.0%.0%.1", "localhost")
    local n
    text, n = text:gsub("env HELICONE_BASE_URL;", "env HELICONE_BASE_URL=" .. other .. ";")
    assert.equal(1, n)
    f = assert(io.open(conf, "w"))
    f:write(text)
    f:close()
    local before = #emu.requests()
    reload()
    status = next_generation(last)
    assert.equal(core.null, status.last_error)
    assert.equal(TOTAL, status.users)
    assert.equal(last.resumed, status.resumed) -- not continued
    local after = offsets(before + 1)
    assert.equal(1, count(after, 0), table.concat(after, " "))
    local log = sh("cat " .. app.dir .. "/logs/start.err")
    assert.matches("budget refresh: dropping the saved resume token", log, 1, true)
    assert.matches("'resume' belongs to a listing of another base URL", log, 1, true)
    assert_costs()
  end)
end)
