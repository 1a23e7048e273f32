--- What every provider client shares: construction from options and the
-- environment, and the one request path (errors mapped to the provider's
-- shapes, "still loading" answers waited out, retries). Provider modules
-- are declarations handed to `client.define`.
-- @module userlist.client
local core = require "userlist.core"
local errors = require "userlist.errors"
local norm = require "userlist.normalize"
local pager = require "userlist.pager"

local M = {}

-- API keys live here, never in the client table, so that printing or
-- serialising a client cannot show them.
local secrets = setmetatable({}, { __mode = "k" })

local SESSION_OPTIONS = {
  timeout = "number", connect_timeout = "number", low_speed_limit = "number",
  low_speed_time = "number", max_size = "number", verify = "boolean", cafile = "string",
  capath = "string", proxy = "string", follow_redirects = "boolean", max_redirects = "number",
  allow_insecure_http = "boolean", transfer_thread = "boolean",
}
local CLIENT_OPTIONS = {
  api_key = "string", base_url = "string", headers = "table", max_retries = "number",
  loading_timeout = "number", sleep = "function", max_retry_wait = "number",
  deadline = "number", on_event = "function", engine = "string", concurrency = "number",
  strict = "boolean",
}

-- Engines: "blocking" waits in libcurl (curl_multi_poll); "nginx" steps the
-- transfer without blocking and yields to nginx's event loop between steps
-- (ngx.sleep), so one worker serves every other connection meanwhile.
local ENGINES = { auto = true, nginx = true, blocking = true }
-- The phases where ngx.sleep may yield; elsewhere waiting would block.
local YIELDING = { rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true }
-- Poll interval inside nginx: 1 ms at first (a fast answer costs little
-- latency), doubling while the transfer waits, up to 16 ms (a slow one costs
-- few wake-ups); never longer than libcurl's own next deadline.
local POLL_MIN, POLL_MAX = 0.001, 0.016
-- Pages of many listings can land in the same turn of a worker's event
-- loop; decoding them all in that turn would hold every other connection of
-- the worker (25-65 ms for 150 small pages). So the nginx engine decodes at
-- most TURN_BYTES of bodies per turn, per worker (this module's upvalues:
-- one Lua VM per worker); a page past that waits for a later turn. One page
-- is always let through, however large.
local TURN_BYTES = 256 * 1024
local turn_at, turn_bytes, turn_gen = nil, 0, 0
-- Idle sessions a client keeps for calls outside listings (page(), user()...).
local POOL_MAX = 4

local function ngx_api()
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" and type(ngx.sleep) == "function" then
    return ngx
  end
  return nil
end

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

-- Values only, never names: a decoded body or a header table.
local function scrub_values(t, key, depth)
  for k, x in pairs(t) do
    if type(x) == "string" then
      t[k] = scrub_string(x, key)
    elseif type(x) == "table" and depth < 16 then
      scrub_values(x, key, depth + 1)
    end
  end
end

-- The free-text fields of an error or an event; `kind`, `provider` and the
-- like are the library's own words and stay as they are.
local TEXT = { "message", "url", "raw", "excerpt", "code" }
local function scrub(v, key, depth)
  for i = 1, #TEXT do
    local x = v[TEXT[i]]
    if type(x) == "string" then v[TEXT[i]] = scrub_string(x, key) end
  end
  for _, name in ipairs{ "body", "headers" } do
    local x = v[name]
    if type(x) == "string" then
      v[name] = scrub_string(x, key)
    elseif type(x) == "table" then
      scrub_values(x, key, 0)
    end
  end
  if type(v.cause) == "table" and depth < 4 then scrub(v.cause, key, depth + 1) end
  return v
end

local function nginx_sleep(secs) return ngx_api().sleep(secs) end

-- Waits inside nginx until this turn has room to decode `bytes` of body.
-- ngx.now() is the time nginx caches at the start of each turn, so a new
-- value means a new turn. With a coarse timer_resolution it changes less
-- often; then a coroutine that slept, and found on waking that no one has
-- begun a turn since (turn_gen unchanged), begins one itself: having slept,
-- it is in a later turn.
local function nginx_turn(nginx, bytes)
  local slept
  while true do
    local now = nginx.now()
    if now ~= turn_at or slept == turn_gen then
      turn_at, turn_bytes, turn_gen = now, 0, turn_gen + 1
    end
    if turn_bytes == 0 or turn_bytes + bytes <= TURN_BYTES then
      turn_bytes = turn_bytes + bytes
      return
    end
    slept = turn_gen
    nginx.sleep(0.001)
  end
