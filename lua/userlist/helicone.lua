--- Helicone. Two listings behind one iterator:
--  * with `user_ids`: `POST /v1/user/query` (seed 000), 100 ids a request
--    (the server answers at most 100 rows, grouped by user, so a batch of
--    100 ids is always complete);
--  * without: `POST /v1/user/metrics/query`, offset paging with an explicit
--    stable sort, stopping on a short page (its `count` is cached and
--    ignores the filter, so it is never trusted).
-- `client:query(q)` sends the seed request once and reports `truncated`
-- when the server's 100-row cap may have hidden users.
-- @module userlist.helicone
local client = require "userlist.client"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local time = require "userlist.time"

local check, raise = errors.check, errors.raise_invalid

local ROW_CAP = 100 -- the server's GROUP BY user_id LIMIT 100
local SORT_FIELDS = {
  "id", "user_id", "active_for", "first_active", "last_active", "total_requests",
  "average_requests_per_day_active", "average_tokens_per_request", "total_prompt_tokens",
  "total_completion_tokens", "cost", "rate_limited_count",
}
local KNOWN = {
  user_ids = true, since = true, ["until"] = true, limit = true, sort = true, filter = true,
  time_zone_difference_minutes = true, offset = true, max_pages = true,
}

-- since/until -> {startTimeUnixSeconds, endTimeUnixSeconds}, or nil.
-- `scale` is 1000 while the seed endpoint reads its "seconds" as
-- milliseconds (it hands them to JavaScript's new Date()).
local function time_filter(q, scale)
  if q.since == nil and q["until"] == nil then return nil end
  local from, to = 0, nil
  for _, field in ipairs{ "since", "until" } do
    if q[field] ~= nil then
      local t, msg = time.to_epoch(q[field])
      if not t then raise(field, msg) end
      if field == "since" then from = t else to = t end
    end
  end
  to = to or os.time()
  if to < from then raise("until", "is before 'since'") end
  return { startTimeUnixSeconds = from * scale, endTimeUnixSeconds = to * scale }
end

local function sort_of(q)
  local s = q.sort
  if s == nil then return { user_id = "asc" } end -- stable: one row per user_id
  if type(s) == "string" then s = { [s] = "asc" } end
  if type(s) ~= "table" then raise("sort", "must be {field = 'asc'|'desc'} or a field name") end
  local n = 0
  for k, dir in pairs(s) do
    n = n + 1
    check.enum({ sort = k }, "sort", SORT_FIELDS)
    check.enum({ ["sort." .. k] = dir }, "sort." .. k, { "asc", "desc" })
  end
  if n ~= 1 then raise("sort", "takes exactly one field") end
  return s
end

local function prepare(c, q)
  check.known(q, KNOWN)
  local p = { max_pages = check.int(q, "max_pages", 1, 2 ^ 31 - 1) }
  local ids = check.strings(q, "user_ids", { empty_ok = true })
  if ids then
    if #ids == 0 then raise("user_ids", "is empty (leave it out to list every user)") end
    for _, k in ipairs{ "limit", "sort", "filter", "offset", "time_zone_difference_minutes" } do
      if q[k] ~= nil then raise(k, "does not apply to a user_ids lookup") end
    end
    p.mode, p.ids = "ids", ids
    p.time_filter = time_filter(q, c.options.time_filter_in_seconds and 1 or 1000)
    return p
  end
  p.mode = "metrics"
  p.limit = check.int(q, "limit", 1, 1000) or 1000
  p.offset = check.int(q, "offset", 0, 2 ^ 53) or 0
  p.sort = sort_of(q)
  p.filter = q.filter == nil and "all" or q.filter
  if p.filter ~= "all" and type(p.filter) ~= "table" then
    raise("filter", "must be \"all\" or a Helicone filter tree table")
  end
  p.tz = check.int(q, "time_zone_difference_minutes", -1440, 1440)
  p.time_filter = time_filter(q, 1) -- this endpoint reads real seconds
  return p
end

local function map_query_row(u)
  norm.strip_nulls(u)
  if u.cost == nil then u.cost = u.cost_usd end -- named cost_usd before 2025-08
  u.user_id = norm.id(u.user_id)
  u.count = norm.int(u.count)
  u.prompt_tokens = norm.int(u.prompt_tokens)
  u.completion_tokens = norm.int(u.completion_tokens)
  u.cost = norm.num(u.cost)
  u.id = u.user_id
  u.requests = u.count
  if u.prompt_tokens and u.completion_tokens then u.tokens = u.prompt_tokens + u.completion_tokens end
  return u
end

local METRIC_INTS = { "total_requests", "total_prompt_tokens", "total_completion_tokens",
  "active_for", "rate_limited_count" }

local function map_metrics_row(u)
  norm.strip_nulls(u)
  u.user_id = norm.id(u.user_id)
  norm.fields(u, METRIC_INTS, norm.int)
  u.cost = norm.num(u.cost)
  u.average_requests_per_day_active = norm.num(u.average_requests_per_day_active)
  u.average_tokens_per_request = norm.num(u.average_tokens_per_request)
  u.id = u.user_id
  u.requests = u.total_requests
  u.prompt_tokens = u.total_prompt_tokens
  u.completion_tokens = u.total_completion_tokens
  if u.prompt_tokens and u.completion_tokens then u.tokens = u.prompt_tokens + u.completion_tokens end
  u.first_seen = norm.time(u.first_active)
  u.last_seen = norm.time(u.last_active)
  return u
end

local function data_of(body)
  if type(body) ~= "table" then
    error(errors.new{ kind = "decode", message = "response is not a JSON object" }, 0)
  end
  return body.data
end

local listing = {
  prepare = prepare,
  first = function(p) return p.mode == "ids" and 1 or p.offset end,
  request = function(_, p, pos)
    if p.mode == "ids" then
      local batch = {}
      for i = pos, math.min(pos + ROW_CAP - 1, #p.ids) do batch[#batch + 1] = p.ids[i] end
      return { method = "POST", path = "/v1/user/query",
               json = { userIds = batch, timeFilter = p.time_filter } }
    end
    return { method = "POST", path = "/v1/user/metrics/query", json = {
      filter = p.filter, offset = pos, limit = p.limit, sort = p.sort,
      timeFilter = p.time_filter, timeZoneDifferenceMinutes = p.tz,
    } }
  end,
  parse = function(_, body, p, pos)
    local data = data_of(body)
    if p.mode == "ids" then
      if type(data) ~= "table" then
        error(errors.new{ kind = "decode", message = "response 'data' is not an array" }, 0)
      end
      for i = 1, #data do map_query_row(data[i]) end
      local nxt = pos + ROW_CAP
      return data, (nxt <= #p.ids) and nxt or nil, { offset = pos }
    end
    local users = type(data) == "table" and data.users
    if type(users) ~= "table" then
      error(errors.new{ kind = "decode", message = "response has no 'data.users' array" }, 0)
    end
    for i = 1, #users do map_metrics_row(users[i]) end
    local short = #users < p.limit
    return users, (not short) and (pos + #users) or nil,
      { offset = pos, limit = p.limit, count = norm.int(data.count) }
  end,
  key = function(u) return u.id end,
}

local methods = {}

--- One request to the seed endpoint `POST /v1/user/query`.
-- @return page {users, truncated} or nil, err. `truncated` is true when the
-- server's 100-row cap may have hidden users (no user_ids, 100 rows back).
function methods:query(q)
  return errors.protect(function()
    q = q or {}
    check.known(q, { user_ids = true, since = true, ["until"] = true })
    local ids = check.strings(q, "user_ids", { empty_ok = true, max = ROW_CAP })
    local tf = time_filter(q, self.options.time_filter_in_seconds and 1 or 1000)
    local res, err = self:_call{ method = "POST", path = "/v1/user/query",
                                 json = { userIds = ids, timeFilter = tf } }
    if not res then error(err, 0) end
    local data = data_of(res.body)
    if type(data) ~= "table" then
      error(errors.new{ kind = "decode", message = "response 'data' is not an array" }, 0)
    end
    for i = 1, #data do map_query_row(data[i]) end
    return { users = data, status = res.status,
             truncated = (ids == nil or #ids == 0) and #data >= ROW_CAP }
  end)
end

return client.define{
  name = "helicone",
  env_key = "HELICONE_API_KEY",
  base_url = function(opts)
    local region = opts.region or "us"
    if region == "eu" then return "https://eu.api.helicone.ai" end
    if region == "us" then return "https://api.helicone.ai" end
    error(("userlist.helicone: bad option 'region' ('us' or 'eu' expected, got %s)"):format(region), 3)
  end,
  options = { region = "string", time_filter_in_seconds = "boolean" },
  listing = listing,
  methods = methods,
  -- database errors come back as 200 {"data": null, "error": "..."}
  check = function(res)
    local b = res.body
    if type(b) == "table" and type(b.error) == "string" then
      return nil, errors.new{ kind = "api", status = res.status, message = b.error, retryable = true }
    end
  end,
  -- 401 {"error", "trace"}, 500 {"message"}, 422 {"message", "details"}, 400 plain text
  error = function(err)
    local b = err.body
    if type(b) == "table" then
      if type(b.error) == "string" then err.message = b.error
      elseif type(b.message) == "string" then err.message = b.message end
      if type(b.trace) == "string" then err.code = b.trace end
    elseif type(err.raw) == "string" and err.raw ~= "" then
      err.message = err.raw
    end
  end,
}
