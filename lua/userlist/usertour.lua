--- Usertour: `GET /v1/users` (seed 003) and v2
-- (`/v2/projects/{project_id}/environments/{environment_id}/users`, chosen
-- when both ids are given, as client options or in the query).
--
-- Paging: cursor; the server's `next` link (relative, carrying every filter)
-- is followed verbatim, resolved against the base URL, until it is null.
-- The cursor is the last user of the page before; when that user is deleted
-- mid-listing it goes stale: 400 E1007 on v1, an empty last page on v2. The
-- listing recovers (`recover` below, see userlist.pager): the page before,
-- asked again, gives a fresh next link, and no one is lost. A cursor the
-- caller gave that matches no user is an error, never a silent end.
-- @module userlist.usertour
local args = require "userlist.args"
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local providers = require "userlist.providers"
local resume = require "userlist.resume"
local time = require "userlist.time"

local raise = errors.raise_invalid
local null = core.null
local floor = math.floor

local EXPAND = { "companies", "memberships", "memberships.company" }
local ORDER = { "createdAt", "-createdAt" }
local MAX_LIMIT = 100
local UPSERT = { id = true, attributes = true, companies = true, memberships = true }

-- ------------------------------------------------------------ arguments

local segment = require("userlist.transport").segment

-- An id argument: a non-empty string (a whole number is printed whole).
local function id_arg(v, field)
  if type(v) == "number" and v == floor(v) and v > -2 ^ 63 and v < 2 ^ 63 then v = norm.id(v) end
  if type(v) ~= "string" then
    raise(field, "must be a string, got " .. (v == null and "null" or type(v)))
  end
  if v == "" then raise(field, "must not be empty") end
  return v
end

-- The users path and API version: v2 when a project and an environment are
-- known (checked values `v`: the query's, else the client options'), v1
-- when neither is.
local function scope(v)
  local project, env = v.project_id, v.environment_id
  if project == nil and env == nil then return "/v1/users", 1 end
  if project == nil then raise("project_id", "is required with environment_id (API v2)") end
  if env == nil then raise("environment_id", "is required with project_id (API v2)") end
  return "/v2/projects/" .. segment(project) .. "/environments/" .. segment(env) .. "/users", 2
end

-- expand: a list (or one name); the server refuses "a,b".
local function expand_arg(v, field, e)
  if type(v) == "string" and v:find(",", 1, true) then
    raise(field, 'takes a list such as {"companies", "memberships"}; the server refuses '
      .. "comma-separated values")
  end
  local list = args.types.strings(v, field, e)
  if #list == 0 then return nil end
  return list
end

--- The query of `users{}`, `pages{}` and `page{}` (see userlist.args).
local QUERY = args.schema{
  { name = "email", type = "string", pattern = "^[^%s@]+@[^%s@]+%.[^%s@]+$",
    mismatch = "must be an email address (the server refuses anything else)", at = "query", wire = "email",
    help = "the user with exactly this email" },
  { name = "segment_id", type = "string", at = "query", wire = "segmentId", help = "users of this segment" },
  { name = "company_id", type = "string", at = "query", wire = "companyId", help = "users of this company" },
  { name = "order_by", type = "enum", choices = ORDER, at = "query", wire = "orderBy",
    help = "createdAt or -createdAt (write --order-by=-createdAt)" },
  { name = "expand", type = "strings", choices = EXPAND, check = expand_arg, repeatable = true,
    at = "query", wire = "expand", help = "companies, memberships or memberships.company (repeat it)" },
  { name = "limit", type = "int", min = 1, max = MAX_LIMIT, default = MAX_LIMIT, at = "query",
    wire = "limit", help = ("users a page, 1..%d (default %d)"):format(MAX_LIMIT, MAX_LIMIT) },
  { name = "cursor", type = "string", at = "query", wire = "cursor", arg = "<id>",
    help = "start after this user id" },
  { name = "project_id", type = "string", option = true, at = "path", wire = "/v2/projects/{id}",
    help = "API v2: the project (with --environment-id and a utp_ key)" },
  { name = "environment_id", type = "string", option = true, at = "path", wire = "/environments/{id}",
    help = "API v2: the environment" },
  { name = "since", type = "time", at = "query", wire = "createdAfter", help = "v2: users created since" },
  { name = "until", type = "time", at = "query", wire = "createdBefore", help = "v2: users created until" },
  args.common.max_pages, args.common.dedupe, args.common.resume, args.common.on_checkpoint,
}
-- the scope of one user's calls, and user(id, q)'s query
local SCOPE = args.pick(QUERY, { "project_id", "environment_id" })
local ONE = args.pick(QUERY, { "project_id", "environment_id", "expand" })