end

local Client = {}

--- The session options this client opens its connections with.
function Client:_new_session(share)
  return core.session(self._session_options, share)
end

--- A session for one call: an idle one of the client's (its connection is
-- reused) or a new one. Each coroutine gets its own, so calls that yield
-- inside nginx never share a transfer.
function Client:_acquire()
  local pool = self._pool
  local n = #pool
  if n == 0 then return self:_new_session() end
  local s = pool[n]
  pool[n] = nil
  return s
end

function Client:_release(s)
  local pool = self._pool
  if #pool < POOL_MAX and not s:busy() then
    pool[#pool + 1] = s
  else
    s:close()
  end
end

--- Closes the client's idle connections (listings own their own).
function Client:close()
  local pool = self._pool
  for i = #pool, 1, -1 do
    pool[i]:close()
    pool[i] = nil
  end
end

-- Inside nginx, waiting is allowed only where ngx.sleep can yield.
function Client:_nginx_refusal(t)
  local phase = ngx_api().get_phase()
  if YIELDING[phase] then return nil end
  return errors.new{ kind = "invalid", provider = self.provider, method = t.method, url = t.url,
    message = ("cannot wait for HTTP in nginx's %s phase without blocking the worker: call "
      .. "userlist from a rewrite, access or content handler or from ngx.timer.at"):format(phase) }
end

--- Waits for the transfer under way on `session`: the response, or nil, err.
-- The blocking engine waits in libcurl (which meanwhile also moves the
-- other transfers of the session's multi handle); the nginx engine sleeps
-- in nginx between non-blocking steps.
function Client:_await(session)
  local nginx = self._engine == "nginx" and ngx_api()
  local pause = POLL_MIN
  while true do
    local res, hint = session:step()
    if res ~= false then return res, hint end
    if nginx then
      nginx.sleep(hint and hint < pause and hint or pause)
      if pause < POLL_MAX then pause = pause * 2 end
    else
      session:wait(hint and hint < 1 and hint or 1)
    end
  end
end

--- One HTTP exchange on `session` with the client's engine: the response,
-- or nil, err.
function Client:_transfer(session, t)
  if self._engine == "blocking" then return session:request(t) end
  local refused = self:_nginx_refusal(t)
  if refused then return nil, refused end
  local ok, err = session:start(t)
  if not ok then return nil, err end
  return self:_await(session)
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
  if rl and rl.remaining then self._rate_remaining = rl.remaining end
  if rl and rl.remaining == 0 and rl.reset and rl.reset > 0 then
    self._pause_until = core.now() + math.min(rl.reset, self._max_retry_wait)
  end
end

local call -- below: the loop of one call

--- The one request path. `req`: {method=, path= (or url=), query=, json=,
-- peek=}; `peek(text)`, if given, sees each successful raw body before it
-- is decoded.
-- `deadline_at` (core.now() time) bounds the call with its retries and waits;
-- by default the client's `deadline` option from now.
-- @return the response (status, headers, body) or nil, err
function Client:_call(req, session, deadline_at, begun)
  local own = session == nil
  if own then session = self:_acquire() end
  local res, err = call(self, req, session, deadline_at, begun)
  if own then self:_release(session) end
  if err then self:_scrub(err) end
  return res, err
end

-- Whether call() decodes req's body, rather than the core as it arrives:
-- with peek (which sees the raw body first) and inside nginx (which decodes
-- in a turn with room for it).
function Client:_decodes_later(req)
  return req.peek ~= nil or self._engine == "nginx"
end

-- The transfer table of the core for req.
function Client:_exchange(req, url, timeout)
  return { method = req.method, url = url, query = req.query, json = req.json,
           api_key = secrets[self], headers = self._headers, timeout = timeout,
           decode = not self:_decodes_later(req), rows = req.rows }
end

--- Starts the first try of req on `session` without waiting for it (a page
-- fetched ahead), for `_call(req, session, deadline_at, begun)` to collect:
-- what goes wrong is handled there, retries included. Returns `begun`.
function Client:_begin(req, session, deadline_at)
  local url = req.url or (self.base_url .. req.path)
  local timeout = self._timeout
  if deadline_at then timeout = math.max(math.min(deadline_at - core.now(), timeout), 0.001) end
  local t = self:_exchange(req, url, timeout)
  local begun = {}
  if self._engine == "nginx" then begun.err = self:_nginx_refusal(t) end
  if begun.err then return begun end
  self:_emit{ type = "request", method = req.method, url = url, attempt = 1 }
  local ok, err = session:start(t)
  if not ok then
    begun.err = err
    return begun
  end
  -- send it now, so the server works while the caller reads: a few
  -- non-blocking steps get a request out on a connection that is open; one
  -- still connecting goes out when the listing next drives libcurl
  for _ = 1, 4 do
    local res, e = session:step()
    if res ~= false then
      begun.res, begun.err = res, e
      break
    end
    if session:sent() then break end
  end
  return begun
end

function call(self, req, session, deadline_at, begun)
  local def = self._def
  deadline_at = deadline_at or (self._deadline and core.now() + self._deadline)
  local attempt, loading_since = 0, nil
  local loads, waited = 0, 0 -- "still loading" answers and the time slept on them
  local url = req.url or (self.base_url .. req.path)
  while true do
    local pause = not begun and self._pause_until and self._pause_until - core.now()
    if not begun then self._pause_until = nil end
    if pause and pause > 0 and not self:_wait(pause, "rate_limit", req, url, attempt + 1, deadline_at) then
      return nil, deadline_error(self, req, url)
    end
    local timeout
    if deadline_at then
      local left = deadline_at - core.now()
      if left <= 0 then return nil, deadline_error(self, req, url) end
      timeout = math.min(left, self._timeout)
    end
    local res, err
    if begun then
      -- the first try was started ahead (a prefetched page): collect it
      res, err = begun.res, begun.err
      if res == nil and err == nil then res, err = self:_await(session) end
      begun = nil
    else
      self:_emit{ type = "request", method = req.method, url = url, attempt = attempt + 1 }
      res, err = self:_transfer(session, self:_exchange(req, url, timeout))
    end
    self:_emit{ type = "response", method = req.method, url = url, attempt = attempt + 1,
                status = res and res.status or err.status, kind = err and err.kind }
    self:_note_rate_limit((res or err).rate_limit)
    if res and type(res.body) == "string" and self:_decodes_later(req) then
      -- the raw body first (a cursor listing starts its next page from it),
      -- then, in a turn with room for it inside nginx, decoded as the core
      -- would have
      if req.peek then req.peek(res.body) end
      if self._engine == "nginx" then nginx_turn(ngx_api(), #res.body) end
      if res.status == 204 then
        res.body = nil
      else
        local body, more = core.decode_body(res.body, req.method, url, secrets[self], req.rows)
        if body == nil then
          res, err = nil, more
        else
          res.body, res.shaped = body, req.rows and more or nil
        end
      end
    end
    if res and res.shaped then norm.adopt(res.shaped, req.rows[4]) end
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
      _strict = opts.strict == true,
      _pool = {},
    }, mt)
    local engine = opts.engine or "auto"
    if not ENGINES[engine] then
      error(("userlist.%s: bad option 'engine' (auto, nginx or blocking expected, got %s)")
        :format(def.name, engine), 2)
    end
    if engine == "auto" then engine = ngx_api() and "nginx" or "blocking" end
    if engine == "nginx" and not ngx_api() then
      error(("userlist.%s: bad option 'engine' (nginx needs OpenResty or ngx_lua)"):format(def.name), 2)
    end
    self._engine = engine
    -- transfer_thread (a session option, off by default: bench/README.md
    -- shows the socket buffers mostly do its work); nginx's worker runs no
    -- threads of ours
    if opts.transfer_thread and engine == "nginx" then
      error(("userlist.%s: bad option 'transfer_thread' (the nginx engine runs no threads)")
        :format(def.name), 2)
    end
    self._sleep = opts.sleep or (engine == "nginx" and nginx_sleep or core.sleep)
    for _, name in ipairs{ "max_retry_wait", "deadline", "loading_timeout" } do
      local v = opts[name]
      if v ~= nil and not (v >= 0 and v < math.huge) then
        error(("userlist.%s: bad option '%s' (a number of seconds >= 0 expected)"):format(def.name, name), 2)
      end
    end
    local conc = opts.concurrency or 4
    if conc < 1 or conc > 64 or conc ~= math.floor(conc) then
      error(("userlist.%s: bad option 'concurrency' (a whole number from 1 to 64 expected)")
        :format(def.name), 2)
    end
    self._concurrency = conc
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
