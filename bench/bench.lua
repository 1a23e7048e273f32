--- make bench: userlist against the bundled emulator, beside the decoder's
-- limit and the alternatives, on the same pages (bench/README.md).
--   bench.lua loopback N      listings of N users per provider, no delay
--   bench.lua delay PAGES MS  listings of about PAGES pages, each answered after MS ms
--   bench.lua rss NAME N      one listing; prints its peak RSS (VmHWM, KiB)
--   bench.lua memory NAME PAGES ROUNDS DIR  decoding PAGES full pages (at least
--                             BENCH_DECODE_ROWS rows) in
--                             memory: cjson, cjson + shape, userlist's one
--                             pass, each in fresh processes, ROUNDS rounds
--                             interleaved; prints the medians' row
--   bench.lua decode NAME PAGES DIR WHAT  one such process: prints rows and
--                             CPU seconds
-- Prints markdown table rows on stdout. USERLIST_EMU_HTTP: the emulator.
local userlist = require "userlist"
local core = require "userlist.core"
local cjson = require "cjson"
local R = require "requests"

local BASE = assert(os.getenv("USERLIST_EMU_HTTP"), "run it with make bench")
local LUA = rawget(_G, "jit") and "LuaJIT" or _VERSION
local LUA_BIN = os.getenv("BENCH_LUA") or "lua5.4"
local mode = arg[1]

local QUERIES = {
  helicone = { limit = 1000 },
  openlayer = { pipeline_id = R.PIPE, per_page = 100 },
  arthur = { task_ids = { "task-1", "task-2", "task-3" }, page_size = 5000, sort = "asc" },
  usertour = { limit = 100 },
}

local function client(name, n, concurrency, thread)
  local base = name == "openlayer" and BASE .. "/v1" or BASE
  return userlist[name]{ api_key = R.KEYS[name], base_url = base, concurrency = concurrency,
    headers = { ["X-Emu-Users"] = tostring(n) }, transfer_thread = thread }
end

-- The userlist listings timed: concurrency 4 and 1 with the defaults, and
-- 4 with a transfer thread.
local RUNS = {
  { 4, nil, "concurrency 4" }, { 1, nil, "concurrency 1" },
  { 4, true, "concurrency 4, transfer thread" },
}

local function rows_of(name, body)
  if name == "helicone" then return body.data.users end
  if name == "openlayer" then return body.items end
  if name == "arthur" then return body.users end
  return body.results
end

-- userlist: every user of the listing. @return rows, seconds
local function run_userlist(name, n, concurrency, thread)
  local c = client(name, n, concurrency, thread)
  local rows = 0
  local t0 = core.now()
  for _ in c:users(QUERIES[name]) do rows = rows + 1 end
  return rows, core.now() - t0
end

