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
local args = require "userlist.args"
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local pager = require "userlist.pager"
local providers = require "userlist.providers"
local resume = require "userlist.resume"
local time = require "userlist.time"

local raise = errors.raise_invalid
local null = core.null
local floor, type = math.floor, type

local MAX_PAGE_SIZE = 5000
local DEFAULT_PAGE_SIZE = 1000 -- the server's default is 10; fewer round trips
local BASE_URL_ENV = "ARTHUR_BASE_URL"
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

-- since/until (`v` as given, `t` its seconds: userlist.args) as the
-- server's wall clock: a naive string is taken to be in server time
-- already; numbers and zoned strings are shifted by `offset`.
-- @return wall-clock seconds (for comparing) and the string to send
local function server_time(v, t, offset)
  local zoned = true
  if type(v) == "string" then
    local _, z = time.parse_iso(v)
    zoned = z
  end
  if zoned then t = t + offset end
  return t, naive_iso(t)
end

-- Query -----------------------------------------------------------------------

local TIME_HINT = " (a Lua time number or an ISO 8601 string expected)"

--- The query of `users{}`, `pages{}` and `page{}` (see userlist.args).
local QUERY = args.schema{
  { name = "task_ids", type = "strings", min = 1, option = true, repeatable = true,
    required = "is required (at least one task id)", at = "query", wire = "task_ids", flag = "--task-id",
    help = "a task to list the users of (repeat it; at least one)" },
  { name = "since", type = "time", nonempty = true, hint = TIME_HINT, at = "query", wire = "start_time",
    help = "traces that started since" },
  { name = "until", type = "time", nonempty = true, hint = TIME_HINT, at = "query", wire = "end_time",
    help = "traces that ended until" },
  { name = "sort", type = "enum", choices = { "asc", "desc" }, at = "query", wire = "sort",
    help = "asc or desc by earliest start time (the server's default: desc)" },
  { name = "page_size", type = "int", min = 1, max = MAX_PAGE_SIZE, default = DEFAULT_PAGE_SIZE,
    at = "query", wire = "page_size",
    help = ("rows a page, 1..%d (default %d)"):format(MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE) },
  { name = "page", type = "int", min = 0, max = 2 ^ 31 - 1, default = 0, at = "query", wire = "page",
    help = "first page to ask for (from 0)" },
  args.common.max_pages,
  -- rows are (user, task) pairs: true drops repeated pairs, "user" keeps one row per user
  { name = "dedupe", type = "enum", choices = { true, false, "user" },
    help = "true: drop repeated (user, task) rows; \"user\": one row per user",
    message = "must be true (drop repeated (user, task) rows) or \"user\" (one row per user)",
    flags = { { "--dedupe", value = true, help = args.common.dedupe.help },
      { "--per-user", value = "user", help = "one row per user (rows are (user, task) pairs otherwise)" } } },
  args.common.resume, args.common.on_checkpoint,
}
-- client:user()'s query
local ONE = args.pick(QUERY, { "task_ids" })

--- The client options Arthur adds.
local OPTIONS = {
  { name = "task_ids", type = "strings", flag = false, help = "the tasks of queries that give none" },
  { name = "server_utc_offset", type = "int", arg = "<seconds>",
    help = "the server's clock, seconds east of UTC (default 0)" },
}

local function task_ids(c, q)
  return args.check(q, ONE, c.options).task_ids
end

local function prepare(c, q)
  local v = args.check(q, QUERY, c.options)
  local offset = c.options.server_utc_offset or 0
  local p = {
    task_ids = v.task_ids, sort = v.sort, page_size = v.page_size, page = v.page,
    max_pages = v.max_pages, offset = offset,
  }
  local from, to
  if v.since ~= nil then from, p.start_time = server_time(q.since, v.since, offset) end
  if v["until"] ~= nil then to, p.end_time = server_time(q["until"], v["until"], offset) end
  if from and to and to < from then raise("until", "is before 'since'") end
  p.dedupe = v.dedupe or nil
  return p
end

-- Users ---------------------------------------------------------------------

-- One row as the common user shape; every provider field is kept. Times
-- are the server's naive wall clock, read at p.offset.
local ROW = norm.shape{
  list = "users", ids = { "user_id", "task_id" }, id_lists = ID_LISTS, ints = INTS, nums = NUMS,
  copy = { { "id", "user_id" }, { "requests", "trace_count" }, { "sessions", "session_count" },
    { "prompt_tokens", "prompt_token_count" }, { "completion_tokens", "completion_token_count" },
    { "tokens", "total_token_count" }, { "cost", "total_token_cost" } },
  times = { first_seen = "earliest_start_time", last_seen = "latest_end_time" },
}

-- Listing ----------------------------------------------------------------------

local listing = {
  prepare = prepare,
  rows = function(p) return ROW, p.offset, 0 end,
  first = function(p) return { page = p.page } end,
  request = function(_, p, st)
    return { method = "GET", path = "/api/v1/traces/users", query = {
      task_ids = p.task_ids, start_time = p.start_time, end_time = p.end_time,
      sort = p.sort, page_size = p.page_size, page = st.page,
    } }
  end,
  parse = function(c, body, p, st, shaped)
    local users = type(body) == "table" and body.users
    if type(users) ~= "table" then
      error(errors.new{ kind = "decode", message = "response has no 'users' array" }, 0)
    end
    norm.rows(users, ROW, p.offset, 0, c, p.warned, shaped)
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
  -- resume tokens (userlist.resume): the page number
  save = function(_, _, st) return ("%d"):format(st.page) end,
  load = function(_, _, s) return { page = resume.number(s, 0, 2 ^ 31 - 1, "page number") } end,
}

-- A row is a (user, task) pair: its identity for the loop guard, and the
-- key of dedupe = true (one row per pair).
function listing.identity(u)
  return (u.user_id or "") .. "\0" .. (u.task_id or "")
end
listing.key = listing.identity

-- dedupe = "user": one row per user (the first seen, i.e. one task's figures).
local by_user = setmetatable({ key = function(u) return u.user_id or "" end }, { __index = listing })

local methods = {}

local segment = require("userlist.transport").segment

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
    local res, err = self.transport:request{ method = "GET", path = "/api/v1/traces/users/" .. segment(id),
                                 query = { task_ids = task_ids(self, q) } }
    if not res then error(err, 0) end
    if type(res.body) ~= "table" or res.body[1] ~= nil then
      error(errors.new{ kind = "decode", provider = "arthur", status = res.status,
                        message = "user detail is not a JSON object" }, 0)
    end
    return norm.one(res.body, ROW, self.options.server_utc_offset or 0)
  end)
end

return client.define(providers.declare{
  name = "arthur",
  env_key = "ARTHUR_API_KEY",
  base_url_env = BASE_URL_ENV,
  query = QUERY,
  options = OPTIONS,
  base_url = function()
    local url = os.getenv(BASE_URL_ENV)
    if url == nil or url == "" then
      error("userlist.arthur: no base URL (pass base_url or set " .. BASE_URL_ENV .. ")", 3)
    end
    return url
  end,
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
})
