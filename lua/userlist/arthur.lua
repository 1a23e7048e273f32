--- Arthur GenAI Engine: `GET /api/v1/traces/users[/{user_id}]` (seed 002).
-- Self-hosted: the base URL is always the caller's. `task_ids` is required
-- and sent as repeated keys; pages count from 0; each row is a (user, task)
-- pair, so one user appears once per task (`dedupe` removes repeats).
-- Times are naive ISO strings in the server's local time zone.
-- @module userlist.arthur
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local time = require "userlist.time"

local check, raise = errors.check, errors.raise_invalid

local KNOWN = {
  task_ids = true, since = true, ["until"] = true, sort = true, page_size = true, page = true,
  dedupe = true, max_pages = true,
}
local INTS = { "session_count", "trace_count", "span_count", "prompt_token_count",
  "completion_token_count", "total_token_count" }
local NUMS = { "prompt_token_cost", "completion_token_cost", "total_token_cost" }

-- A since/until value as the server wants it: naive ISO in its local time.
-- A naive string is taken to be in server time already and sent as given.
local function server_time(field, v, offset)
  local t, msg = time.to_epoch(v)
  if not t then raise(field, msg) end
  local _, zoned = time.parse_iso(type(v) == "string" and v or "")
  if type(v) == "string" and not zoned then return time.iso_naive(t, 0) end
  return time.iso_naive(t, offset)
end

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
    page_size = check.int(q, "page_size", 1, 5000) or 1000,
    page = check.int(q, "page", 0, 2 ^ 31 - 1) or 0,
    max_pages = check.int(q, "max_pages", 1, 2 ^ 31 - 1),
    offset = offset,
  }
  if q.since ~= nil then p.start_time = server_time("since", q.since, offset) end
  if q["until"] ~= nil then p.end_time = server_time("until", q["until"], offset) end
  if p.start_time and p.end_time and p.end_time < p.start_time then
    raise("until", "is before 'since'")
  end
  local d = q.dedupe
  if d ~= nil and d ~= true and d ~= false and d ~= "user" then
    raise("dedupe", "must be true (drop repeated (user, task) rows) or \"user\" (one row per user)")
  end
  p.dedupe = d
  return p
end

local function map(u, offset)
  norm.strip_nulls(u)
  u.user_id = norm.id(u.user_id)
  u.task_id = norm.id(u.task_id)
  norm.fields(u, INTS, norm.int)
  norm.fields(u, NUMS, norm.num)
  u.id = u.user_id
  u.requests = u.trace_count
  u.sessions = u.session_count
  u.prompt_tokens = u.prompt_token_count
  u.completion_tokens = u.completion_token_count
  u.tokens = u.total_token_count
  u.cost = u.total_token_cost
  u.first_seen = norm.time(u.earliest_start_time, offset)
  u.last_seen = norm.time(u.latest_end_time, offset)
  return u
end

local listing = {
  prepare = prepare,
  first = function(p) return { page = p.page, seen = 0 } end,
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
    for i = 1, #users do map(users[i], p.offset) end
    local count = norm.int(body.count)
    local seen = (p.page_size * st.page) + #users
    -- a short page is the last; so is the page that reaches `count` (which
    -- saves an empty request when the total is an exact page multiple)
    local last = #users < p.page_size or (count ~= nil and seen >= count)
    return users, (not last) and { page = st.page + 1 } or nil,
      { page = st.page, page_size = p.page_size, count = count,
        display_currency = body.display_currency }
  end,
}

-- dedupe = true: one row per (user, task); "user": one row per user.
function listing.key(u)
  return u.user_id .. "\0" .. (u.task_id or "")
end

local methods = {}

-- The pager asks listing.key; "user" dedupe needs the user id alone.
function methods:users(q)
  if type(q) == "table" and q.dedupe == "user" then
    local pager = require "userlist.pager"
    local by_user = setmetatable({ key = function(u) return u.user_id end }, { __index = listing })
    return pager.users(self, by_user, q)
  end
  return client.Client.users(self, q)
end

--- `client:user(id, {task_ids = ...})`: one user's metadata (no token or
-- cost fields; with several tasks the server picks one task's row).
-- @return user or nil, err (404: kind "http", status 404)
function methods:user(id, q)
  if type(id) ~= "string" or id == "" then
    error("userlist.arthur: bad argument #1 to 'user' (non-empty string id expected)", 2)
  end
  return errors.protect(function()
    q = q or {}
    check.known(q, { task_ids = true })
    local res, err = self:_call{ method = "GET", path = "/api/v1/traces/users/" .. core.escape(id),
                                 query = { task_ids = task_ids(self, q) } }
    if not res then error(err, 0) end
    if type(res.body) ~= "table" then
      error(errors.new{ kind = "decode", message = "user detail is not a JSON object" }, 0)
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
          local loc = type(e.loc) == "table" and table.concat(e.loc, ".") or nil
          parts[#parts + 1] = loc and (loc .. ": " .. e.msg) or e.msg
        end
      end
      if #parts > 0 then err.message = table.concat(parts, "; ") end
    end
  end,
}
