--- Arthur GenAI Engine: `GET /api/v1/traces/users[/{user_id}]` (seed 002).
--
-- Self-hosted: the base URL is always the caller's (`base_url` or
-- `ARTHUR_BASE_URL`), the key `api_key` or `ARTHUR_API_KEY`.
--
-- What the server really does, where its documents say otherwise:
--  * `task_ids` is required and sent as repeated keys (`task_ids=a&task_ids=b`);
--    `task_ids[]=a` would be an unknown key, `task_ids=a,b` one id "a,b".
--  * Each row is a (user, task) pair and `count` counts pairs: a user with
--    traces in two of the asked tasks comes twice (`dedupe = "user"` keeps the
--    first row of each user; `dedupe = true` drops repeated pairs).
--  * `start_time`/`end_time` are parsed as naive times in the server's local
--    time (the seed's examples carry an offset); this client sends naive ISO
--    strings, converting Lua time numbers and zoned strings with the
--    `server_utc_offset` option (seconds east of UTC, default 0; no DST).
--    `end_time` is applied inclusively (the seed says exclusive). The window
--    selects traces (start >= start_time, end <= end_time), and a row's
--    figures are summed over the traces inside it.
--  * `page` counts from 0; `page_size` 1..5000 (5000 is accepted, although
--    the seed and the server's message say "less than 5000").
--  * Validation errors are 400 with `detail` a plain string; the documented
--    422 `detail` list is read too.
--  * Ordered by `earliest_start_time` with no tie-breaker: rows can repeat
--    or be skipped across pages under concurrent writes (`dedupe`, which
--    applies to users(); pages() and page() give the server's rows).
-- @module userlist.arthur
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local pager = require "userlist.pager"
local time = require "userlist.time"

local check, raise = errors.check, errors.raise_invalid
local null = core.null
local floor, type, pairs = math.floor, type, pairs
local tointeger = math.tointeger -- nil before 5.3: numbers stay numbers

local MAX_PAGE_SIZE = 5000
local DEFAULT_PAGE_SIZE = 1000 -- the server's default is 10; fewer round trips
local KNOWN = {
  task_ids = true, since = true, ["until"] = true, sort = true, page_size = true, page = true,
  dedupe = true, max_pages = true,
}
local INTS = { "session_count", "trace_count", "span_count", "prompt_token_count",
  "completion_token_count", "total_token_count" }
local NUMS = { "prompt_token_cost", "completion_token_cost", "total_token_cost" }
local ID_LISTS = { "session_ids", "trace_ids" }

-- Times ---------------------------------------------------------------------

-- A naive ISO string of wall-clock seconds `t` (sub-second part kept as
-- microseconds, which the server's datetime parser reads).
local function naive_iso(t)
  local whole = floor(t)
  local us = floor((t - whole) * 1e6 + 0.5)
  if us >= 1000000 then whole, us = whole + 1, 0 end
  local s = time.iso_naive(whole, 0)
  if us > 0 then s = s .. (".%06d"):format(us) end
  return s
end

-- since/until as the server's wall clock: a naive string is taken to be in
-- server time already; numbers and zoned strings are shifted by `offset`.
-- @return wall-clock seconds (for comparing) and the string to send
local function server_time(field, v, offset)
  if type(v) == "string" and v == "" then raise(field, "must not be empty") end
  local t, msg = time.to_epoch(v)
  if not t then raise(field, msg .. " (a Lua time number or an ISO 8601 string expected)") end
  local zoned = true
  if type(v) == "string" then
    local _, z = time.parse_iso(v)
    zoned = z
  end
  if zoned then t = t + offset end
  return t, naive_iso(t)
end

-- Naive server times read back: "2025-01-01T00:01:00" -> Lua time number.
-- One pattern for the server's own shape, a cache of day numbers (rows of
-- a page share few dates), and the general parser for anything else.
local day_cache, day_cache_n = {}, 0
local byte, sub = string.byte, string.sub
local function digit(c) return c and c >= 48 and c <= 57 end
local function server_epoch(v, offset)
  if type(v) ~= "string" then return nil end
  if #v ~= 19 then return norm.time(v, offset) end
  local T, h1, h2, c1, m1, m2, c2, s1, s2 = byte(v, 11, 19)
  if T ~= 84 or c1 ~= 58 or c2 ~= 58 or not (digit(h1) and digit(h2) and digit(m1) and digit(m2)
      and digit(s1) and digit(s2)) then
    return norm.time(v, offset)
  end
  local date = sub(v, 1, 10)
  local day = day_cache[date]
  if not day then
    day = time.parse_iso(date)
    if not day then return nil end
    if day_cache_n >= 4096 then day_cache, day_cache_n = {}, 0 end
    day_cache[date], day_cache_n = day, day_cache_n + 1
  end
  local h, mi, s = (h1 - 48) * 10 + h2 - 48, (m1 - 48) * 10 + m2 - 48, (s1 - 48) * 10 + s2 - 48
  if h > 23 or mi > 59 or s > 60 then return nil end
  local t = day + h * 3600 + mi * 60 + s - offset
  return tointeger and tointeger(t) or t
end

-- Query -----------------------------------------------------------------------

local function task_ids(c, q)
  local ids = q.task_ids
  if ids == nil then ids = c.options.task_ids end
  if ids == nil then raise("task_ids", "is required (at least one task id)") end
  return check.strings({ task_ids = ids }, "task_ids", { min = 1 })
end

local function prepare(c, q)
  check.known(q, KNOWN)
  local offset = c.options.server_utc_offset or 0
  local p = {
    task_ids = task_ids(c, q),
    sort = check.enum(q, "sort", { "asc", "desc" }),
    page_size = check.int(q, "page_size", 1, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE,
    page = check.int(q, "page", 0, 2 ^ 31 - 1) or 0,
    max_pages = check.int(q, "max_pages", 1, 2 ^ 31 - 1),
    offset = offset,
  }
  local from, to
  if q.since ~= nil then from, p.start_time = server_time("since", q.since, offset) end
  if q["until"] ~= nil then to, p.end_time = server_time("until", q["until"], offset) end
  if from and to and to < from then raise("until", "is before 'since'") end
  local d = q.dedupe
  if d ~= nil and d ~= true and d ~= false and d ~= "user" then
    raise("dedupe", "must be true (drop repeated (user, task) rows) or \"user\" (one row per user)")
  end
  p.dedupe = d or nil
  return p
end

-- Users ---------------------------------------------------------------------

local function int(v)
  if type(v) == "number" then return tointeger and tointeger(v) or v end
  return norm.int(v)
end

-- An id list with every element a string (numbers printed whole, nulls dropped).
local function id_list(a)
  for i = 1, #a do
    if type(a[i]) ~= "string" then
      local out = {}
      for j = 1, #a do
        local s = norm.id(a[j])
        if s then out[#out + 1] = s end
      end
      return out
    end
  end
  return a
end

-- One row as the common user shape; every provider field is kept.
local function map(u, offset)
  for k, v in pairs(u) do
    if v == null then
      u[k] = nil
    elseif type(v) == "table" and k ~= "session_ids" and k ~= "trace_ids" then
      norm.strip_nulls(v)
    end
  end
  u.user_id = norm.id(u.user_id)
  u.task_id = norm.id(u.task_id)
  for i = 1, #ID_LISTS do
    local k = ID_LISTS[i]
    if type(u[k]) == "table" then u[k] = id_list(u[k]) end
  end
  for i = 1, #INTS do
    local k = INTS[i]
    local v = u[k]
    if v ~= nil then u[k] = int(v) or v end -- else left for norm.rows to report
  end
  for i = 1, #NUMS do
    local k = NUMS[i]
    local v = u[k]
    if v ~= nil then u[k] = norm.num(v) or v end
  end
  u.id = u.user_id
  u.requests = u.trace_count
  u.sessions = u.session_count
  u.prompt_tokens = u.prompt_token_count
  u.completion_tokens = u.completion_token_count
  u.tokens = u.total_token_count
  u.cost = u.total_token_cost
  u.first_seen = server_epoch(u.earliest_start_time, offset)
  u.last_seen = server_epoch(u.latest_end_time, offset)
  return u
end

-- Listing ----------------------------------------------------------------------

local ROW_NUMBERS = {}
for _, k in ipairs(INTS) do ROW_NUMBERS[#ROW_NUMBERS + 1] = k end
for _, k in ipairs(NUMS) do ROW_NUMBERS[#ROW_NUMBERS + 1] = k end
local ROW = { list = "users", map = map, numbers = ROW_NUMBERS,
  times = { first_seen = "earliest_start_time", last_seen = "latest_end_time" } }

local listing = {
  prepare = prepare,
  first = function(p) return { page = p.page } end,
  request = function(_, p, st)
    return { method = "GET", path = "/api/v1/traces/users", query = {
      task_ids = p.task_ids, start_time = p.start_time, end_time = p.end_time,
      sort = p.sort, page_size = p.page_size, page = st.page,
    } }
  end,
  parse = function(_, body, p, st)
    local users = type(body) == "table" and body.users
    if type(users) ~= "table" then
      error(errors.new{ kind = "decode", message = "response has no 'users' array" }, 0)
    end
    norm.rows(users, ROW, p.offset)
    local count = norm.int(body.count)
    p.count = count -- bounds the pages fetched ahead
    local seen = p.page_size * st.page + #users
    -- Stop on a short page, or on the page that reaches `count` (which saves
    -- an empty request when the total is an exact multiple of page_size).
    local last = #users < p.page_size or (count ~= nil and seen >= count)
    local currency = body.display_currency
    if currency == null then currency = nil end
    return users, (not last) and { page = st.page + 1 } or nil,
      { page = st.page, page_size = p.page_size, count = count, display_currency = currency }
  end,
  ahead = function(p, st)
    if p.count and p.page_size * (st.page + 1) >= p.count then return nil end
    return { page = st.page + 1 }
  end,
}

-- dedupe = true: one row per (user, task) pair.
function listing.key(u)
  return (u.user_id or "") .. "\0" .. (u.task_id or "")
end

-- dedupe = "user": one row per user (the first seen, i.e. one task's figures).
local by_user = setmetatable({ key = function(u) return u.user_id or "" end }, { __index = listing })

local methods = {}

-- An id as one path segment: percent-encoded, and "." or ".." with encoded
-- dots, which URL normalisation would otherwise resolve away.
local function segment(id)
  local seg = core.escape(id)
  if seg == "." or seg == ".." then seg = seg:gsub("%.", "%%2E") end
  return seg
end

function methods:users(q)
  if type(q) == "table" and q.dedupe == "user" then return pager.users(self, by_user, q) end
  return pager.users(self, listing, q)
end

--- `client:user(id, {task_ids = ...})`: one user's metadata (no token or
-- cost fields; with several tasks the server picks one task's row).
-- @return user, or nil and err (404: kind "http", status 404; a bad id or
-- query: kind "invalid", naming the field, before any request)
function methods:user(id, q)
  return errors.protect(function()
    if type(id) == "number" then id = norm.id(id) end
    if type(id) ~= "string" then raise("id", "must be a string, got " .. type(id)) end
    if id == "" then raise("id", "must not be empty") end
    q = q == nil and {} or q
    check.known(q, { task_ids = true })
    local res, err = self:_call{ method = "GET", path = "/api/v1/traces/users/" .. segment(id),
                                 query = { task_ids = task_ids(self, q) } }
    if not res then error(err, 0) end
    if type(res.body) ~= "table" or res.body[1] ~= nil then
      error(errors.new{ kind = "decode", provider = "arthur", status = res.status,
                        message = "user detail is not a JSON object" }, 0)
    end
    return map(res.body, self.options.server_utc_offset or 0)
  end)
end

return client.define{
  name = "arthur",
  env_key = "ARTHUR_API_KEY",
  base_url = function()
    local url = os.getenv("ARTHUR_BASE_URL")
    if url == nil or url == "" then
      error("userlist.arthur: no base URL (pass base_url or set ARTHUR_BASE_URL)", 3)
    end
    return url
  end,
  options = { task_ids = "table", server_utc_offset = "number" },
  listing = listing,
  methods = methods,
  -- {"detail": "..."} (400, 401, 403, 404) or 422 {"detail": [{loc, msg, type}]}
  error = function(err)
    local b = err.body
    if type(b) ~= "table" then return end
    local d = b.detail
    if type(d) == "string" then
      err.message = d
    elseif type(d) == "table" then
      local parts = {}
      for i = 1, #d do
        local e = d[i]
        if type(e) == "table" and type(e.msg) == "string" then
          local loc
          if type(e.loc) == "table" then
            local names = {}
            for j = 1, #e.loc do names[j] = tostring(e.loc[j]) end
            loc = table.concat(names, ".")
          end
          parts[#parts + 1] = (loc and loc ~= "") and (loc .. ": " .. e.msg) or e.msg
        end
      end
      if #parts > 0 then err.message = table.concat(parts, "; ") end
    end
  end,
}
