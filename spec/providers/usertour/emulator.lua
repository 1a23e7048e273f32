--- Usertour: v1 /v1/users[/{id}] (seed 003) and v2
-- /v2/projects/{p}/environments/{e}/users[/{id}]. Cursor paging where the
-- cursor is the id of the last item seen and `next` is a relative link.
-- Upserts and deletes live in the shared dict until /_emu/reset.
--
-- Positions: generated user i sits at position i (1..N); users created by
-- upsert follow at N + seq. Ascending createdAt is ascending position.
-- luacheck: read globals ngx
local data = require "emu.data"
local store = require "emu.store"
local util = require "emu.util"

local M = {}

local dict = ngx.shared.emu
local KEY_V1, KEY_V2 = "emu", "utp_emu" -- v1's guard strips an optional "ak_"
local DOC = "https://docs.usertour.io"
local COMPANY_BASE = 1733011200 -- 2024-12-01T00:00:00Z: builtin company co-k is k hours later
local fmt, concat, floor, max, min = string.format, table.concat, math.floor, math.max, math.min
local str = util.str

-- What the emulator takes from this module (spec/emulator/lua/emu/providers.lua).
M.routes = { "^/v1/users$", "^/v1/users/", "^/v2/" }
M.keys = { usertour = "ak_" .. KEY_V1, usertour_v2 = KEY_V2 }
M.config = {
  usertour_rate_limit = { 3000, function(v) return type(v) == "number" and v >= 0 and v == floor(v) end },
}

local MESSAGES = {
  E0000 = "An unknown error has occurred. The Usertour team is working quickly to resolve it."
    .. " Please try again later.",
  E1000 = "Invalid API key provided", E1001 = "User not found", E1002 = "Company not found",
  E1007 = "Invalid cursor parameter", E1010 = "Missing API key", E1013 = "Too many requests",
  E1014 = "Service unavailable", E1017 = "Validation error", E1025 = "Segment not found",
  E1033 = "Unknown API route",
}
local CODES = { [400] = "E1017", [401] = "E1010", [403] = "E1000", [404] = "E1001",
                [429] = "E1013", [503] = "E1014" }
local EXPAND = { companies = true, memberships = true, ["memberships.company"] = true }

local function err(status, code, message, issues)
  local s = '{"error":{"code":"' .. code .. '","message":' .. str(message or MESSAGES[code])
  if issues then s = s .. ',"issues":' .. util.encode(util.array(issues)) end
  return util.json(status, s .. ',"doc_url":"' .. DOC .. '"}}')
end

function M.error(status, message)
  local res = err(status, CODES[status] or "E0000", message)
  if status == 429 then res.headers["Retry-After"] = "1" end
  return res
end

local function invalid(message, v2, path)
  return err(400, "E1017", message, v2 and { { rule = "schema", message = message, path = path } } or nil)
end

local function empty_page() return util.json(200, '{"results":[],"next":null,"previous":null}') end

-- State -------------------------------------------------------------------
-- ut:u:<id> record: generated override {attributes, companies}, {deleted},
-- or created user {seq, created (ms), attributes, companies};
-- ut:new:<seq> = id; ut:touch:<k> = every upserted id; ut:co:<id> = company.

local function view(ctx)
  local v = { N = ctx.users, dirty = dict:get("ut:dirty"), nseq = dict:get("ut:nseq") or 0, recs = {} }
  v.P = v.N + v.nseq
  return v
end

local function record(v, id)
  if not v.dirty then return nil end
  local r = v.recs[id]
  if r == nil then
    local s = dict:get("ut:u:" .. id)
    r = s and util.decode(s) or false
    v.recs[id] = r
  end
  return r or nil
end

-- The visible user at position p, or nil.
local function at(v, p)
  if p <= v.N then
    local id = data.id(p)
    local r = record(v, id)
    if r and (r.deleted or r.seq) then return nil end
    return { pos = p, id = id, i = p, rec = r }
  end
  local s = p - v.N
  local id = v.dirty and dict:get("ut:new:" .. s)
  local r = id and record(v, id)
  if not r or r.deleted or r.seq ~= s then return nil end
  return { pos = p, id = id, rec = r }
