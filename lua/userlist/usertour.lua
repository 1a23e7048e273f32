--- Usertour: `GET /v1/users` (seed 003) and v2
-- (`/v2/projects/{project_id}/environments/{environment_id}/users`, chosen
-- when both ids are given). Cursor paging: the server's relative `next`
-- link is followed verbatim, resolved against the base URL, until null.
-- @module userlist.usertour
local client = require "userlist.client"
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local time = require "userlist.time"

local check, raise = errors.check, errors.raise_invalid

local EXPAND = { "companies", "memberships", "memberships.company" }
local KNOWN = {
  email = true, segment_id = true, company_id = true, order_by = true, expand = true,
  limit = true, cursor = true, since = true, ["until"] = true, project_id = true,
  environment_id = true, max_pages = true,
}

-- v2 when both project and environment ids are known, else v1.
local function users_path(c, q)
  local project = q.project_id or c.options.project_id
  local env = q.environment_id or c.options.environment_id
  if project == nil and env == nil then return "/v1/users", 1 end
  check.string({ project_id = project }, "project_id")
  check.string({ environment_id = env }, "environment_id")
  if project == nil then raise("project_id", "is required with environment_id (API v2)") end
  if env == nil then raise("environment_id", "is required with project_id (API v2)") end
  return "/v2/projects/" .. core.escape(project) .. "/environments/" .. core.escape(env) .. "/users", 2
end

local function prepare(c, q)
  check.known(q, KNOWN)
  local path, version = users_path(c, q)
  local p = { path = path, version = version, max_pages = check.int(q, "max_pages", 1, 2 ^ 31 - 1) }
  p.query = {
    email = check.string(q, "email"),
    segmentId = check.string(q, "segment_id"),
    companyId = check.string(q, "company_id"),
    orderBy = check.enum(q, "order_by", { "createdAt", "-createdAt" }),
    expand = check.strings(q, "expand", { allowed = EXPAND }),
    limit = check.int(q, "limit", 1, 100) or 100,
    cursor = check.string(q, "cursor"),
  }
  for field, wire in pairs{ since = "createdAfter", ["until"] = "createdBefore" } do
    if q[field] ~= nil then
      if version ~= 2 then
        raise(field, "needs API v2 (give project_id and environment_id); v1 cannot filter by time")
      end
      local t, msg = time.to_epoch(q[field])
      if not t then raise(field, msg) end
      p.query[wire] = time.iso_utc(t)
    end
  end
  return p
end

-- Resolves the server's `next` link against the base URL (RFC 3986 for the
-- forms servers send) and refuses one that would take the key elsewhere.
local function resolve(base, link)
  local origin = base:match("^(https?://[^/]+)")
  if link:match("^https?://") then
    if link:match("^(https?://[^/]+)") ~= origin then
      error(errors.new{ kind = "decode", message = "next link points to another host: " .. link }, 0)
    end
    return link
  end
  if link:sub(1, 1) == "/" then return origin .. link end
  return (base:gsub("[^/]*$", "")) .. link
end

local function map(u)
  norm.strip_nulls(u)
  u.id = norm.id(u.id)
  if type(u.attributes) == "table" and type(u.attributes.email) == "string" then
    u.email = u.attributes.email
  end
  u.first_seen = norm.time(u.createdAt)
  return u
end

local listing = {
  prepare = prepare,
  first = function() return false end, -- false: the first page, built from the query
  request = function(_, p, next_url)
    if next_url then return { method = "GET", url = next_url } end
    return { method = "GET", path = p.path, query = p.query }
  end,
  parse = function(c, body, _, current)
    local results = type(body) == "table" and body.results
    if type(results) ~= "table" then
      error(errors.new{ kind = "decode", message = "response has no 'results' array" }, 0)
    end
    for i = 1, #results do map(results[i]) end
    local nxt = body.next
    if nxt == core.null or nxt == nil then return results, nil, {} end
    if type(nxt) ~= "string" or nxt == "" then
      error(errors.new{ kind = "decode", message = "'next' is neither a link nor null" }, 0)
    end
    local url = resolve(c.base_url, nxt)
    if url == current then
      error(errors.new{ kind = "loop", message = "the server sent the same next link twice: " .. nxt }, 0)
    end
    return results, url, { next = url }
  end,
  key = function(u) return u.id end,
}

local methods = {}

local function check_id(id, fname)
  if type(id) ~= "string" or id == "" then
    error(("userlist.usertour: bad argument #1 to '%s' (non-empty string id expected)"):format(fname), 3)
  end
end

local function one(self, req, q)
  local path = users_path(self, q)
  req.path = path .. (req.path or "")
  local res, err = self:_call(req)
  if not res then error(err, 0) end
  return res
end

--- `client:user(id, {expand = ...})`: one user, or nil, err (404: E1001).
function methods:user(id, q)
  check_id(id, "user")
  return errors.protect(function()
    q = q or {}
    check.known(q, { expand = true, project_id = true, environment_id = true })
    local res = one(self, { method = "GET", path = "/" .. core.escape(id),
      query = { expand = check.strings(q, "expand", { allowed = EXPAND }) } }, q)
    return map(res.body)
  end)
end

--- `client:upsert{id = ..., attributes = {...}, companies = ...}`: creates or
-- updates a user; returns the stored user or nil, err.
function methods:upsert(user, q)
  if type(user) ~= "table" then
    error("userlist.usertour: bad argument #1 to 'upsert' (user table expected)", 2)
  end
  return errors.protect(function()
    q = q or {}
    check.known(q, { project_id = true, environment_id = true })
    local id = user.id
    if type(id) ~= "string" or id == "" then raise("id", "must be a non-empty string") end
    if user.attributes ~= nil and type(user.attributes) ~= "table" then
      raise("attributes", "must be a table")
    end
    local res = one(self, { method = "POST", json = user }, q)
    return type(res.body) == "table" and map(res.body) or { id = id }
  end)
end

--- `client:delete(id)`: true, or nil, err (404: E1001).
function methods:delete(id, q)
  check_id(id, "delete")
  return errors.protect(function()
    q = q or {}
    check.known(q, { project_id = true, environment_id = true })
    one(self, { method = "DELETE", path = "/" .. core.escape(id) }, q)
    return true
  end)
end

return client.define{
  name = "usertour",
  env_key = "USERTOUR_API_KEY",
  base_url = function() return "https://api.usertour.io" end,
  options = { project_id = "string", environment_id = "string" },
  listing = listing,
  methods = methods,
  -- {"error": {"code": "E1017", "message": "...", "doc_url": "..."}}
  error = function(err)
    local b = err.body
    local e = type(b) == "table" and b.error
    if type(e) ~= "table" then return end
    if type(e.code) == "string" then err.code = e.code end
    if type(e.message) == "string" then err.message = e.message end
    if err.code == "E1007" then
      err.message = (err.message or "Invalid cursor parameter")
        .. " (the cursor's user no longer exists: restart the listing)"
    end
  end,
}