-- The bodies of the listing's pages, fetched raw over one connection; each
-- is decoded with cjson from memory as it arrives, and only the decoding is
-- timed. With `shape`, each decoded page then goes through the provider's
-- own parse (nulls removed, numbers and times converted, common fields
-- added, rows checked), timed with the decoding: what any client that gives
-- the common shape does at least. (A separate pass: timing the two apart in
-- one would bill the parse's garbage to the next decode.)
-- @return rows, seconds, bytes
local function run_decoder(name, n, shape)
  local c = client(name, n, 1)
  local listing = c.listing
  local p = listing.prepare(c, QUERIES[name])
  local s = core.session()
  local headers = { ["X-Emu-Users"] = tostring(n) }
  local rows, secs, bytes = 0, 0, 0
  for k = 0, R.pages(name, n) - 1 do
    local method, url, body = R[name].req(BASE, k, n)
    local res = assert(s:request{ method = method, url = url, body = body, decode = false,
      api_key = R.KEYS[name], headers = body and { ["X-Emu-Users"] = headers["X-Emu-Users"],
      ["Content-Type"] = "application/json" } or headers })
    local text = res.body
    bytes = bytes + #text
    local t0 = core.now()
    local doc = cjson.decode(text)
    if shape then listing.parse(c, doc, p, listing.first(p)) end
    secs = secs + core.now() - t0
    rows = rows + #rows_of(name, doc)
  end
  s:close()
  return rows, secs, bytes
end

-- luasocket + cjson: socket.http page by page, as a pure-Lua user would.
local function run_luasocket(name, n)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local rows = 0
  local t0 = core.now()
  local k, nxt = 0, nil
  while true do
    local method, url, body = R[name].req(BASE, k, n)
    if name == "usertour" and nxt then url = BASE .. nxt end
    local out = {}
    local headers = { authorization = "Bearer " .. R.KEYS[name], ["x-emu-users"] = tostring(n),
      accept = "application/json" }
    if body then
      headers["content-type"] = "application/json"
      headers["content-length"] = tostring(#body)
    end
    local ok, code = http.request{ url = url, method = method, headers = headers,
      source = body and ltn12.source.string(body) or nil, sink = ltn12.sink.table(out) }
    assert(ok and code == 200, "luasocket: " .. tostring(code))
    local doc = cjson.decode(table.concat(out))
    local page = rows_of(name, doc)
    rows = rows + #page
    k = k + 1
    if name == "usertour" then
      if doc.next == cjson.null then break end
      nxt = doc.next
    elseif #page < R[name].per or (name == "arthur" and k * R[name].per >= doc.count) then
      break
    end
  end
  return rows, core.now() - t0
end

-- Users of a listing of exactly `pages` full pages.
local function users_for(name, pages)
  local rows = pages * R[name].per
  if name == "arthur" then return math.ceil(rows / 1.2) end -- R.rows: n + floor(n / 5)
  return rows
end

-- The bodies of `pages` full pages, fetched once into `dir` (the timing
-- processes read them back: the same bytes for every round).
local function save_pages(name, pages, dir)
  local n = users_for(name, pages)
  assert(R.rows(name, n) == pages * R[name].per)
  local s = core.session()
  for k = 0, pages - 1 do
    local method, url, body = R[name].req(BASE, k, n)
    local res = assert(s:request{ method = method, url = url, body = body, decode = false,
      api_key = R.KEYS[name], headers = { ["X-Emu-Users"] = tostring(n),
      ["Content-Type"] = body and "application/json" or nil } })
    local f = assert(io.open(("%s/%s-%d.json"):format(dir, name, k), "wb"))
    f:write(res.body)
    f:close()
  end
  s:close()
end

-- One timing process: the saved pages decoded by `what`.
--   cjson    cjson.decode alone: the floor the issue measures against
--   shape    cjson.decode, then the provider's parse (what 0.1.0 did)
--   onepass  core.decode_body given the listing's rows declaration, then
--            the same parse (handed what the core found shaping the rows):
--            what the client does with every page
-- @return rows, CPU seconds
local function decode_saved(name, pages, dir, what)
  local c = client(name, users_for(name, pages), 1)
  local listing = c.listing
  local p = listing.prepare(c, QUERIES[name])
  p.warned = {}
  local spec, naive, shift = listing.rows(p)
  local shaped = { spec, naive or 0, shift or 0, true }
  local texts = {}
  for k = 0, pages - 1 do
    local f = assert(io.open(("%s/%s-%d.json"):format(dir, name, k), "rb"))
    texts[k + 1] = f:read("*a")
    f:close()
  end
  local rows = 0
  collectgarbage("collect")
  local t0 = os.clock()
  for k = 1, pages do
    local doc
    if what == "cjson" then
      doc = cjson.decode(texts[k])
    elseif what == "shape" then
      doc = cjson.decode(texts[k])
      listing.parse(c, doc, p, listing.first(p))
    else
      local outcome
      doc, outcome = core.decode_body(texts[k], "GET", BASE, nil, shaped)
      assert(outcome, "decode").lenient = true
      listing.parse(c, doc, p, listing.first(p), outcome)
    end
    rows = rows + #rows_of(name, doc)
  end
  return rows, os.clock() - t0
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function run_python(name, n)
  local out = sh(("python3 bench/pyloop.py %s %s %d"):format(name, BASE, n))
  local rows, secs = out:match("^(%d+) ([%d.e-]+)")
  assert(rows, "python: " .. out)
  return tonumber(rows), tonumber(secs)
end

-- curl: the same requests in one invocation (one connection), bodies to
-- /dev/null: the transfer's own limit.
local function run_curl(name, n)
  local cfg = os.tmpname()
  local f = assert(io.open(cfg, "w"))
  for k = 0, R.pages(name, n) - 1 do
    local method, url, body = R[name].req(BASE, k, n)
    if k > 0 then f:write("next\n") end
    f:write(('url = "%s"\nrequest = "%s"\noutput = "/dev/null"\nsilent\n'):format(url, method))
    f:write(('header = "Authorization: Bearer %s"\nheader = "X-Emu-Users: %d"\n'):format(R.KEYS[name], n))
    if body then
      f:write('header = "Content-Type: application/json"\n')
      f:write(('data = "%s"\n'):format(body:gsub('"', '\\"')))
    end
  end
  f:close()
  local t0 = core.now()
  local ok = os.execute("curl -K " .. cfg)
  local secs = core.now() - t0
  os.remove(cfg)
  assert(ok == true or ok == 0, "curl failed")
  return R.rows(name, n), secs
end

local function row(name, what, rows, secs, bytes, note)
  print(("| %s | %s | %s | %d | %.2f | %s | %s | %s |"):format(LUA, name, what, rows, secs,
    secs > 0 and ("%.0f"):format(rows / secs) or "-",
    bytes and ("%.1f"):format(bytes / 1e6 / secs) or "-", note or ""))
  io.stdout:flush()
end

local function emu_config(t)
  local s = core.session()
  assert(s:request{ method = "POST", url = BASE .. "/_emu/config", json = t })
  s:close()
end

-- The registry's providers that have a baseline here (bench/requests.lua:
-- how luasocket, Python and curl ask for their pages); one without is said
-- and left out until it has one.
local function benched()
  local out = {}
  for _, name in ipairs(userlist.providers.names) do
    if R[name] and QUERIES[name] then
      out[#out + 1] = name
    else
      io.stderr:write("bench: no baseline for ", name, " in bench/requests.lua: left out\n")
    end
  end
  return out
end

if mode == "loopback" then
  local n = tonumber(arg[2]) or 1000000
  emu_config{ delay_ms = 0 }
  for _, name in ipairs(benched()) do
    local want = R.rows(name, n)
    local drows, dsecs, bytes = run_decoder(name, n)
    assert(drows == want, name .. ": decoder saw " .. drows .. " rows, not " .. want)
    row(name, "decoder's limit: cjson.decode of the same bodies, in memory", drows, dsecs, bytes)
    local srows, ssecs = run_decoder(name, n, true)
    assert(srows == want)
    row(name, "the same, then the common shape (the provider's parse), in memory", srows,
      ssecs, bytes, ("%.2fx the decoder"):format(ssecs / dsecs))
    for _, run in ipairs(RUNS) do
      local rows, secs = run_userlist(name, n, run[1], run[2])
      assert(rows == want, name .. ": userlist listed " .. rows)
      row(name, "userlist, " .. run[3], rows, secs, bytes, ("%.2fx the decoder"):format(secs / dsecs))
    end
    local rows, secs = run_luasocket(name, n)
    assert(rows == want, name .. ": luasocket listed " .. rows)
    row(name, "luasocket + cjson", rows, secs, bytes, ("%.2fx the decoder"):format(secs / dsecs))
    if LUA_BIN == "lua5.4" then -- the same for either Lua: measured once
      rows, secs = run_python(name, n)
      assert(rows == want, name .. ": python listed " .. rows)
      row(name, "Python http.client + json", rows, secs, bytes, ("%.2fx the decoder"):format(secs / dsecs))
      rows, secs = run_curl(name, n)
      row(name, "curl, one connection (transfer only)", rows, secs, bytes)
    end
  end
elseif mode == "delay" then
  local pages, ms = tonumber(arg[2]) or 40, tonumber(arg[3]) or 50
  emu_config{ delay_ms = ms }
  for _, name in ipairs(benched()) do
    -- n users making `pages` full pages and a short last one
    local per = R[name].per
    local n = (pages - 1) * per + math.floor(per / 2)
    if name == "arthur" then n = math.floor(n / 1.2) end
    local want, np = R.rows(name, n), R.pages(name, n)
    local ideal = np * ms / 1000 / 4
    -- a cursor chain cannot overlap its pages: its floor is pages x delay
    local cursor = name == "usertour"
    -- the decoding alone is a floor too: when it passes pages x delay / 4,
    -- no client in one Lua state reaches that ratio
    local drows, dsecs, bytes = run_decoder(name, n)
    assert(drows == want)
    row(name, ("decoder's limit: cjson.decode of the same bodies (%d pages)"):format(np), drows,
      dsecs, bytes, ("%.2fx pages x delay / 4"):format(dsecs / ideal))
    local c4
    for _, run in ipairs(RUNS) do
      local rows, secs = run_userlist(name, n, run[1], run[2])
      assert(rows == want)
      c4 = c4 or secs
      row(name, ("userlist, %s (%d pages)"):format(run[3], np), rows, secs, bytes,
        run[1] == 4 and ("%.2fx pages x delay / 4%s"):format(secs / ideal, cursor
          and ("; %.2fx pages x delay (a cursor chain)"):format(secs / ideal / 4) or "") or "")
    end
    local rows, secs = run_luasocket(name, n)
    assert(rows == want)
    row(name, ("luasocket + cjson (%d pages)"):format(np), rows, secs, bytes,
      ("userlist c4 %.1fx faster"):format(secs / c4))
    if LUA_BIN == "lua5.4" then
      rows, secs = run_python(name, n)
      assert(rows == want)
      row(name, ("Python http.client + json (%d pages)"):format(np), rows, secs, bytes,
        ("userlist c4 %.1fx faster"):format(secs / c4))
    end
  end
  emu_config{ delay_ms = 0 }
elseif mode == "rss" then
  local name, n = arg[2], tonumber(arg[3])
  local rows = run_userlist(name, n, 4)
  assert(rows == R.rows(name, n))
  local f = assert(io.open("/proc/self/status"))
  local status = f:read("*a")
  f:close()
  print(status:match("VmHWM:%s*(%d+)"))
elseif mode == "decode" then
  local rows, secs = decode_saved(arg[2], tonumber(arg[3]), arg[4], arg[5])
  print(rows, ("%.6f"):format(secs))
elseif mode == "memory" then
  local name, pages, rounds, dir = arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
  -- at least BENCH_DECODE_ROWS rows: 40 pages of 100 rows take a few ms,
  -- where a fresh process's first page weighs as much as the decoder
  pages = math.max(pages, math.ceil(tonumber(os.getenv("BENCH_DECODE_ROWS") or 0) / R[name].per))
  save_pages(name, pages, dir)
  local bytes = 0
  for k = 0, pages - 1 do
    local f = assert(io.open(("%s/%s-%d.json"):format(dir, name, k), "rb"))
    bytes = bytes + f:seek("end")
    f:close()
  end
  local WHATS = { "cjson", "shape", "onepass" }
  local times, rows = { cjson = {}, shape = {}, onepass = {} }, nil
  for _ = 1, rounds do -- interleaved, so drift in the machine hits all three
    for _, what in ipairs(WHATS) do
      local out = sh(("%s bench/bench.lua decode %s %d %s %s"):format(LUA_BIN, name, pages, dir, what))
      local r, t = out:match("^(%d+)%s+([%d.]+)")
      assert(r, what .. ": " .. out)
      assert(rows == nil or rows == tonumber(r), what .. " saw another row count")
      rows = tonumber(r)
      local ts = times[what]
      ts[#ts + 1] = tonumber(t)
    end
  end
  local function median(t)
    table.sort(t)
    local m = math.floor(#t / 2)
    return #t % 2 == 1 and t[m + 1] or (t[m] + t[m + 1]) / 2
  end
  local base = median(times.cjson)
  local shape, one = median(times.shape), median(times.onepass)
  print(("| %s | %s | %d x %d | %.1f | %.3f | %.2fx | **%.2fx** |"):format(LUA, name, pages,
    R[name].per, bytes / 1e6, base, shape / base, one / base))
  for k = 0, pages - 1 do os.remove(("%s/%s-%d.json"):format(dir, name, k)) end
else
  io.stderr:write("usage: bench.lua loopback N | delay PAGES MS | rss NAME N |"
    .. " memory NAME PAGES ROUNDS DIR | decode NAME PAGES DIR WHAT\n")
  os.exit(2)
end
