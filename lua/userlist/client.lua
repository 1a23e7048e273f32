--- What every provider client shares: construction from options and the
-- environment, and the one request path (errors mapped to the provider's
-- shapes, "still loading" answers waited out, retries). Provider modules
-- are declarations handed to `client.define`.
-- @module userlist.client
local core = require "userlist.core"
local errors = require "userlist.errors"
local pager = require "userlist.pager"

local M = {}

-- API keys live here, never in the client table, so that printing or
-- serialising a client cannot show them.
local secrets = setmetatable({}, { __mode = "k" })

local SESSION_OPTIONS = {
  timeout = "number", connect_timeout = "number", low_speed_limit = "number",
  low_speed_time = "number", max_size = "number", verify = "boolean", cafile = "string",
  capath = "string", proxy = "string", follow_redirects = "boolean", max_redirects = "number",
  allow_insecure_http = "boolean",
}
local CLIENT_OPTIONS = {
  api_key = "string", base_url = "string", headers = "table", max_retries = "number",
  loading_timeout = "number", sleep = "function", max_retry_wait = "number",
  deadline = "number", on_event = "function",
}

-- A server can echo the key back in anything it sends (an error body, a
-- next link): every error and event is scrubbed before the caller sees it.
local REDACTED = "[REDACTED]"
local function scrub_string(v, key)
  local i = v:find(key, 1, true)
  if not i then return v end
  local out, pos = {}, 1
  while i do
    out[#out + 1] = v:sub(pos, i - 1)
    out[#out + 1] = REDACTED
    pos = i + #key
    i = v:find(key, pos, true)
  end
  out[#out + 1] = v:sub(pos)
  return table.concat(out)
end

local function scrub(v, key, depth)
  if type(v) == "string" then return scrub_string(v, key) end
  if type(v) ~= "table" or depth > 16 then return v end
  local renamed
  for k, x in pairs(v) do
    local y = scrub(x, key, depth + 1)
    if y ~= x then v[k] = y end
    if type(k) == "string" and k:find(key, 1, true) then
      renamed = renamed or {}
      renamed[k] = y
    end
  end
  for k, x in pairs(renamed or {}) do
    v[k] = nil
    v[scrub_string(k, key)] = x
  end
  return v
end

local function default_sleep(secs)
  local ngx = rawget(_G, "ngx")
  if ngx and type(ngx.sleep) == "function" then return ngx.sleep(secs) end
  return core.sleep(secs)
end

local Client = {}

--- The session options this client opens its connections with.
function Client:_new_session()
  return core.session(self._session_options)
end

function Client:_shared_session()
  local s = self._session
  if not s then
    s = self:_new_session()
    self._session = s
  end
  return s
end

--- Closes the client's shared connection (listings own their own).
function Client:close()
  if self._session then
    self._session:close()
    self._session = nil
  end
end

-- Waits before another try: the server's word if it gave one (up to the
-- cap), else exponential backoff 0.5 s doubling to 8 s, minus up to 25% jitter.
local function backoff(attempt, retry_after, cap)
  if retry_after then return math.min(retry_after, cap) end
  local base = math.min(0.5 * 2 ^ (attempt - 1), 8)
  return base * (1 - 0.25 * math.random())
end

--- Hands an event to the on_event hook, if any. Events carry the method and
-- the URL (never a key), the attempt, and per type: status, kind, wait.
function Client:_emit(ev)
  local hook = self._on_event
  if hook then
    ev.provider = self.provider
    hook(self:_scrub(ev))
  end
end

--- Removes the client's key from every string of v (an error, an event), in
-- place. @return v
function Client:_scrub(v)
  return scrub(v, secrets[self], 0)
end

local function deadline_error(self, req, url, cause)
  return errors.new{ kind = "timeout", provider = self.provider, method = req.method, url = url,
    retryable = false, cause = cause,
    message = ("the deadline of %gs passed%s"):format(self._deadline,
      cause and (" (last error: " .. (cause.message or cause.kind) .. ")") or "") }
end

-- Sleeps `secs` for `reason`, unless that would pass the deadline.
function Client:_wait(secs, reason, req, url, attempt, deadline_at)
  if deadline_at and core.now() + secs > deadline_at then return false end
  self:_emit{ type = "wait", reason = reason, wait = secs, method = req.method, url = url,
              attempt = attempt }
  self._sleep(secs)
  return true
end

-- Rate-limit headers that say the budget is spent: pause the next request
-- until the reset instead of spending a request on a 429.
function Client:_note_rate_limit(rl)
  if rl and rl.remaining == 0 and rl.reset and rl.reset > 0 then
    self._pause_until = core.now() + math.min(rl.reset, self._max_retry_wait)
  end
end

--- The one request path. `req`: {method=, path= (or url=), query=, json=}.
-- `deadline_at` (core.now() time) bounds the call with its retries and waits;
-- by default the client's `deadline` option from now.
-- @return the response (status, headers, body) or nil, err
local call

function Client:_call(req, session, deadline_at)
  local res, err = call(self, req, session, deadline_at)
  if err then self:_scrub(err) end
  return res, err
end

function call(self, req, session, deadline_at)
  local def = self._def
  session = session or self:_shared_session()
  deadline_at = deadline_at or (self._deadline and core.now() + self._deadline)
  local attempt, loading_since = 0, nil
  local loads, waited = 0, 0 -- "still loading" answers and the time slept on them
  local url = req.url or (self.base_url .. req.path)
  while true do
    local pause = self._pause_until and self._pause_until - core.now()
    self._pause_until = nil
    if pause and pause > 0 and not self:_wait(pause, "rate_limit", req, url, attempt + 1, deadline_at) then
      return nil, deadline_error(self, req, url)
    end
    local timeout
    if deadline_at then
      local left = deadline_at - core.now()
      if left <= 0 then return nil, deadline_error(self, req, url) end
      timeout = math.min(left, self._timeout)
    end
    self:_emit{ type = "request", method = req.method, url = url, attempt = attempt + 1 }
    local res, err = session:request{
      method = req.method, url = url, query = req.query, json = req.json,
      api_key = secrets[self], headers = self._headers, timeout = timeout,
    }
    self:_emit{ type = "response", method = req.method, url = url, attempt = attempt + 1,
                status = res and res.status or err.status, kind = err and err.kind }
    self:_note_rate_limit((res or err).rate_limit)
    if res and def.check then
      local verdict, perr = def.check(res)
      if verdict == "loading" then
        -- the server is still loading the data: ask again for the same page
        local t = core.now()
        loading_since = loading_since or t
        local wait = backoff(math.min(loads + 1, 4), nil, self._max_retry_wait)
        -- the larger of the clock and the sum of waits: an injected sleep
        -- that does not really sleep still reaches the bound
        if math.max(t - loading_since, waited) + wait > self._loading_timeout then
          return nil, errors.new{ kind = "loading", provider = def.name, status = res.status,
            retryable = true, method = req.method, url = url,
            message = ("data still loading after %gs (loading_timeout)"):format(self._loading_timeout) }
        end
        loads, waited = loads + 1, waited + wait
        if not self:_wait(wait, "loading", req, url, attempt + 1, deadline_at) then
          return nil, deadline_error(self, req, url)
        end
        res = false
      elseif perr then
        res, err = nil, perr
      end
    end
    if res then return res end
    if res == nil then
      err.provider = def.name
      err.method, err.url = err.method or req.method, err.url or url
      if def.error then def.error(err) end
      if not (err.retryable and attempt < self._max_retries) then return nil, err end
      attempt = attempt + 1
      local rl = err.rate_limit
      local hint = err.retry_after or (rl and rl.remaining == 0 and rl.reset) or nil
      local wait = backoff(attempt, hint, self._max_retry_wait)
      self._pause_until = nil -- this wait covers it
      self:_emit{ type = "retry", method = req.method, url = url, attempt = attempt,
                  status = err.status, kind = err.kind, wait = wait }
      if not self:_wait(wait, "retry", req, url, attempt, deadline_at) then
        return nil, deadline_error(self, req, url, err)
      end
    end
  end
end

--- `client:pages(query)`: page by page (see userlist.pager).
function Client:pages(q) return pager.pages(self, self._def.listing, q) end
--- `client:users(query)`: every matching user, across all pages.
function Client:users(q) return pager.users(self, self._def.listing, q) end
--- `client:page(query)`: one page, or nil, err (never raises for API errors).
function Client:page(q) return pager.page(self, self._def.listing, q) end

--- Builds a provider constructor from its declaration.
-- def: name, env_key, base_url(opts) -> url, options (extra option types),
-- listing, error(err), check(res), map(user), methods.
function M.define(def)
  local methods = setmetatable({}, { __index = Client })
  for k, v in pairs(def.methods or {}) do methods[k] = v end
  local mt = {
    __index = methods,
    __name = "userlist." .. def.name,
    __tostring = function(c) return ("userlist.%s client (%s)"):format(def.name, c.base_url) end,
  }
  return function(opts)
    if opts == nil then opts = {} end
    if type(opts) ~= "table" then
      error(("userlist.%s: bad argument #1 (options table expected, got %s)"):format(def.name, type(opts)), 2)
    end
    for k, v in pairs(opts) do
      local want = SESSION_OPTIONS[k] or CLIENT_OPTIONS[k] or (def.options and def.options[k])
      if not want then
        error(("userlist.%s: unknown option '%s'"):format(def.name, tostring(k)), 2)
      end
      if type(v) ~= want then
        error(("userlist.%s: bad option '%s' (%s expected, got %s)"):format(def.name, k, want, type(v)), 2)
      end
    end
    local key = opts.api_key or os.getenv(def.env_key)
    if key == nil or key == "" then
      error(("userlist.%s: no API key (pass api_key or set %s)"):format(def.name, def.env_key), 2)
    end
    local base = opts.base_url or def.base_url(opts)
    if type(base) ~= "string" or not base:match("^https?://[^/]") then
      error(("userlist.%s: bad base_url %s (an http(s) URL expected)"):format(def.name, tostring(base)), 2)
    end
    local shown = {}
    for k, v in pairs(opts) do
      if k ~= "api_key" then shown[k] = v end
    end
    local session_options = {}
    for k in pairs(SESSION_OPTIONS) do session_options[k] = opts[k] end
    local self = setmetatable({
      provider = def.name,
      base_url = (base:gsub("/+$", "")),
      options = shown,
      _def = def,
      _session_options = session_options,
      _headers = opts.headers,
      _max_retries = opts.max_retries or 2,
      _loading_timeout = opts.loading_timeout or 60,
      _max_retry_wait = opts.max_retry_wait or 60,
      _deadline = opts.deadline,
      _timeout = opts.timeout or 60,
      _on_event = opts.on_event,
      _sleep = opts.sleep or default_sleep,
    }, mt)
    for _, name in ipairs{ "max_retry_wait", "deadline", "loading_timeout" } do
      local v = opts[name]
      if v ~= nil and not (v >= 0 and v < math.huge) then
        error(("userlist.%s: bad option '%s' (a number of seconds >= 0 expected)"):format(def.name, name), 2)
      end
    end
    if self._max_retries < 0 or self._max_retries ~= math.floor(self._max_retries) then
      error(("userlist.%s: bad option 'max_retries' (a whole number >= 0 expected)"):format(def.name), 2)
    end
    -- fail now, not at the first request, on bad session options
    core.session(session_options):close()
    secrets[self] = key
    return self
  end
end

M.Client = Client
return M
