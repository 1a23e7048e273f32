--- Openlayer: `POST /inference-pipelines/{pipeline_id}/users` (seed 001).
--
--    local ol = userlist.openlayer{ api_key = "...", base_url = "https://api.openlayer.com/v1" }
--    for u in ol:users{ pipeline_id = "182bd5e5-...", sort_column = "cost", asc = false } do
--      print(u.id, u.requests, u.cost)
--    end
--
-- * Query: `page` (from 1), `perPage` 1..100, `sortColumn`, `asc`; the body
--   is the seed's DatasetFilter (`{}` when there is no filter). Query keys
--   are those names in snake_case: `per_page`, `sort_column`,
--   `column_filters`, `search_query_and`, `row_id_list`, ... `per_page`
--   defaults to 100 (the server's own default is 25). Also `max_pages` and
--   `dedupe` (drop a user id seen before, as offset paging can repeat rows).
-- * No total and no next link: the last page is an empty or short one.
-- * 202 `{"success":true}` means "still loading", never an empty page: the
--   same page is asked again after a wait (client option `loading_timeout`,
--   seconds, default 60; then an error of kind "loading").
-- * The endpoint has no time filter, so `since`/`until` are refused.
-- * Errors `{"code": int, "error": string}` become err.code / err.message.
-- @module userlist.openlayer
local args = require "userlist.args"
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local providers = require "userlist.providers"
local resume = require "userlist.resume"

local raise, typename = errors.raise_invalid, args.typename
local floor, tointeger = math.floor, math.tointeger

local MAX_FILTERS = 5       -- columnFilters maxItems
local MAX_SEARCH = 300      -- search strings maxLength
local MAX_PER_PAGE = 100
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- The three column filter shapes of the DatasetFilter, by operator:
-- SetColumnFilter (an array of strings / numbers), NumericColumnFilter
-- (a number or null), StringColumnFilter (a string or a boolean). `is` and
-- `!=` belong to both of the last two.
local SET_OPS = {
  contains_none = true, contains_any = true, contains_all = true, one_of = true, none_of = true,
}
local NUMERIC_OPS = { [">"] = true, [">="] = true, ["<"] = true, ["<="] = true }
local EQUALITY_OPS = { is = true, ["!="] = true }
local OPERATORS = "contains_none, contains_any, contains_all, one_of, none_of, >, >=, <, <=, is, !="

-- One of column_filters ("column_filters[i]").
local function column_filter(f, name)
  if type(f) ~= "table" then raise(name, "must be a table {measurement=, operator=, value=}") end
  for k in pairs(f) do
    if k ~= "measurement" and k ~= "operator" and k ~= "value" then
      raise(name .. "." .. tostring(k), "is not a column filter field (measurement, operator, value)")
    end
  end
  if type(f.measurement) ~= "string" or f.measurement == "" then
    raise(name .. ".measurement", "must be a non-empty string (the column name)")
  end
  local op, v = f.operator, f.value
  if type(op) ~= "string" then raise(name .. ".operator", "must be a string, got " .. typename(op)) end
  if v == nil then raise(name .. ".value", "is required (userlist.null sends null)") end
  if SET_OPS[op] then
    local n = args.array(v, name .. ".value", "an array of strings or numbers for operator " .. op)
    if n == 0 then raise(name .. ".value", "needs at least one value for operator " .. op) end
    for j = 1, n do
      if type(v[j]) ~= "string" and type(v[j]) ~= "number" then
        raise(("%s.value[%d]"):format(name, j), "must be a string or a number, got " .. typename(v[j]))
      end
    end
  elseif NUMERIC_OPS[op] then
    if type(v) ~= "number" and v ~= core.null then
      raise(name .. ".value", "must be a number or null for operator " .. op .. ", got " .. typename(v))
    end
  elseif EQUALITY_OPS[op] then
    local t = type(v)
    if t ~= "number" and t ~= "string" and t ~= "boolean" and v ~= core.null then
      raise(name .. ".value", "must be a number, string, boolean or null for operator " .. op
        .. ", got " .. t)
    end
  else
    raise(name .. ".operator", ("is not a known operator: %s (known: %s)"):format(op, OPERATORS))
  end
  return { measurement = f.measurement, operator = op, value = v }
end

-- One of row_id_list or exclude_row_id_list ("row_id_list[i]").
local function row_id(x, name)
  if type(x) ~= "number" or x ~= floor(x) or x ~= x or x == math.huge or x == -math.huge then
    raise(name, "must be an integer, got " .. tostring(x))
  end
  return tointeger and tointeger(x) or x
end

local function search(name, wire, flag, help)
  return { name = name, type = "strings", repeatable = true, max_len = MAX_SEARCH, empty_ok = true,
    at = "body", wire = wire, flag = flag, arg = "<text>", help = help }
end

local function rows(name, wire, help)
  return { name = name, type = "list", what = "an array of integers", each = row_id, repeatable = true,
    at = "body", wire = wire, flag = false, help = help }
end

--- The query of `users{}`, `pages{}` and `page{}` (see userlist.args);
-- keys `at` "body" go in the DatasetFilter body.
local QUERY = args.schema{
  { name = "pipeline_id", type = "string", option = true, pattern = UUID, mismatch = "must be a UUID",
    required = "is required (the inference pipeline / data source id)",
    at = "path", wire = "/inference-pipelines/{id}", arg = "<uuid>",
    help = "the inference pipeline (data source) UUID; required" },
  { name = "sort_column", type = "string", at = "query", wire = "sortColumn", arg = "<column>",
    help = "id, dateOfFirstRecord, dateOfLastRecord, sessions, records, tokens or cost" },
  { name = "asc", type = "boolean", at = "query", wire = "asc", flag = "--order",
    words = { { "asc", true }, { "desc", false } }, help = "asc or desc (the server's default: asc)" },
  { name = "column_filters", type = "list", what = "an array of column filters", each = column_filter,
    max = MAX_FILTERS, noun = "filters", repeatable = true, at = "body", wire = "columnFilters",
    flag = "--where", arg = "<filter>", help = ("a column filter \"COLUMN OP VALUE\": 'records >= 10',"
      .. " 'id one_of a,b' (repeat it, at most %d)"):format(MAX_FILTERS) },
  search("search_query_and", "searchQueryAnd", "--search",
    "ids containing this text (repeat it: all must match)"),
  search("search_query_or", "searchQueryOr", "--search-any",
    "ids containing this text (repeat it: any may match)"),
  search("not_search_query_and", "notSearchQueryAnd", false, "ids without this text (all must not match)"),
  search("not_search_query_or", "notSearchQueryOr", false, "ids without this text (any must not match)"),
  rows("row_id_list", "rowIdList", "only these rows (integer row ids)"),
  rows("exclude_row_id_list", "excludeRowIdList", "not these rows (integer row ids)"),
  { name = "per_page", type = "int", min = 1, max = MAX_PER_PAGE, default = MAX_PER_PAGE, at = "query",
    wire = "perPage", help = ("users a page, 1..%d (default %d)"):format(MAX_PER_PAGE, MAX_PER_PAGE) },
  { name = "page", type = "int", min = 1, max = 2 ^ 31 - 1, default = 1, at = "query", wire = "page",
    help = "first page to ask for (from 1)" },
  args.common.max_pages, args.common.dedupe, args.common.resume, args.common.on_checkpoint,
}

--- The client options Openlayer adds.
local OPTIONS = {
  { name = "pipeline_id", type = "string", flag = false,
    help = "the inference pipeline (data source) UUID of queries that give none" },
}

local function prepare(c, q)
  for _, t in ipairs{ "since", "until" } do
    if type(q) == "table" and q[t] ~= nil then
      raise(t, "is not supported: Openlayer's users endpoint has no time filter")
    end
  end
  local v = args.check(q, QUERY, c.options)
  local p = {
    path = "/inference-pipelines/" .. v.pipeline_id .. "/users",
    page = v.page, per_page = v.per_page, sort_column = v.sort_column, asc = v.asc,
    max_pages = v.max_pages, dedupe = v.dedupe,
    body = {},
  }
  for _, e in ipairs(QUERY) do
    local list = e.at == "body" and v[e.name]
    if list and #list > 0 then p.body[e.wire] = list end
  end
  return p
end

--- One user: every Openlayer field kept (null -> nil), plus the common
-- fields: id, requests (records), sessions, tokens (a float on the wire,
-- 1122.0: an integer when whole), cost, first_seen (dateOfFirstRecord),
-- last_seen (dateOfLastRecord).
local ROW = norm.shape{
  list = "items", ids = { "id" }, ints = { "sessions", "records", "tokens" }, nums = { "cost" },
  copy = { { "requests", "records" } },
  times = { first_seen = "dateOfFirstRecord", last_seen = "dateOfLastRecord" },
}

local listing = {
  rows = function() return ROW end,
  prepare = prepare,
  first = function(p) return p.page end,
  request = function(_, p, page)
    return {
      method = "POST", path = p.path, json = p.body,
      query = { page = page, perPage = p.per_page, sortColumn = p.sort_column, asc = p.asc },
    }
  end,
  parse = function(c, body, p, page, shaped)
    local items = type(body) == "table" and body.items
    if type(items) ~= "table" then
      error(errors.new{ kind = "decode", message = "response has no 'items' array" }, 0)
    end
    norm.rows(items, ROW, 0, 0, c, p.warned, shaped)
    -- no total, no next link: a short (or empty) page is the last one
    local last = #items < p.per_page
    return items, (not last) and (page + 1) or nil, { page = page, per_page = p.per_page }
  end,
  key = function(u) return u.id end,
  ahead = function(_, page) return page + 1 end,
  -- resume tokens (userlist.resume): the page number
  save = function(_, _, page) return ("%d"):format(page) end,
  load = function(_, _, s) return resume.number(s, 1, 2 ^ 31 - 1, "page number") end,
}

return client.define(providers.declare{
  name = "openlayer",
  env_key = "OPENLAYER_API_KEY",
  query = QUERY,
  options = OPTIONS,
  base_url = function() return "https://api.openlayer.com/v1" end,
  listing = listing,
  -- 202 {"success":true}: the data is being loaded; never an empty page
  check = function(res)
    if res.status == 202 then return "loading" end
  end,
  -- {"code": int, "error": string}
  error = function(err)
    local b = err.body
    if type(b) == "table" then
      if b.code ~= nil and b.code ~= core.null then err.code = norm.id(b.code) end
      if type(b.error) == "string" then err.message = b.error end
    end
  end,
})
