--- Arthur GenAI Engine: GET /api/v1/traces/users[/{user_id}] (seed 002).
-- Rows are (user, task) pairs; task_ids is a repeated key and required; page
-- from 0; page_size 1..5000; naive times in server local time (UTC here);
-- validation errors are 400 with a plain-string detail.
local data = require "emu.data"
local util = require "emu.util"

local M = {}

local KEY = "arthur-emu-key"
local PERIOD = 15 -- task membership depends on i%3 and i%5
local fmt, concat, floor, max, min = string.format, table.concat, math.floor, math.max, math.min
local str = util.str

-- What the emulator takes from this module (spec/emulator/lua/emu/providers.lua).
M.routes = { "^/api/v1/traces/users" }
M.keys = { arthur = KEY }

local DETAIL = { [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
                 [405] = "Method Not Allowed", [500] = "Internal Server Error" }

function M.error(status, message)
  if status == 422 and not message then -- FastAPI's own shape, rarely sent by this server
    return util.json(422, '{"detail":[{"type":"missing","loc":["query","task_ids"],'
      .. '"msg":"Field required","input":null}]}')
  end
  return util.json(status, '{"detail":' .. str(message or DETAIL[status] or util.reason(status)) .. "}")
end

local function bad(message) return M.error(400, message) end

-- The rows of user i for the task set: its task numbers in `want`, ascending.
local function rows_of(i, want)
  local out = {}
  for _, t in ipairs(data.tasks(i)) do
    if want[t] then out[#out + 1] = t end
  end
  return out
end

-- Prefix counts: P(i) = rows of users 1..i, from one period of 15 users.
local function counter(want)
  local cum = { [0] = 0 }
  for r = 1, PERIOD do cum[r] = cum[r - 1] + #rows_of(r, want) end
  local per = cum[PERIOD]
  local c = { per = per }
  function c.prefix(i)
    if i <= 0 then return 0 end
    return floor(i / PERIOD) * per + cum[i % PERIOD]
  end
  -- (user index, 0-based row within the user) of global row g (0-based)
  function c.locate(g)
    local q = floor(g / per)
    local rem = g - q * per
    local r = 1
    while cum[r] <= rem do r = r + 1 end
    local i = q * PERIOD + r
    return i, g - c.prefix(i - 1)
  end
  return c
end

local function time_param(v, name)
  if v == nil then return nil end
  local t = data.parse_iso(v)
  if not t and v:match("^%d+%.?%d*$") then -- pydantic also takes a Unix timestamp
    t = tonumber(v)
    if t > 2e10 then t = t / 1000 end
  end
  if not t then
    return nil, "query." .. name .. ": Input should be a valid datetime, " .. str(v) .. " is not one"
  end
  return t
end

-- '"trace-@-01","trace-@-02",...' for n ids, made once; a row fills in "@"
-- with one gsub (a single C pass instead of n Lua strings).
local function id_list(cache, prefix, width, n)
  local t = cache[n]
  if not t then
    local parts = {}
    for k = 1, n do parts[k] = fmt('"%s@-%0' .. width .. 'd"', prefix, k) end
    t = concat(parts, ",")
    cache[n] = t
  end
  return t
end
local SESSIONS, TRACES = {}, {}

local function row(u, task, with_tokens)
  local tag = task .. "-" .. u.id:sub(6) -- "2-0000001"
  local s = '{"user_id":"' .. u.id .. '","task_id":"task-' .. task .. '","session_ids":['
    .. id_list(SESSIONS, "sess-", 1, u.sessions):gsub("@", tag) .. '],"session_count":' .. u.sessions
    .. ',"trace_ids":[' .. id_list(TRACES, "trace-", 2, u.requests):gsub("@", tag) .. '],"trace_count":'
    .. u.requests .. ',"span_count":' .. u.spans .. ',"earliest_start_time":"' .. data.naive(u.first)
    .. '","latest_end_time":"' .. data.naive(u.last) .. '"'
  if with_tokens and u.has_tokens then -- absent, never null, when unknown
    s = s .. ',"prompt_token_count":' .. u.prompt_tokens .. ',"completion_token_count":'
      .. u.completion_tokens .. ',"total_token_count":' .. u.tokens .. ',"prompt_token_cost":'
      .. data.usd(u.prompt_cost) .. ',"completion_token_cost":' .. data.usd(u.completion_cost)
      .. ',"total_token_cost":' .. data.usd(u.cost)
  end
  return s .. "}"
end

-- task_ids -> set of task numbers (unknown ids match nothing), or nil and
-- an error response: none given (400), or one of another organisation's
-- tasks ("org2-..."), which the server refuses with 403.
local function task_set(q)
  local ids = util.values(q, "task_ids")
  if #ids == 0 then return nil, bad("query.task_ids: Field required") end
  local want = {}
  for _, id in ipairs(ids) do
    if id:find("^org2%-") then
      return nil, M.error(403, "task_ids include items outside the caller's org")
    end
    local t = tonumber(id:match("^task%-([123])$"))
    if t then want[t] = true end
  end
  return want
end

local function list(req, ctx)
  local q = req.query
  if #util.values(q, "task_ids") == 0 then return bad("query.task_ids: Field required") end
  local page, size = util.last(q, "page"), util.last(q, "page_size")
  page = page == nil and 0 or util.int(page)
  size = size == nil and 10 or util.int(size)
  if not page then return bad("query.page: Input should be a valid integer") end
  if page < 0 then return bad("page must be greater than or equal to 0") end
  if not size then return bad("query.page_size: Input should be a valid integer") end
  if size < 1 or size > 5000 then
    -- the server's own words; 5000 itself is accepted
    return bad("Invalid page size, must be greater than 0 and less than 5000")
  end
  local sort = util.last(q, "sort") or "desc"
  if sort ~= "asc" and sort ~= "desc" then
    return bad("query.sort: Input should be 'asc' or 'desc'")
  end
  local from, err = time_param(util.last(q, "start_time"), "start_time")
  if err then return bad(err) end
  local to
  to, err = time_param(util.last(q, "end_time"), "end_time")
  if err then return bad(err) end
  -- the parameters are valid; now the caller's rights on the tasks
  local want, refused = task_set(q)
  if not want then return refused end

  -- earliest_start_time = BASE + 60 i: the window is a range of indices
  local a, b = 1, ctx.users
  if from then a = max(a, math.ceil((from - data.BASE) / 60)) end
  if to then b = min(b, floor((to - data.BASE) / 60)) end
  local c = counter(want)
  local base, count = 0, 0
  if a <= b and c.per > 0 then
    base = c.prefix(a - 1)
    count = c.prefix(b) - base
  end

  local out = {}
  local first = page * size
  local n = min(size, count - first)
  if n > 0 then
    local asc = sort == "asc"
    local i, j = c.locate(base + (asc and first or (count - 1 - first)))
    local rows = rows_of(i, want)
    for _ = 1, n do
      out[#out + 1] = row(data.user(i), rows[j + 1], true)
      if asc then
        j = j + 1
        while j >= #rows do i, j = i + 1, 0 rows = rows_of(i, want) end
      else
        j = j - 1
        while j < 0 do
          i = i - 1
          if i < 1 then break end
          rows = rows_of(i, want)
          j = #rows - 1
        end
      end
    end
  end
  -- a list of pieces: the writer sends them without joining 3 MB in Lua
  local body = { '{"count":' .. count .. ',"display_currency":"USD","users":[' }
  for k, r in ipairs(out) do
    if k > 1 then body[#body + 1] = "," end
    body[#body + 1] = r
  end
  body[#body + 1] = "]}"
  return util.json(200, body)
end

local function detail(req, ctx, raw_id)
  local want, refused = task_set(req.query)
  if not want then return refused end
  local id = util.unescape_path(raw_id)
  local i = data.index(id)
  local rows = (i and i <= ctx.users) and rows_of(i, want) or {}
  if #rows == 0 then return M.error(404, "User " .. id .. " not found or has no data") end
  -- with several tasks the server picks one row; here the lowest task number
  return util.json(200, row(data.user(i), rows[1], false))
end

function M.handle(req, ctx)
  local raw_id = req.path:match("^/api/v1/traces/users/(.+)$")
  if not raw_id and req.path ~= "/api/v1/traces/users" then return M.error(404, "Not Found") end
  if req.method ~= "GET" then return M.error(405, "Method Not Allowed") end
  local key, sent = util.bearer(req.headers, true)
  if not key then return M.error(401, "Requires authentication") end
  if key ~= KEY then return M.error(401, sent and "Bad credentials" or "Requires authentication") end
  if raw_id then return detail(req, ctx, raw_id) end
  return list(req, ctx)
end

return M
