--- Helicone: POST /v1/user/query (seed 000) and POST /v1/user/metrics/query.
-- Quirks kept: LIMIT 100 with no order, *UnixSeconds read as milliseconds on
-- the seed endpoint, 422 on unknown body fields, `count` ignoring the filter,
-- limit > 1000 -> 400, database errors as 200 {"data":null,"error":...} on the
-- seed endpoint and 400 on metrics, the first `sort` key only, no sort =
-- last_active desc, timeZoneDifferenceMinutes subtracted whatever its sign.
-- A read-only key gets 401 {"error":null,...}: every POST needs write
-- permission. Header `X-Emu-Helicone-Version: YYYY-MM-DD` plays a server
-- built that day: before 2025-03-29 `sort` is an excess property (422),
-- before 2025-06-17 a `user_id` sort fails with 400.
local data = require "emu.data"
local order = require "emu.order"
local store = require "emu.store"
local util = require "emu.util"

local M = {}

local KEY = "sk-helicone-emu"
-- read-only: a real key's shape (sk-helicone- and four groups of seven)
local READ_ONLY_KEY = "sk-helicone-emu0000-read000-only000-0000000"
local SORT_SINCE, USER_ID_SORT_SINCE = "2025-03-29", "2025-06-17"
local ROW_CAP = 100
local WINDOW = 300 -- seconds: the rate limit is per organisation per 5 minutes

local fmt, concat, floor, max, min = string.format, table.concat, math.floor, math.max, math.min
local str = util.str

-- What the emulator takes from this module (spec/emulator/lua/emu/providers.lua).
M.routes = { "^/v1/user/", "^/v1/user$" }
M.keys = { helicone = KEY, helicone_read_only = READ_ONLY_KEY }

local function natural(v) return type(v) == "number" and v >= 0 and v == floor(v) end
local function boolean(v) return type(v) == "boolean" end
M.config = {
  helicone_error = { false, function(v) return v == false or type(v) == "string" end },
  helicone_string_totals = { false, boolean },
  helicone_cost_field = { "cost", function(v) return v == "cost" or v == "cost_usd" end },
  helicone_blank_user = { false, boolean },
  helicone_rate_limit = { 10000, natural },
}

--- Fault `helicone_error`: a database error as the seed endpoint answers it.
M.faults = {
  helicone_error = {
    check = function(v) return type(v) == "boolean" or type(v) == "string" end,
    response = function(v, status)
      local msg = type(v) == "string" and v or "Error executing query: emulated database error"
      return util.json(status or 200, '{"data":null,"error":' .. str(msg) .. "}")
    end,
  },
}

local SORT_KEYS = {
  id = false, user_id = false, first_active = false, -- grow with the index
  active_for = function(u) return u.active_for end,
  last_active = function(u) return u.last end,
  total_requests = function(u) return u.requests end,
  average_requests_per_day_active = function(u) return u.requests / max(u.active_for, 1) end,
  average_tokens_per_request = function(u) return u.tokens / u.requests end,
  total_prompt_tokens = function(u) return u.prompt_tokens end,
  total_completion_tokens = function(u) return u.completion_tokens end,
  cost = function(u) return u.cost end,
  rate_limited_count = function(u) return u.rate_limited or 0 end,
}

-- Errors ------------------------------------------------------------------

function M.error(status, message)
  if status == 400 then -- the auth middleware's catch-all answers plain text
    return { status = 400, body = "Invalid token.", ctype = "text/html; charset=utf-8", headers = {} }
  elseif status == 401 then
    return util.json(401, '{"error":' .. str(message or "Unauthorized")
      .. ',"trace":"isAuthenticated.error"}')
  elseif status == 422 then
    return util.json(422, '{"message":"Validation Failed","details":{}}')
  elseif status == 429 then
    return util.json(429, '{"error":"Too many requests, please try again later."}',
      { ["Retry-After"] = "1" })
  elseif status >= 500 then
    return util.json(status, '{"message":"Internal Server Error","error":'
      .. str(message or util.reason(status)) .. "}")
  end
  return util.json(status, '{"error":' .. str(message or util.reason(status)) .. "}")
end

-- tsoa's validation answer: {"message":"Validation Failed","details":{path: {message, value}}}
local function invalid(details)
  return util.json(422, '{"message":"Validation Failed","details":' .. util.encode(details) .. "}")
end

-- Express answers an unknown route with its own HTML page.
local function no_route(req)
  return { status = 404, ctype = "text/html; charset=utf-8", headers = {}, body =
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    .. "</head>\n<body>\n<pre>Cannot " .. req.method .. " " .. req.path .. "</pre>\n</body>\n</html>\n" }
end