--- The client options Usertour adds.
local OPTIONS = {
  { name = "project_id", type = "string", flag = false,
    help = "API v2: the project of calls that give none" },
  { name = "environment_id", type = "string", flag = false,
    help = "API v2: the environment of calls that give none" },
}

-- since/until for v2's createdAfter/createdBefore (both inclusive): `v`
-- as given, `t` its seconds (userlist.args). A date-only string goes as
-- given: the server reads a date-only createdBefore as the whole day.
-- Anything else becomes UTC ISO with ms (the server refuses a datetime
-- without a zone; here one is read as UTC).
-- @return the wire value and the instant it stands for
local function bound(v, t, upper)
  if type(v) == "string" and v:match("^%d%d%d%d%-%d%d%-%d%d$") then
    return v, upper and t + 86400 - 0.001 or t
  end
  t = floor(t * 1000 + 0.5) / 1000 -- whole milliseconds, as the server keeps them
  return time.iso_utc(t), t
end

-- attributes: a map of names to values (core.null unsets one). v2 also
-- checks the server's codeName rule, so a typo cannot create an attribute.
local function attributes_arg(a, field, version)
  if a == nil then return nil end
  if type(a) ~= "table" then
    raise(field, "must be a table of name = value, got " .. (a == null and "null" or type(a)))
  end
  for k in pairs(a) do
    if type(k) ~= "string" then
      raise(field, "must be a table of name = value (keys are strings), not a list")
    end
    if version == 2 and not (k:match("^%a[%w_]+$") and #k <= 100) then
      raise(field .. "." .. k, "is not a valid attribute name (a letter, then letters, digits or "
        .. "underscores; 2 to 100 characters)")
    end
  end
  return a
end

-- v1 upsert companies / memberships: lists of {id=, attributes=} or
-- {company={id=, attributes=}, attributes=}. An empty list is left out.
local function companies_arg(list, field, nested)
  if list == nil then return nil end
  local n = args.array(list, field, "a list of tables", "a list, not a map")
  if n == 0 then return nil end
  local out = {}
  for i = 1, n do
    local item, f = list[i], ("%s[%d]"):format(field, i)
    if type(item) ~= "table" then raise(f, "must be a table") end
    local co, cf = item, f
    if nested then co, cf = item.company, f .. ".company" end
    if type(co) ~= "table" then raise(cf, "must be a table {id = ..., attributes = ...}") end
    local cid = id_arg(co.id, cf .. ".id")
    if not cid:find("%S") then raise(cf .. ".id", "must not be blank") end
    local c = { id = cid, attributes = attributes_arg(co.attributes, cf .. ".attributes", 1) }
    if nested then
      out[i] = { company = c, attributes = attributes_arg(item.attributes, f .. ".attributes", 1) }
    else
      out[i] = c
    end
  end
  return out
end

-- ------------------------------------------------------------ the user shape

-- JSON nulls out and whole numbers to integers (5.3+) throughout; ids as
-- strings, also in memberships and companies; email from the attributes;
-- first_seen and last_seen from the attributes' first_seen_at and
-- last_seen_at, which current servers keep on every user (last_seen_at
-- moves as events arrive); first_seen from createdAt (always
-- Date.toISOString()) without them.
local ROW = norm.shape{
  list = "results", deep_ints = true, ids = { "id" },
  picks = { { "email", "attributes", "email" } },
  times = { first_seen = { "attributes.first_seen_at", "createdAt" },
    last_seen = "attributes.last_seen_at" },
  nested = { "memberships.*.id", "memberships.*.companyId", "memberships.*.userId",
    "memberships.*.company.id", "companies.*.id" },
}

local function map(u) return norm.one(u, ROW) end

local function not_a_user(body)
  if type(body) ~= "table" or body.id == nil then
    error(errors.new{ kind = "decode", message = "response is not a user object" }, 0)
  end
  return body
end

-- ------------------------------------------------------------ paging

local function decode_error(message)
  error(errors.new{ kind = "decode", message = message }, 0)
end

-- Resolves a link the server sent against the URL it answered. An absolute
-- link is followed on the configured host only (the key never goes
-- elsewhere); a root-relative one keeps the base URL's path prefix, for a
-- server behind a proxy that strips it.
local function resolve(base, current, link)
  local origin, prefix = base:match("^(https?://[^/]+)(.*)$")
  if link:match("^%a[%w+.-]*:") then
    local path = link:match("^https?://[^/?#]*(.*)$")
    if not path then decode_error("link is not an http(s) URL: " .. link) end
    link = path ~= "" and path or "/"
  end
  if link:sub(1, 1) == "/" then
    if prefix ~= "" and link:sub(1, #prefix + 1) ~= prefix .. "/" then link = prefix .. link end
    return origin .. link
  end
  local here = current:match("^[^?#]*")
  if link:sub(1, 1) == "?" then return here .. link end
  return (here:gsub("[^/]*$", "")) .. link
end

local function cursor_of(url)
  local c = url:match("[?&]cursor=([^&#]*)")
  if not c then return nil end
  return (c:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function link_of(c, current, v, name)
  if v == nil or v == null then return nil end
  if type(v) ~= "string" or v == "" then decode_error("'" .. name .. "' is neither a link nor null") end
  return resolve(c.base_url, current, v)
end

-- The URL of the page at `current` (nil: the first page), which its links
-- are relative to.
local function page_url(c, p, current)
  return current or (c.base_url .. p.path)
end

local listing = {
  rows = function() return ROW end,
  prepare = function(c, q)
    local v = args.check(q, QUERY, c.options)
    local path, version = scope(v)
    local p = { path = path, version = version, max_pages = v.max_pages, dedupe = v.dedupe }
    p.query = {
      email = v.email, segmentId = v.segment_id, companyId = v.company_id, orderBy = v.order_by,
      expand = v.expand, limit = v.limit, cursor = v.cursor,
    }
    if (v.since ~= nil or v["until"] ~= nil) and version ~= 2 then
      raise(v.since ~= nil and "since" or "until",
        "needs API v2 (give project_id and environment_id): v1 cannot filter by time")
    end
    local from, to
    if v.since ~= nil then p.query.createdAfter, from = bound(q.since, v.since, false) end
    if v["until"] ~= nil then p.query.createdBefore, to = bound(q["until"], v["until"], true) end
    if from and to and to < from then raise("until", "is before 'since'") end
    return p
  end,
  first = function() return false end, -- false: the first page, built from the query
  request = function(c, p, next_url)
    -- path: what the pager names in a decode error (the link is under the base URL)
    if next_url then return { method = "GET", url = next_url, path = next_url:sub(#c.base_url + 1) } end
    return { method = "GET", url = c.base_url .. p.path, path = p.path, query = p.query }
  end,
  parse = function(c, body, p, current, shaped)
    local results = type(body) == "table" and body.results
    if type(results) ~= "table" then decode_error("response has no 'results' array") end
    local url = page_url(c, p, current)
    if #results == 0 and p.version == 2 and not current and p.query.cursor then
      -- v2 answers a cursor that matches no user with an empty last page;
      -- one the caller gave cannot be recovered from (nothing before it).
      -- An empty page behind a next link is the pager's (recover).
      error(errors.new{ kind = "api", status = 200, code = "E1007", message = "v2 answered an "
        .. "empty page for the cursor given: no user has that id (deleted, or never a user's "
        .. "id), or none comes after it" }, 0)
    end
    norm.rows(results, ROW, 0, 0, c, p.warned, shaped)
    local facts = { previous = link_of(c, url, body.previous, "previous") }
    local nxt = link_of(c, url, body.next, "next")
    if nxt == nil then return results, nil, facts end
    if nxt == current then
      error(errors.new{ kind = "api", message = "the server sent the same next link twice: "
        .. nxt }, 0)
    end
    facts.next, facts.cursor = nxt, cursor_of(nxt)
    return results, nxt, facts
  end,
  -- The server writes `next` after `results`: the last "next" string of
  -- the body's tail is the link parse will read (a JSON escape in it, or a
  -- row's own "next" key, only spoils the guess, which the pager checks).
  guess = function(c, text, p, current)
    local tail = text:sub(-4096)
    local link, at = nil, 1
    while true do
      local s, e, v = tail:find('"next"%s*:%s*"([^"\\]*)"', at)
      if not s then break end
      link, at = v, e + 1
    end
    if not link then return nil end
    return link_of(c, page_url(c, p, current), link, "next")
  end,
  key = function(u) return u.id end,
  -- resume tokens (userlist.resume): the next link below the base URL (the
  -- token fingerprints the base URL); "" for the first page
  save = function(c, _, current)
    if not current then return "" end
    return current:sub(#c.base_url + 1)
  end,
  load = function(c, p, s)
    if s == "" then return false end
    local rest = s:sub(#p.path + 1)
    if s:sub(1, #p.path) ~= p.path or not rest:match("^%?[^%s#]*$") or s:find("[%c ]") then
      resume.bad("holds no next link of this listing")
    end
    return c.base_url .. s
  end,
  -- A next link gone stale (its cursor's user deleted): v1 400 E1007; v2,
  -- or no user left after the cursor, an empty last page. Only links the
  -- listing followed (`current`): the first page has nothing before it.
  recover = function(_, _, current, err)
    if not current then return false end
    if err == nil then return true end
    return err.status == 400 and err.code == "E1007"
  end,
}

-- ------------------------------------------------------------ one user

local methods = {}

-- Runs fn and returns its result, or nil, err for a userlist error.
local function protect(fn)
  local ok, a = pcall(fn)
  if ok then return a end
  if errors.is(a) then
    a.provider = a.provider or "usertour"
    return nil, a
  end
  error(a, 0)
end

local function call(c, req)
  local res, err = c.transport:request(req)
  if not res then error(err, 0) end
  return res
end

--- `client:user(id, {expand = ..., project_id =, environment_id =})`
-- @return the user, or nil, err (unknown id: status 404, code E1001)
function methods:user(id, q)
  return protect(function()
    id = id_arg(id, "id")
    q = q == nil and {} or q
    local v = args.check(q, ONE, self.options)
    local path = scope(v)
    local res = call(self, { method = "GET", path = path .. "/" .. segment(id),
                             query = { expand = v.expand } })
    return map(not_a_user(res.body))
  end)
end

--- `client:upsert{id =, attributes =, companies =, memberships =}` or
-- `client:upsert(id, attributes)`, then optionally `{project_id =, environment_id =}`.
-- v1: `POST /v1/users` (201); v2: `PUT .../users/{id}` with `{attributes}`
-- only (200). Attributes merge into the stored ones.
-- @return the stored user (not expanded), or nil, err
function methods:upsert(a, b, c)
  return protect(function()
    local user, q
    if type(a) == "table" then
      user, q = a, b
    else
      user, q = { id = a, attributes = b }, c
    end
    q = q == nil and {} or q
    local v = args.check(q, SCOPE, self.options)
    args.known(user, UPSERT, "user")
    local path, version = scope(v)
    local id = id_arg(user.id, "id")
    if not id:find("%S") then raise("id", "must not be blank") end
    local attrs = attributes_arg(user.attributes, "attributes", version)
    local res
    if version == 2 then
      for _, k in ipairs{ "companies", "memberships" } do
        if user[k] ~= nil then
          raise(k, "cannot be set through the v2 user upsert (it takes attributes only)")
        end
      end
      res = call(self, { method = "PUT", path = path .. "/" .. segment(id),
                         json = { attributes = attrs or {} } })
    else
      res = call(self, { method = "POST", path = path, json = {
        id = id, attributes = attrs,
        companies = companies_arg(user.companies, "companies", false),
        memberships = companies_arg(user.memberships, "memberships", true),
      } })
    end
    return map(not_a_user(res.body))
  end)
end

--- `client:delete(id, {project_id =, environment_id =})`: permanent.
-- @return true, or nil, err (unknown id: status 404, code E1001)
function methods:delete(id, q)
  return protect(function()
    id = id_arg(id, "id")
    q = q == nil and {} or q
    local path = scope(args.check(q, SCOPE, self.options))
    call(self, { method = "DELETE", path = path .. "/" .. segment(id) })
    return true
  end)
end

-- ------------------------------------------------------------ errors

-- {"error": {"code": "E1017", "message": "...", "doc_url": "...", "issues"?: [...]}};
-- Nest's own 404 for an unknown v1 route: {"message", "error", "statusCode"}.
local function map_error(err)
  local b = err.body
  if type(b) ~= "table" then return end
  local e = b.error
  if type(e) == "table" then
    if type(e.code) == "string" then err.code = e.code end
    if type(e.message) == "string" then err.message = e.message end
    if type(e.issues) == "table" and e.issues ~= null then
      err.issues = e.issues
      local parts = {}
      for i = 1, #e.issues do
        local s = e.issues[i]
        if type(s) == "table" and type(s.message) == "string" then
          parts[#parts + 1] = (type(s.path) == "string" and s.path ~= "" and (s.path .. ": ") or "")
            .. s.message
        end
      end
      if #parts > 0 and err.message ~= parts[1] then
        err.message = (err.message or "") .. " (" .. table.concat(parts, "; ") .. ")"
      end
    end
  elseif type(b.message) == "string" then
    err.message = b.message
  end
  local v2 = type(err.url) == "string" and err.url:find("/v2/projects/", 1, true) ~= nil
  if err.code == "E1007" then
    err.message = (err.message or "Invalid cursor parameter")
      .. " (no user has the cursor's id: deleted, or never a user's id; ask again for the page"
      .. " before, with its own cursor)"
  elseif err.code == "E1000" then
    err.message = (err.message or "Invalid API key") .. (v2
      and " (v2 takes a personal token utp_...; an environment key ak_... works only on v1,"
        .. " without project_id and environment_id)"
      or " (v1 takes an environment key ak_...; a utp_... token needs project_id and"
        .. " environment_id, API v2)")
  end
end

return client.define(providers.declare{
  name = "usertour",
  env_key = "USERTOUR_API_KEY",
  query = QUERY,
  options = OPTIONS,
  base_url = function() return "https://api.usertour.io" end,
  listing = listing,
  methods = methods,
  error = map_error,
})
