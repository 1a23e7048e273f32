--- Helicone. Two listings behind one iterator:
--  * with `user_ids`: `POST /v1/user/query` (seed 000), 100 distinct ids a
--    request. The server answers at most 100 rows (`GROUP BY user_id
--    LIMIT 100`, no ORDER BY), so a batch of at most 100 ids is always
--    complete; rows come back in the order the ids were asked.
--  * without: `POST /v1/user/metrics/query`, offset paging with an explicit
--    sort (default `user_id` ascending, the one unique column), stopping on
--    a short page: its `count` is cached for 60 s and ignores the filter, so
--    it is never trusted.
--    Self-hosted servers from before 2025-03-29 refuse `sort` (422 "excess
--    property") and later ones until 2025-06-17 a `user_id` sort (400): when
--    the first page refuses the default sort, the listing starts again from
--    its first position without one, once, and says so in an on_event
--    "fallback" event. A sort the caller asked for is never dropped.
-- `client:query(q)` sends the seed request once, as documented, and reports
-- `truncated = true` when the 100-row cap may have hidden users.
--
-- Time windows: the seed endpoint hands `*UnixSeconds` to JavaScript's
-- `new Date()`, which reads milliseconds, so this client sends milliseconds
-- there (option `time_filter_in_seconds = true` sends seconds, for the day
-- the server is fixed). The metrics endpoint reads real seconds.
-- @module userlist.helicone
local args = require "userlist.args"
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local providers = require "userlist.providers"
local resume = require "userlist.resume"

local raise = errors.raise_invalid
local type = type

local ROW_CAP = 100 -- the seed endpoint's GROUP BY user_id LIMIT 100
local MAX_LIMIT = 1000 -- the metrics endpoint answers 400 above this
local SORT_FIELDS = {
  "id", "user_id", "active_for", "first_active", "last_active", "total_requests",
  "average_requests_per_day_active", "average_tokens_per_request", "total_prompt_tokens",
  "total_completion_tokens", "cost", "rate_limited_count",
}
-- keys of the metrics listing that mean nothing to a user_ids lookup
local METRICS_ONLY = { "limit", "sort", "filter", "time_zone_difference_minutes" }

-- Query checks --------------------------------------------------------------

local function filter_arg(f, field)
  if f ~= "all" and (type(f) ~= "table" or #f > 0) then
    raise(field, "must be \"all\" or a Helicone filter tree (a table)")
  end
  return f
end

--- The query of `users{}`, `pages{}` and `page{}` (see userlist.args).
local QUERY = args.schema{
  { name = "user_ids", type = "strings", repeatable = true, empty_ok = true,
    at = "body", wire = "userIds", flag = "--user-id",
    help = "only this user (repeat it; asked 100 ids a request)" },
  { name = "since", type = "time",
    at = "body", wire = "timeFilter.startTimeUnixSeconds", help = "users active since" },
  { name = "until", type = "time",
    at = "body", wire = "timeFilter.endTimeUnixSeconds", help = "users active until" },
  -- the server sorts by the first key of the JSON object only
  { name = "sort", type = "sort", choices = SORT_FIELDS, at = "body", wire = "sort",
    help = "FIELD or FIELD:desc, e.g. cost:desc (default user_id:asc); none: send no sort" },
  { name = "limit", type = "int", min = 1, max = MAX_LIMIT, default = MAX_LIMIT,
    at = "body", wire = "limit", help = ("users a page, 1..%d (default %d)"):format(MAX_LIMIT, MAX_LIMIT) },
  { name = "offset", type = "int", min = 0, max = 2 ^ 53, default = 0,
    at = "body", wire = "offset", help = "skip this many users first" },
  { name = "time_zone_difference_minutes", type = "int", min = -1440, max = 1440,
    at = "body", wire = "timeZoneDifferenceMinutes", flag = "--tz-minutes",
    help = "timeZoneDifferenceMinutes, -1440..1440" },
  { name = "filter", type = "table", check = filter_arg, default = "all",
    at = "body", wire = "filter", flag = false, help = "\"all\" (the default) or a Helicone filter tree" },
  args.common.max_pages, args.common.dedupe, args.common.resume, args.common.on_checkpoint,
}
-- client:query{}: the seed endpoint's own, at most 100 ids
local SEED = args.pick(QUERY, { "user_ids", "since", "until" }, { user_ids = { max = ROW_CAP } })

--- The client options Helicone adds.
local OPTIONS = {
  { name = "region", type = "enum", choices = { "us", "eu" },
    help = "us or eu (EU accounts are served by eu.api.helicone.ai)" },
  { name = "time_filter_in_seconds", type = "boolean", help = "send /v1/user/query times in seconds"
    .. " (for the day the server is fixed; it reads milliseconds today)" },
}

-- since/until (checked: seconds) -> {startTimeUnixSeconds,
-- endTimeUnixSeconds}, or nil. The server requires both: a missing since
-- is the epoch, a missing until now, which comes back second (a listing's
-- resume tokens keep it). `scale` is 1000 for the seed endpoint's
-- milliseconds bug.
local function time_filter(v, scale)
  local from, to = v.since, v["until"]
  if from == nil and to == nil then return nil end
  from = from or 0
  local now
  if to == nil then
    now = os.time() -- os.time() with no argument is the epoch clock
    to = now
  end
  if to < from then raise("until", "is before 'since'") end
  return { startTimeUnixSeconds = from * scale, endTimeUnixSeconds = to * scale }, now
end

local function sort_of(s)
  if s == nil then return { user_id = "asc" } end -- unique: a total order
  if s == false then return nil end -- no `sort` field: servers before 2025-03-29
  return s
end

-- Distinct ids, in the order first given.
local function distinct(ids)
  local seen, out = {}, {}
  for i = 1, #ids do
    local id = ids[i]
    if not seen[id] then
      seen[id] = true
      out[#out + 1] = id
    end
  end
  return out
end

local function prepare(c, q)
  local v = args.check(q, QUERY)
  local p = { max_pages = v.max_pages, dedupe = v.dedupe, offset = v.offset }
  local ids = v.user_ids
  if ids then
    if #ids == 0 then raise("user_ids", "is empty (leave it out to list every user)") end
    for _, k in ipairs(METRICS_ONLY) do
      if q[k] ~= nil then raise(k, "does not apply to a user_ids lookup (POST /v1/user/query)") end
    end
    p.mode, p.ids = "ids", distinct(ids)
    if p.offset >= #p.ids then
      raise("offset", ("is past the end of user_ids (%d distinct ids)"):format(#p.ids))
    end
    p.scale = c.options.time_filter_in_seconds and 1 or 1000
    p.time_filter, p.now = time_filter(v, p.scale)
    return p
  end
  p.mode = "metrics"
  p.limit = v.limit
  p.sort = sort_of(v.sort)
  -- only the default sort may be dropped when the server refuses it
  p.sort_is_default = q.sort == nil
  p.filter = v.filter
  p.tz = v.time_zone_difference_minutes
  p.scale = 1 -- this endpoint reads real seconds
  p.time_filter, p.now = time_filter(v, p.scale)
  return p
end

-- Rows ----------------------------------------------------------------------

-- A /v1/user/query row: {count, prompt_tokens, completion_tokens, user_id,
-- cost}; the field was cost_usd before 2025-08.
local QUERY_ROW = norm.shape{
  list = "data", ids = { "user_id" }, ints = { "count", "prompt_tokens", "completion_tokens" },
  nums = { "cost", "cost_usd" },
  copy = { { "cost", "cost", "cost_usd" }, { "id", "user_id" }, { "requests", "count" } },
  sums = { { "tokens", "prompt_tokens", "completion_tokens" } },
}

-- A /v1/user/metrics/query user; times are UTC, and the listing shifts them
-- back by what the server subtracted for timeZoneDifferenceMinutes. Some
-- server versions alias the prompt sum `total_prompt_token` and send
-- `total_prompt_tokens` as null; the server's own `id` is user_id too.
local METRIC_INTS = { "total_requests", "total_prompt_tokens", "total_prompt_token",
  "total_completion_tokens", "active_for", "rate_limited_count" }
local METRIC_NUMS = { "cost", "average_requests_per_day_active", "average_tokens_per_request" }
local METRICS_ROW = norm.shape{
  list = "data.users", ids = { "user_id", "id" }, ints = METRIC_INTS, nums = METRIC_NUMS,
  copy = { { "id", "user_id", "id" }, { "requests", "total_requests" },
    { "prompt_tokens", "total_prompt_tokens", "total_prompt_token" },
    { "completion_tokens", "total_completion_tokens" } },
  sums = { { "tokens", "prompt_tokens", "completion_tokens" } },
  times = { first_seen = "first_active", last_seen = "last_active" },
}

local function decode_error(message)
  error(errors.new{ kind = "decode", message = message }, 0)
end

local function data_of(body)
  if type(body) ~= "table" then decode_error("response is not a JSON object") end
  return body.data
end

-- Seed rows arrive in hash order: put them back in the order asked (rows
-- not asked for, which the server should never send, go last).
local function in_asked_order(rows, batch)
  local rank = {}
  for i = 1, #batch do rank[batch[i]] = i end
  local keyed = {}
  for i = 1, #rows do
    keyed[i] = { rows[i], rank[rows[i].user_id] or (#batch + i) }
  end
  table.sort(keyed, function(a, b) return a[2] < b[2] end)
  for i = 1, #rows do rows[i] = keyed[i][1] end
  return rows
end

local function query_rows(body, c, warned, shaped)
  local data = data_of(body)
  if type(data) ~= "table" then decode_error("response 'data' is not an array") end
  return norm.rows(data, QUERY_ROW, 0, 0, c, warned, shaped)
end

-- The listing ----------------------------------------------------------------

local function batch_of(p, pos)
  local batch = {}
  for i = pos + 1, math.min(pos + ROW_CAP, #p.ids) do batch[#batch + 1] = p.ids[i] end
  return batch
end

local listing = {
  prepare = prepare,
  rows = function(p)
    if p.mode == "ids" then return QUERY_ROW end
    return METRICS_ROW, 0, p.tz and math.abs(p.tz) * 60 or 0
  end,
  -- state: offset into the distinct ids, or the metrics offset
  first = function(p) return p.offset end,
  request = function(_, p, pos)
    if p.mode == "ids" then
      return { method = "POST", path = "/v1/user/query",
               json = { userIds = batch_of(p, pos), timeFilter = p.time_filter } }
    end
    return { method = "POST", path = "/v1/user/metrics/query", json = {
      filter = p.filter, offset = pos, limit = p.limit, sort = p.sort,
      timeFilter = p.time_filter, timeZoneDifferenceMinutes = p.tz,
    }, default_sort = p.sort_is_default and p.sort and p or nil, pos = pos }
  end,
  parse = function(c, body, p, pos, shaped)
    if p.mode == "ids" then
      local batch = batch_of(p, pos)
      local rows = in_asked_order(query_rows(body, c, p.warned, shaped), batch)
      local nxt = pos + #batch
      return rows, (nxt < #p.ids) and nxt or nil,
        { offset = pos, ids = #batch, truncated = false }
    end
    local data = data_of(body)
    local users = type(data) == "table" and data.users
    if type(users) ~= "table" then decode_error("response has no 'data.users' array") end
    p.read = true -- from here on a refused sort is not the fallback's to fix
    local shift = p.tz and math.abs(p.tz) * 60 or 0
    norm.rows(users, METRICS_ROW, 0, shift, c, p.warned, shaped)
    -- a short page is the last; `count` is cached and ignores the filter
    local last = #users < p.limit
    return users, (not last) and (pos + #users) or nil,
      { offset = pos, limit = p.limit, count = norm.int(data.count),
        has_users = type(data.hasUsers) == "boolean" and data.hasUsers or nil }
  end,
  -- dedupe = true: one row per user id (sorts on other fields have ties
  -- and the server no tie-breaker, and with no sort the order is undefined,
  -- so a row can repeat across pages)
  key = function(u) return u.id end,
  ahead = function(p, pos)
    if p.mode ~= "ids" then return pos + p.limit end
    return pos + ROW_CAP < #p.ids and pos + ROW_CAP or nil
  end,
  -- resume tokens (userlist.resume): the offset; the "now" that stood for a
  -- missing until ("@" seconds), so that the window does not move; "!"
  -- when the server refused the default sort (asked without from there on)
  save = function(_, p, pos)
    return ("%.0f"):format(pos) .. (p.now and ("@%.0f"):format(p.now) or "")
      .. ((p.sort_is_default and not p.sort) and "!" or "")
  end,
  load = function(_, p, s)
    local pos, now, nosort = s:match("^(%d+)@?(%d*)(!?)$")
    pos, now = tonumber(pos), tonumber(now)
    if not pos or pos > 2 ^ 53 or (now ~= nil) ~= (p.now ~= nil)
      or (p.mode == "ids" and pos >= #p.ids) or (nosort == "!" and not p.sort_is_default) then
      resume.bad("holds no position of this listing")
    end
    if now then
      p.now = now
      p.time_filter.endTimeUnixSeconds = now * p.scale
    end
    if nosort == "!" then p.sort = nil end
    return pos
  end,
}

-- The default sort refused ------------------------------------------------

-- Whether err is a server refusing the default {user_id = "asc"}: 422 with a
-- `details` entry calling `sort` an excess property (no `sort` before
-- 2025-03-29), or a 400 query error ({"error": "...", "data": null}; a
-- user_id sort failed in the database until 2025-06-17).
local function sort_refused(err)
  local b = err.body
  if type(b) ~= "table" then return false end
  if err.status == 400 then return type(b.error) == "string" end
  if err.status ~= 422 or type(b.details) ~= "table" then return false end
  for k, d in pairs(b.details) do
    local msg = type(d) == "table" and d.message
    if type(msg) == "string" and msg:find("excess property", 1, true)
      and (k == "requestBody.sort" or msg:find('"sort"', 1, true)) then
      return true
    end
  end
  return false
end

-- A metrics page sent with the default sort is marked (req.default_sort =
-- the walk's p). When the listing's first page is refused for that sort,
-- the walk drops it (p.sort = nil) and the transport asks for that page
-- again; pages fetched ahead with the sort before the refusal was known are
-- asked again without it whatever they got, so every page of the listing is
-- in one order. Once only: the request without sort carries no mark.
local function fallback(t, req, res, err)
  local p = req.default_sort
  if not p then return nil end
  if p.sort then
    if res or p.read or not sort_refused(err) then return nil end
    local refused = p.sort
    p.sort = nil
    t:emit{ type = "fallback", reason = "sort_refused", method = req.method,
            url = t:url(req), status = err.status,
            code = err.code, message = err.message, sort = refused, offset = req.pos }
  end
  local again = listing.request(nil, p, req.pos)
  again.arrived, again.rows = req.arrived, req.rows
  return again
end

local methods = {}

--- One request to the seed endpoint `POST /v1/user/query`, as documented.
-- q: `user_ids` (at most 100), `since`, `until`.
-- @return {users, truncated, status} or nil, err. `truncated` is true when
-- no `user_ids` were given and the server's 100-row cap was reached: more
-- users may exist (list them all with `users{}`).
function methods:query(q)
  return errors.protect(function()
    if q == nil then q = {} end
    local v = args.check(q, SEED)
    local ids = v.user_ids
    if ids and #ids == 0 then raise("user_ids", "is empty (leave it out to ask for every user)") end
    if ids then ids = distinct(ids) end
    local tf = time_filter(v, self.options.time_filter_in_seconds and 1 or 1000)
    local res, err = self.transport:request{ method = "POST", path = "/v1/user/query",
                                 json = { userIds = ids, timeFilter = tf } }
    if not res then error(err, 0) end
    local ok, rows = pcall(query_rows, res.body, self, {})
    if not ok then
      if errors.is(rows) then
        rows.provider, rows.method = "helicone", "POST"
        rows.url = self.base_url .. "/v1/user/query"
      end
      error(rows, 0)
    end
    if ids then in_asked_order(rows, ids) end
    return { users = rows, status = res.status, row_cap = ROW_CAP,
             truncated = ids == nil and #rows >= ROW_CAP }
  end)
end

return client.define(providers.declare{
  name = "helicone",
  env_key = "HELICONE_API_KEY",
  query = QUERY,
  options = OPTIONS,
  base_url = function(opts)
    local region = opts.region or "us"
    if region == "eu" then return "https://eu.api.helicone.ai" end
    if region == "us" then return "https://api.helicone.ai" end
    error(("userlist.helicone: bad option 'region' ('us' or 'eu' expected, got '%s')"):format(region), 3)
  end,
  listing = listing,
  methods = methods,
  fallback = fallback,
  -- database errors of the seed endpoint come back as 200 {"data": null, "error": "..."}
  check = function(res)
    local b = res.body
    if type(b) == "table" and b.error ~= nil and b.error ~= core.null then
      local msg = b.error
      if type(msg) ~= "string" then msg = core.json_encode(msg) end
      return nil, errors.new{ kind = "api", status = res.status, message = msg,
                              body = b, retryable = true }
    end
  end,
  -- 401 {"error", "trace"}; 400 {"error", "data": null} (metrics: database
  -- errors, limit > 1000); 500 {"message"}; 422 {"message", "details"};
  -- 400 plain text "Invalid token."; 404 Express HTML
  error = function(err)
    local b = err.body
    if type(b) == "table" then
      if type(b.error) == "string" then err.message = b.error
      elseif type(b.message) == "string" then err.message = b.message
      elseif err.status == 401 and b.trace == "isAuthenticated.error" then
        -- what a read-only key gets: every POST needs write permission,
        -- and both user endpoints are POST
        err.message = "Helicone needs a key with write permission for these endpoints"
      end
      if type(b.trace) == "string" then err.code = b.trace end
      if type(b.details) == "table" then
        local keys = {}
        for k in pairs(b.details) do keys[#keys + 1] = tostring(k) end
        table.sort(keys)
        if #keys > 0 then err.message = err.message .. ": " .. table.concat(keys, ", ") end
      end
    elseif type(err.raw) == "string" and err.raw ~= "" and err.kind == "http" then
      err.message = err.raw
    end
  end,
})