local function db_error(status, message)
  return util.json(status, '{"error":' .. str(message) .. ',"data":null}')
end

-- Validation ----------------------------------------------------------------

local function excess(details, prefix, obj, allowed)
  for k, v in pairs(obj) do
    if not allowed[k] then
      details[prefix .. "." .. k] = {
        message = '"' .. k .. '" is an excess property and therefore is not allowed', value = v }
    end
  end
end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function check_number(details, path, v, required)
  if v == nil then
    if required then details[path] = { message = "'" .. path:match("[^.]+$") .. "' is required" } end
  elseif type(v) ~= "number" then
    details[path] = { message = "invalid float number", value = v }
  end
end

local function check_time_filter(details, tf)
  local p = "requestBody.timeFilter"
  if tf == nil then return end
  if type(tf) ~= "table" or is_list(tf) and #tf > 0 then
    details[p] = { message = "invalid object", value = tf }
    return
  end
  excess(details, p, tf, { startTimeUnixSeconds = true, endTimeUnixSeconds = true })
  check_number(details, p .. ".startTimeUnixSeconds", tf.startTimeUnixSeconds, true)
  check_number(details, p .. ".endTimeUnixSeconds", tf.endTimeUnixSeconds, true)
end

-- SQL LIKE -> an anchored Lua pattern.
local function like_pattern(s)
  local out = { "^" }
  for c in s:gmatch(".") do
    if c == "%" then out[#out + 1] = ".*"
    elseif c == "_" then out[#out + 1] = "."
    elseif c:match("%W") then out[#out + 1] = "%" .. c
    else out[#out + 1] = c end
  end
  out[#out + 1] = "$"
  return concat(out)
end

local TEXT = { user_user_id = true, user_id = true }
local TIME = { user_first_active = "first", user_last_active = "last",
               request_created_at = "first" }
local NUM = {
  user_active_for = function(u) return u.active_for end,
  user_total_requests = function(u) return u.requests end,
  user_average_requests_per_day_active = SORT_KEYS.average_requests_per_day_active,
  user_average_tokens_per_request = SORT_KEYS.average_tokens_per_request,
  user_total_completion_tokens = function(u) return u.completion_tokens end,
  user_total_prompt_tokens = function(u) return u.prompt_tokens end,
  user_cost = function(u) return u.cost / 1e6 end,
}
local CMP = {
  equals = function(a, b) return a == b end, ["not-equals"] = function(a, b) return a ~= b end,
  gte = function(a, b) return a >= b end, lte = function(a, b) return a <= b end,
  gt = function(a, b) return a > b end, lt = function(a, b) return a < b end,
}

-- One leaf test, or nil for a field this emulator does not model (ignored).
local function leaf_test(field, op, v)
  if TEXT[field] and type(v) == "string" then
    if op == "equals" then return function(u) return u.id == v end end
    if op == "not-equals" then return function(u) return u.id ~= v end end
    if op == "contains" then return function(u) return u.id:find(v, 1, true) ~= nil end end
    if op == "not-contains" then return function(u) return u.id:find(v, 1, true) == nil end end
    if op == "like" then
      local p = like_pattern(v)
      return function(u) return u.id:match(p) ~= nil end
    end
    if op == "ilike" then
      local p = like_pattern(v:lower())
      return function(u) return u.id:lower():match(p) ~= nil end
    end
  elseif NUM[field] and type(v) == "number" and CMP[op] then
    local get, cmp = NUM[field], CMP[op]
    return function(u) return cmp(get(u), v) end
  elseif TIME[field] and CMP[op] then
    local t = data.parse_iso(v)
    if t then
      local f, cmp = TIME[field], CMP[op]
      return function(u) return cmp(u[f], t) end
    end
  end
  return nil
end

-- A filter tree ("all", a leaf {table: {field: {op: value}}}, or a branch
-- {left, operator, right}) -> predicate; nil when it is not a filter tree.
local function compile(node)
  if node == "all" then return function() return true end end
  if type(node) ~= "table" then return nil end
  if node.operator ~= nil then
    local l, r = compile(node.left), compile(node.right)
    if not l or not r then return nil end
    if node.operator == "and" then return function(u) return l(u) and r(u) end end
    if node.operator == "or" then return function(u) return l(u) or r(u) end end
    return nil
  end
  local tests = {}
  for _, fields in pairs(node) do
    if type(fields) ~= "table" then return nil end
    for field, ops in pairs(fields) do
      if type(ops) ~= "table" then return nil end
      for op, v in pairs(ops) do tests[#tests + 1] = leaf_test(field, op, v) end
    end
  end
  return function(u)
    for _, t in ipairs(tests) do
      if not t(u) then return false end
    end
    return true
  end
end

-- Rows ----------------------------------------------------------------------

local function totals_format(cfg) return cfg.helicone_string_totals and '"%d"' or "%d" end

local function query_row(u, cfg)
  local q = totals_format(cfg)
  return fmt('{"count":' .. q .. ',"prompt_tokens":' .. q .. ',"completion_tokens":' .. q
    .. ',"user_id":%s,"%s":%s}', u.requests, u.prompt_tokens, u.completion_tokens,
    str(u.id), cfg.helicone_cost_field, data.usd(u.cost))
end

-- data.iso_ms with the date part cached: a million-user listing formats two
-- times per row.
local day_prefix, days_cached = {}, 0
local function iso_ms(t)
  if t ~= floor(t) then return data.iso_ms(t) end
  local day = floor(t / 86400)
  local p = day_prefix[day]
  if not p then
    p = data.iso(day * 86400):sub(1, 11) -- "2025-01-01T"
    if days_cached >= 4096 then day_prefix, days_cached = {}, 0 end
    day_prefix[day], days_cached = p, days_cached + 1
  end
  local s = t - day * 86400
  return fmt("%s%02d:%02d:%02d.000Z", p, floor(s / 3600), floor(s % 3600 / 60), s % 60)
end

-- first_active/last_active: ClickHouse DateTime minus `shift` seconds (see
-- metrics_query), read by JavaScript's new Date() in a UTC process and sent
-- as toISOString(). active_for and rate_limited_count are passed through
-- from ClickHouse unconverted, so they are strings with string totals too.
local function metrics_row(u, cfg, shift)
  local q = totals_format(cfg)
  local s = fmt('{"id":"%s","user_id":"%s","active_for":' .. q .. ',"first_active":"%s",'
    .. '"last_active":"%s","total_requests":' .. q .. ',"average_requests_per_day_active":%.4f,'
    .. '"average_tokens_per_request":%.4f,"total_prompt_tokens":' .. q
    .. ',"total_completion_tokens":' .. q .. ',"cost":%s',
    u.id, u.id, u.active_for, iso_ms(u.first - shift), iso_ms(u.last - shift), u.requests,
    u.requests / max(u.active_for, 1), u.tokens / u.requests, u.prompt_tokens,
    u.completion_tokens, data.usd(u.cost))
  if u.rate_limited then s = s .. ',"rate_limited_count":' .. fmt(q, u.rate_limited) end
  return s .. "}"
end

-- Endpoints -----------------------------------------------------------------

-- POST /v1/user/query: GROUP BY user_id LIMIT 100, no ORDER BY.
local function user_query(body, ctx)
  local details = {}
  excess(details, "requestBody", body, { userIds = true, timeFilter = true })
  if body.userIds ~= nil then
    if not is_list(body.userIds) then
      details["requestBody.userIds"] = { message = "invalid array", value = body.userIds }
    else
      for i, v in ipairs(body.userIds) do
        if type(v) ~= "string" then
          details["requestBody.userIds.$" .. (i - 1)] = { message = "invalid string value", value = v }
        end
      end
    end
  end
  check_time_filter(details, body.timeFilter)
  if next(details) then return invalid(details) end
  if ctx.cfg.helicone_error then -- database errors: 200 with `error` (no setStatus)
    return util.json(200, '{"data":null,"error":' .. str(ctx.cfg.helicone_error) .. "}")
  end

  local cfg, n = ctx.cfg, ctx.users
  -- the bug: *UnixSeconds go to new Date(), which reads milliseconds
  local from, to = -math.huge, math.huge
  if body.timeFilter then
    from = body.timeFilter.startTimeUnixSeconds / 1000
    to = body.timeFilter.endTimeUnixSeconds / 1000
  end
  local function active(u) return u.last >= from and u.first <= to end

  local rows = {}
  local ids = body.userIds
  if ids and #ids > 0 then
    local seen, idx = {}, {}
    for _, id in ipairs(ids) do
      local i = data.index(id)
      if i and i <= n and not seen[i] then seen[i], idx[#idx + 1] = true, i end
      if id == "" and cfg.helicone_blank_user and not seen[0] then
        seen[0] = true -- the requests sent with no user id
        rows[#rows + 1] = query_row({ id = "", requests = 7, prompt_tokens = 700,
                                      completion_tokens = 350, cost = 7350 }, cfg)
      end
    end
    -- no ORDER BY: rows come back in hash order, not the order asked
    table.sort(idx, function(a, b)
      local ha, hb = data.hash(a), data.hash(b)
      if ha ~= hb then return ha < hb end
      return a < b
    end)
    for _, i in ipairs(idx) do
      local u = data.user(i)
      if active(u) then rows[#rows + 1] = query_row(u, cfg) end
      if #rows == ROW_CAP then break end
    end
  else
    -- only users whose activity can reach the window (first activity grows with i)
    local lo = max(1, math.ceil((from - data.MAX_SPAN_HOURS * 3600 - data.BASE) / 60))
    local hi = min(n, floor((to - data.BASE) / 60))
    if cfg.helicone_blank_user then -- requests sent with no user id
      rows[1] = query_row({ id = "", requests = 7, prompt_tokens = 700, completion_tokens = 350,
                            cost = 7350 }, cfg)
    end
    if lo <= hi then
      local at = order.scramble(lo, hi, n)
      for k = 0, hi - lo do
        if #rows >= ROW_CAP then break end
        local u = data.user(at(k))
        if active(u) then rows[#rows + 1] = query_row(u, cfg) end
      end
    end
  end
  return util.json(200, '{"data":[' .. concat(rows, ",") .. '],"error":null}')
end

-- The key the server sorts by: Object.keys(sort)[0], the first key in the
-- JSON text (cjson's table has no order, so the raw body is read).
local function first_sort_key(raw, sort)
  local best
  for pos, key in raw:gmatch('"sort"%s*:%s*{%s*()"([^"\\]*)"') do
    if sort[key] ~= nil and (not best or pos < best[1]) then best = { pos, key } end
  end
  if best then return best[2] end
  local names = {}
  for k in pairs(sort) do names[#names + 1] = k end
  table.sort(names)
  return names[1]
end

-- POST /v1/user/metrics/query: offset paging; `count` ignores the filter.
local function metrics_query(body, ctx, req)
  local details = {}
  local version = ctx.helicone_version
  -- servers before SORT_SINCE have no `sort` and refuse it as any unknown field
  excess(details, "requestBody", body, { filter = true, offset = true, limit = true,
    timeFilter = true, timeZoneDifferenceMinutes = true, sort = version >= SORT_SINCE })
  check_number(details, "requestBody.offset", body.offset, true)
  check_number(details, "requestBody.limit", body.limit, true)
  check_number(details, "requestBody.timeZoneDifferenceMinutes", body.timeZoneDifferenceMinutes)
  check_time_filter(details, body.timeFilter)
  local pred
  if body.filter == nil then
    details["requestBody.filter"] = { message = "'filter' is required" }
  else
    pred = compile(body.filter)
    if not pred then
      details["requestBody.filter"] = {
        message = "Could not match the union against any of the items.", value = body.filter }
    end
  end
  -- no sort: the server's default {last_active: "desc"}
  local field, asc = "last_active", false
  if body.sort ~= nil and version >= SORT_SINCE then
    if type(body.sort) ~= "table" or (is_list(body.sort) and #body.sort > 0) then
      details["requestBody.sort"] = { message = "invalid object", value = body.sort }
    else
      local names = {}
      for k, v in pairs(body.sort) do
        if SORT_KEYS[k] == nil then
          details["requestBody.sort." .. k] = {
            message = '"' .. k .. '" is an excess property and therefore is not allowed', value = v }
        elseif v ~= "asc" and v ~= "desc" then
          details["requestBody.sort." .. k] = {
            message = "should be one of the following; ['asc','desc']", value = v }
        end
        names[#names + 1] = k
      end
      field = #names > 0 and first_sort_key(req.body, body.sort) or nil
      asc = field and body.sort[field] == "asc"
    end
  end
  if next(details) then return invalid(details) end

  local limit, offset = body.limit, body.offset
  if limit > 1000 then return db_error(400, "Limit cannot be greater than 1000") end
  if limit < 0 or offset < 0 or limit ~= floor(limit) or offset ~= floor(offset) then
    -- ClickHouse refuses these; the controller turns result errors into 400
    return util.json(400, '{"data":null,"error":"Error executing query: LIMIT and OFFSET must be'
      .. ' non-negative integers"}')
  end
  if ctx.cfg.helicone_error then -- the controller answers result errors with 400
    return db_error(400, ctx.cfg.helicone_error)
  end
  if field == "user_id" and version < USER_ID_SORT_SINCE then
    -- the sort's ORDER BY user_id failed in ClickHouse; a result error is a 400
    return db_error(400, "Error executing query: Code: 215. DB::Exception: Column `user_id`"
      .. " is not under aggregate function and not in GROUP BY keys")
  end

  local cfg, n = ctx.cfg, ctx.users
  local window
  if body.timeFilter then -- this endpoint reads real seconds (gt / lt)
    local from, to = body.timeFilter.startTimeUnixSeconds, body.timeFilter.endTimeUnixSeconds
    window = function(u) return u.last > from and u.first < to end
  end
  -- toDateTime(min(t) - INTERVAL |tz| minute) for tz > 0, and
  -- toDateTime(min(t) + INTERVAL 'tz minute') for tz <= 0: both subtract |tz|
  local shift = math.abs(body.timeZoneDifferenceMinutes or 0) * 60
  if body.filter == "all" then pred = nil end

  local at
  if field then
    local key = SORT_KEYS[field]
    at = order.at(n, "helicone:" .. field,
      key and function(i) return key(data.user(i)) end or nil, asc)
  else
    -- sort {}: ORDER BY a constant, the order is undefined; it changes from
    -- request to request
    local r = n > 0 and (ctx.seq * 7919) % n or 0
    at = function(k) return (k - 1 + r) % n + 1 end
  end

  local rows = {}
  if not pred and not window then
    for k = offset + 1, min(n, offset + limit) do
      rows[#rows + 1] = metrics_row(data.user(at(k)), cfg, shift)
    end
  elseif limit > 0 then
    local skipped = 0
    for k = 1, n do
      local u = data.user(at(k))
      if (not pred or pred(u)) and (not window or window(u)) then
        if skipped < offset then
          skipped = skipped + 1
        else
          rows[#rows + 1] = metrics_row(u, cfg, shift)
          if #rows >= limit then break end
        end
      end
    end
  end
  return util.json(200, '{"data":{"users":[' .. concat(rows, ",") .. '],"count":' .. n
    .. ',"hasUsers":' .. tostring(n > 0) .. '},"error":null}')
end

local ROUTES = { ["/v1/user/query"] = user_query, ["/v1/user/metrics/query"] = metrics_query }

local function window(ctx)
  if not ctx.window then
    local count, reset = store.window("helicone", WINDOW)
    ctx.window = { count = count, reset = reset }
  end
  return ctx.window
end

function M.handle(req, ctx)
  local route = ROUTES[req.path]
  if not route or req.method ~= "POST" then return no_route(req) end
  local key, sent = util.bearer(req.headers, true)
  if key == READ_ONLY_KEY then -- every POST needs write permission; `error` is null
    return util.json(401, '{"error":null,"trace":"isAuthenticated.error"}')
  end
  if key ~= KEY then
    return M.error(401, sent and "Invalid API key" or "No authorization header")
  end
  local version = req.headers["x-emu-helicone-version"] or "9999-12-31" -- today's server
  if not version:match("^%d%d%d%d%-%d%d%-%d%d$") then
    return util.emu_error(400, "X-Emu-Helicone-Version must be a date YYYY-MM-DD")
  end
  ctx.helicone_version = version
  local w = window(ctx)
  if ctx.cfg.rate_limit_enforce and w.count > ctx.cfg.helicone_rate_limit then
    local res = M.error(429)
    res.headers["Retry-After"] = tostring(w.reset)
    return res
  end
  if req.body:match("^%s*$") then
    return invalid({ requestBody = { message = "'requestBody' is required" } })
  end
  local body, err = util.decode(req.body)
  if body == nil then -- body-parser's SyntaxError, rendered by Express
    return { status = 400, ctype = "text/html; charset=utf-8", headers = {},
             body = "<pre>SyntaxError: " .. tostring(err) .. "</pre>\n" }
  end
  if type(body) ~= "table" or (is_list(body) and #body > 0) then
    return invalid({ requestBody = { message = "invalid object", value = body } })
  end
  return route(body, ctx, req)
end

--- Every response carries the draft-6 RateLimit-* headers.
function M.decorate(res, ctx)
  local w, limit, f = window(ctx), ctx.cfg.helicone_rate_limit, ctx.fault or {}
  local h = res.headers
  h["RateLimit-Policy"] = limit .. ";w=" .. WINDOW
  h["RateLimit-Limit"] = tostring(limit)
  h["RateLimit-Remaining"] = tostring(f.rate_limit_remaining or max(0, limit - w.count))
  h["RateLimit-Reset"] = tostring(f.rate_limit_reset or w.reset)
end

return M