end

-- The position of a visible user id, or nil.
local function position(v, id)
  local r = record(v, id)
  if r then
    if r.deleted then return nil end
    if r.seq then return v.N + r.seq end
  end
  local i = data.index(id)
  if i and i <= v.N then return i end
  return nil
end

local function created_ms(u) return u.i and data.created(u.i) * 1000 or u.rec.created end

local function email_of(u)
  local a = u.rec and u.rec.attributes
  if a and a.email ~= nil then return type(a.email) == "string" and a.email or nil end
  return u.i and data.email(u.i) or nil
end

local function companies_of(u)
  local out, seen = {}, {}
  for _, list in ipairs{ u.i and data.companies(u.i) or {}, u.rec and u.rec.companies or {} } do
    for _, c in ipairs(list) do
      if not seen[c] then seen[c], out[#out + 1] = true, c end
    end
  end
  return out
end

local function matches(u, f)
  if f.email and email_of(u) ~= f.email then return false end
  if f.segment and not (u.i and u.i % 5 == f.segment) then return false end
  if f.after or f.before then
    local t = created_ms(u)
    if (f.after and t < f.after) or (f.before and t > f.before) then return false end
  end
  if f.company then
    for _, c in ipairs(companies_of(u)) do
      if c == f.company then return true end
    end
    return false
  end
  return true
end

-- Where to look: a sorted list of candidate positions (email, or a company
-- only upserts know), or the generated range [glo, ghi] plus the created users.
local function scope(v, f)
  if f.after then v.glo = max(1, math.ceil((f.after / 1000 - data.BASE) / 60)) else v.glo = 1 end
  if f.before then v.ghi = min(v.N, floor((f.before / 1000 - data.BASE) / 60)) else v.ghi = v.N end
  if v.glo > v.ghi then v.glo, v.ghi = v.N + 1, v.N end
  if not (f.email or (f.company and not f.company:match("^co%-%d$"))) then return end
  local set, list = {}, {}
  local i = f.email and data.index_of_email(f.email)
  if i and i <= v.N then set[i] = true end
  for k = 1, dict:get("ut:ntouch") or 0 do
    local id = dict:get("ut:touch:" .. k)
    local p = id and position(v, id)
    if p then set[p] = true end
  end
  for p in pairs(set) do list[#list + 1] = p end
  table.sort(list)
  v.list = list
end

-- The next position after p in direction d (+1/-1) within scope, or nil.
local function step(v, p, d)
  local list = v.list
  if list then
    local lo, hi = 1, #list -- binary search: first > p, or last < p
    if d > 0 then
      while lo <= hi do
        local m = floor((lo + hi) / 2)
        if list[m] > p then hi = m - 1 else lo = m + 1 end
      end
      return list[lo]
    end
    while lo <= hi do
      local m = floor((lo + hi) / 2)
      if list[m] < p then lo = m + 1 else hi = m - 1 end
    end
    return list[hi]
  end
  p = p + d
  if d > 0 then
    if p < v.glo then p = v.glo end
    if p > v.ghi and p <= v.N then p = v.N + 1 end
    if p > v.P then return nil end
  else
    if p > v.P then p = v.P end
    if p <= v.N and p > v.ghi then p = v.ghi end
    if p < v.glo then return nil end
  end
  return p
end

-- Up to n matching users after position `from`, in direction d.
local function collect(v, f, from, d, n)
  local out = {}
  local p = step(v, from, d)
  while p and #out < n do
    local u = at(v, p)
    if u and matches(u, f) then out[#out + 1] = u end
    p = step(v, p, d)
  end
  return out
end

-- Rendering -----------------------------------------------------------------

local function company_json(cid)
  local k = cid:match("^co%-(%d)$")
  if k then
    return fmt('{"id":"%s","object":"company","attributes":{"name":"Company %s"},"createdAt":"%s"}',
      cid, k, data.iso_ms(COMPANY_BASE + 3600 * tonumber(k)))
  end
  local s = dict:get("ut:co:" .. cid)
  local c = s and util.decode(s) or {}
  return '{"id":' .. str(cid) .. ',"object":"company","attributes":' .. util.encode(c.attributes or {})
    .. ',"createdAt":"' .. data.iso_ms((c.created or 0) / 1000) .. '"}'
end

-- A generated user's attributes carry first_seen_at / last_seen_at, as
-- current servers keep them (data.seen); users made by upsert have none
-- unless they set them.
local function attributes_json(u)
  local a = u.rec and u.rec.attributes
  if not a or next(a) == nil then
    if u.i then
      local first, last = data.seen(u.i)
      return fmt('{"name":"User %07d","email":"user%07d@example.com","plan":"%s",'
        .. '"first_seen_at":"%s","last_seen_at":"%s"}', u.i, u.i,
        data.PLANS[data.hash(u.i) % 3 + 1], data.iso_ms(first), data.iso_ms(last))
    end
    return "{}"
  end
  local merged = {}
  if u.i then
    merged.name, merged.email = data.name(u.i), data.email(u.i)
    merged.plan = data.PLANS[data.hash(u.i) % 3 + 1]
    local first, last = data.seen(u.i)
    merged.first_seen_at, merged.last_seen_at = data.iso_ms(first), data.iso_ms(last)
  end
  for k, x in pairs(a) do merged[k] = x end
  return util.encode(merged)
end

-- expand: set of names; v2 memberships carry external ids, v1 internal ones.
local function render(u, expand, v2)
  local created = data.iso_ms(created_ms(u) / 1000)
  local companies, memberships = "null", "null"
  if expand.companies or expand.memberships or expand["memberships.company"] then
    local cs, ms = {}, {}
    for k, cid in ipairs(companies_of(u)) do
      cs[k] = company_json(cid)
      local m = '{"id":' .. str("mem-" .. u.id .. "-" .. cid) .. ',"object":"companyMembership",'
        .. '"attributes":{},"createdAt":"' .. created .. '","companyId":'
        .. str(v2 and cid or "int-" .. cid) .. ',"userId":' .. str(v2 and u.id or "int-" .. u.id)
      if expand["memberships.company"] then m = m .. ',"company":' .. cs[k] end
      ms[k] = m .. "}"
    end
    if expand.companies then companies = "[" .. concat(cs, ",") .. "]" end
    if expand.memberships or expand["memberships.company"] then
      memberships = "[" .. concat(ms, ",") .. "]"
    end
  end
  return '{"id":' .. str(u.id) .. ',"object":"user","attributes":' .. attributes_json(u)
    .. ',"createdAt":"' .. created .. '","companies":' .. companies .. ',"memberships":' .. memberships .. "}"
end

-- The relative next/previous link, built like the server's buildUrl: the
-- request's query without cursor, cursor appended, limit set in place,
-- expand re-emitted as expand[] (form-encoded as URLSearchParams does).
local function link(req, cursor, limit, expand_list)
  local list, has_limit = {}, false
  for _, kv in ipairs(req.query) do
    local k = kv[1]
    if k == "limit" then
      if not has_limit then list[#list + 1], has_limit = { k, tostring(limit) }, true end
    elseif k ~= "cursor" and not (#expand_list > 0 and (k == "expand" or k == "expand[]")) then
      list[#list + 1] = { k, kv[2] }
    end
  end
  -- URLSearchParams.set appends a key it does not have: cursor, then limit
  if cursor then list[#list + 1] = { "cursor", cursor } end
  if not has_limit then list[#list + 1] = { "limit", tostring(limit) } end
  for _, e in ipairs(expand_list) do list[#list + 1] = { "expand[]", e } end
  return str(req.path .. "?" .. util.form_encode(list))
end

-- Query validation ----------------------------------------------------------

local function expand_of(q, v2)
  local list, set = util.values(q, "expand", "expand[]"), {}
  for _, e in ipairs(list) do
    if not EXPAND[e] then
      return nil, invalid("each value in expand must be one of the following values: "
        .. "companies, memberships, memberships.company", v2, "expand")
    end
    set[e] = true
  end
  return list, set
end

local function valid_email(s)
  return s:match("^[%w.!#$%%&'*+/=?^_`{|}~-]+@[%w-]+%.[%w.-]*%a$") ~= nil and not s:find("%.%.")
end

-- createdAfter/createdBefore (v2): a date, or a datetime WITH a zone.
local function time_bound(s, name, upper)
  local t, zoned, date_only = data.parse_iso(s)
  if not t or not (zoned or date_only) then
    return nil, name .. " must be an ISO date or a datetime with a timezone"
  end
  if date_only and upper then t = t + 86400 - 0.001 end -- the whole day
  return floor(t * 1000 + 0.5)
end

local function list(req, ctx, v2)
  local q = req.query
  local limit = 20
  local lv = util.values(q, "limit")
  if #lv > 0 then
    local n = #lv == 1 and (lv[1] == "" and 0 or tonumber(lv[1])) or nil -- Number("") is 0
    if not n then
      return invalid("limit must be a number conforming to the specified constraints", v2, "limit")
    end
    if n < 1 then return invalid("limit must not be less than 1", v2, "limit") end
    if n > 100 then return invalid("limit must not be greater than 100", v2, "limit") end
    if n ~= floor(n) then return invalid("limit must be an integer number", v2, "limit") end
    limit = n
  end
  for _, o in ipairs(util.values(q, "orderBy", "orderBy[]")) do
    if o ~= "createdAt" and o ~= "-createdAt" then
      return invalid("each value in orderBy must be one of the following values: createdAt, -createdAt",
        v2, "orderBy")
    end
  end
  local desc = util.values(q, "orderBy", "orderBy[]")[1] == "-createdAt"
  local expand_list, expand = expand_of(q, v2)
  if not expand_list then return expand end

  local f = {}
  local email = util.values(q, "email")
  if #email > 0 then
    if #email > 1 or not valid_email(email[1]) then
      return invalid("email must be an email", v2, "email")
    end
    f.email = email[1] -- exact: Prisma `equals` on attributes.email (the docs say case-insensitive)
  end
  local company = util.last(q, "companyId")
  if company and company ~= "" then
    if not (company:match("^co%-%d$") or dict:get("ut:co:" .. company)) then
      if v2 then return err(404, "E1002") end
      return empty_page() -- v1: an unknown company is an empty page
    end
    f.company = company
  end
  local segment = util.last(q, "segmentId")
  if segment and segment ~= "" then
    local k = segment:match("^seg%-([0-4])$")
    if k then f.segment = tonumber(k)
    elseif v2 then return err(404, "E1025") end -- v1 ignores an unknown segment
  end
  if v2 then
    for name, upper in pairs{ createdAfter = false, createdBefore = true } do
      local s = util.last(q, name)
      if s then
        local t, msg = time_bound(s, name, upper)
        if not t then return invalid(msg, v2, name) end
        if upper then f.before = t else f.after = t end
      end
    end
  end

  local v = view(ctx)
  scope(v, f)
  local d = desc and -1 or 1
  local origin = desc and v.P + 1 or 0
  local cursor = util.last(q, "cursor")
  if cursor == "" then cursor = nil end
  local from = origin
  if cursor then
    from = position(v, cursor)
    if not from then
      if v2 then return empty_page() end -- v2: a stale cursor ends the listing
      return err(400, "E1007")
    end
  end
  local page = collect(v, f, from, d, limit + 1)
  if cursor and #page == 0 then
    if v2 then return empty_page() end
    return err(400, "E1007") -- v1: a cursor that yields no row is "invalid"
  end
  local more = #page > limit
  if more then page[#page] = nil end

  local previous = "null"
  if cursor then
    local before = collect(v, f, page[1].pos, -d, limit)
    if #before > 0 then
      local head = collect(v, f, origin, d, 1)[1]
      local oldest = before[#before]
      if #before < limit or (head and head.id == oldest.id) then
        previous = link(req, nil, limit, expand_list)
      elseif v2 then
        previous = link(req, collect(v, f, oldest.pos, -d, 1)[1].id, limit, expand_list)
      else
        previous = link(req, oldest.id, limit, expand_list) -- v1's known off-by-one
      end
    end
  end
  local out = {}
  for k, u in ipairs(page) do out[k] = render(u, expand, v2) end
  return util.json(200, '{"results":[' .. concat(out, ",") .. '],"next":'
    .. (more and link(req, page[#page].id, limit, expand_list) or "null")
    .. ',"previous":' .. previous .. "}")
end

-- Mutations -----------------------------------------------------------------

local function is_object(t) return type(t) == "table" and (next(t) == nil or #t == 0) end

local function upsert(ctx, id, attrs, companies)
  local v = view(ctx)
  v.dirty = true
  local r = record(v, id)
  local i = data.index(id)
  local now = floor(ngx.now() * 1000)
  if (r and r.deleted) or (not r and not (i and i <= v.N)) then
    -- a new user, or one re-created after a delete: it starts afresh, last
    local s = dict:incr("ut:nseq", 1, 0)
    dict:set("ut:new:" .. s, id)
    r = { seq = s, created = now }
  end
  r = r or {}
  r.attributes = r.attributes or {}
  for k, x in pairs(attrs or {}) do r.attributes[k] = x end
  r.companies = r.companies or {}
  for _, c in ipairs(companies or {}) do
    local seen = false
    for _, o in ipairs(r.companies) do seen = seen or o == c.id end
    if not seen then r.companies[#r.companies + 1] = c.id end
    local key = "ut:co:" .. c.id
    local old = dict:get(key)
    local co = old and util.decode(old) or { created = now, attributes = {} }
    for k, x in pairs(c.attributes or {}) do co.attributes[k] = x end
    dict:set(key, util.encode(co))
  end
  dict:set("ut:u:" .. id, util.encode(r))
  dict:set("ut:dirty", true)
  dict:set("ut:touch:" .. dict:incr("ut:ntouch", 1, 0), id)
  v = view(ctx)
  return at(v, position(v, id))
end

-- v1 POST /v1/users {id, attributes?, companies?, memberships?} -> 201
local function upsert_v1(req, ctx)
  local body = util.decode(req.body ~= "" and req.body or "{}")
  if not is_object(body) then return invalid("body must be a JSON object") end
  if type(body.id) ~= "string" then return invalid("id must be a string") end
  if not body.id:find("%S") then return invalid("id should not be empty") end
  if body.attributes ~= nil and not is_object(body.attributes) then
    return invalid("attributes must be an object")
  end
  local companies = {}
  for _, name in ipairs{ "companies", "memberships" } do
    local l = body[name]
    if l ~= nil then
      if type(l) ~= "table" then return invalid(name .. " must be an array") end
      for _, c in ipairs(l) do
        local co = name == "memberships" and type(c) == "table" and c.company or c
        if type(co) ~= "table" or type(co.id) ~= "string" or not co.id:find("%S") then
          return invalid(name .. " items need a non-empty company id")
        end
        if co.attributes ~= nil and not is_object(co.attributes) then
          return invalid(name .. " attributes must be an object")
        end
        companies[#companies + 1] = co
      end
    end
  end
  local u = upsert(ctx, body.id, body.attributes, companies)
  local res = util.json(201, render(u, {}, false))
  return res
end

-- v2 PUT .../users/{id} {attributes?} -> 200
local function upsert_v2(req, ctx, id)
  local body = util.decode(req.body ~= "" and req.body or "{}")
  if not is_object(body) then return invalid("body must be a JSON object", true, "") end
  for k in pairs(body) do
    if k ~= "attributes" then
      return invalid('Unrecognized key: "' .. tostring(k) .. '"', true, tostring(k))
    end
  end
  local attrs = body.attributes
  if attrs ~= nil then
    if not is_object(attrs) then return invalid("attributes must be an object", true, "attributes") end
    for k in pairs(attrs) do
      if type(k) ~= "string" or not k:match("^%a[%w_]+$") or #k > 100 then
        return invalid("attribute names must start with a letter, then letters, digits or"
          .. " underscores, 2 to 100 characters", true, "attributes." .. tostring(k))
      end
    end
  end
  return util.json(200, render(upsert(ctx, id, attrs, nil), {}, true))
end

local function get_one(req, ctx, id, v2)
  local ok, expand = expand_of(req.query, v2)
  if not ok then return expand end
  local v = view(ctx)
  local p = position(v, id)
  local u = p and at(v, p)
  if not u then return err(404, "E1001") end
  return util.json(200, render(u, expand, v2))
end

local function delete(ctx, id, v2)
  local v = view(ctx)
  if not position(v, id) then return err(404, "E1001") end
  dict:set("ut:u:" .. id, '{"deleted":true}')
  dict:set("ut:dirty", true)
  if v2 then return { status = 204, headers = {} } end
  return util.json(200, '{"id":' .. str(id) .. ',"object":"user","deleted":true}')
end

-- Routing ---------------------------------------------------------------------

local function no_route(req, v2)
  if v2 then return err(404, "E1033") end
  return util.json(404, '{"message":' .. str("Cannot " .. req.method .. " " .. req.path)
    .. ',"error":"Not Found","statusCode":404}')
end

local function window(ctx)
  if not ctx.window then
    local count, reset = store.window("usertour", 60)
    ctx.window = { count = count, reset = reset }
  end
  return ctx.window
end

function M.handle(req, ctx)
  local rest = req.path:match("^/v2/projects/[^/]+/environments/[^/]+/users(.*)$")
  local v2 = rest ~= nil
  if not v2 then rest = req.path:match("^/v1/users(.*)$") end
  if not rest then return no_route(req, req.path:find("^/v2/") ~= nil) end
  local id
  if rest ~= "" and rest ~= "/" then
    id = rest:match("^/([^/]+)/?$")
    if not id then return no_route(req, v2) end
    id = util.unescape_path(id)
  end
  local m = req.method
  local allowed
  if id then allowed = m == "GET" or m == "DELETE" or (v2 and m == "PUT")
  else allowed = m == "GET" or (not v2 and m == "POST") end
  if not allowed then return no_route(req, v2) end

  -- the guard: exactly "Bearer <key>"; anything else counts as missing
  local token = util.bearer(req.headers, false)
  if not token then return err(401, "E1010") end
  if v2 then
    if token ~= KEY_V2 then return err(403, "E1000") end
    local w = window(ctx)
    if ctx.cfg.rate_limit_enforce and w.count > ctx.cfg.usertour_rate_limit then
      local res = err(429, "E1013")
      res.headers["Retry-After"] = tostring(w.reset)
      return res
    end
  elseif token:gsub("^ak_", "") ~= KEY_V1 then
    return err(403, "E1000")
  end

  if not id then
    if m == "POST" then return upsert_v1(req, ctx) end
    return list(req, ctx, v2)
  end
  if m == "GET" then return get_one(req, ctx, id, v2) end
  if m == "PUT" then return upsert_v2(req, ctx, id) end
  return delete(ctx, id, v2)
end

--- v2 answers carry X-RateLimit-* on every response.
function M.decorate(res, ctx, req)
  if not req.path:find("^/v2/") then return end
  local w, limit, f = window(ctx), ctx.cfg.usertour_rate_limit, ctx.fault or {}
  local h = res.headers
  h["X-RateLimit-Limit"] = tostring(limit)
  h["X-RateLimit-Remaining"] = tostring(f.rate_limit_remaining or max(0, limit - w.count))
  h["X-RateLimit-Reset"] = tostring(f.rate_limit_reset or w.reset)
end

return M
