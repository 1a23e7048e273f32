--- The transport: every request of a client goes through here. It owns the
-- client's idle sessions, its engine, the rate limiter and the retry
-- policy. The pager and the providers' own methods use only this:
--
--    transport:request(req) -> res | nil, err        one call on an idle session
--    transport:session(share) -> session             a session for a listing
--    transport:begin(req, session, deadline_at) -> begun   the first try, not waited for
--    transport:collect(req, session, deadline_at, begun) -> res | nil, err
--    transport:window(n), transport:paused()         what the rate limit allows
--    transport:deadline_at(), transport:url(req), transport:emit(ev), transport:scrub(v)
--
-- `req` = {method, path (or url), query, json, rows, arrived}. `arrived(text)`,
-- if given, is called with each successful raw body as soon as it has come,
-- before it is decoded (a listing starts its next request from there).
-- @module userlist.transport
local core = require "userlist.core"
local errors = require "userlist.errors"

local M = {}

local Transport = {}
Transport.__index = Transport

-- API keys live here, never in a table the caller can print or serialise.
local secrets = setmetatable({}, { __mode = "k" })

-- Idle sessions a client keeps for calls outside listings (page(), user()...).
local POOL_MAX = 4

--- The engine module for an `engine` option: "auto", "nginx" or "blocking".
-- @return the module, or nil and what is wrong
function M.engine(name)
  local nginx = require "userlist.engine.nginx"
  if name == "auto" then name = nginx.api() and "nginx" or "blocking" end
  if name == "blocking" then return require "userlist.engine.blocking" end
  if name ~= "nginx" then return nil, "auto, nginx or blocking expected, got " .. tostring(name) end
  if not nginx.api() then return nil, "nginx needs OpenResty or ngx_lua" end
  return nginx
end

--- A transport. `o`: provider (its declaration: name, check, error,
-- fallback), base_url, key, engine (a module), session_options, headers,
-- and the client options of the retry policy and the rate limiter.
function M.new(o)
  local self = setmetatable({
    provider = o.provider.name, base_url = o.base_url, engine = o.engine,
    strict = o.strict == true, concurrency = o.concurrency,
    _def = o.provider, _session_options = o.session_options, _headers = o.headers,
    _max_retries = o.max_retries, _loading_timeout = o.loading_timeout,
    _max_retry_wait = o.max_retry_wait, _deadline = o.deadline, _timeout = o.timeout,
    _on_event = o.on_event, _sleep = o.sleep or o.engine.sleep,
    _pool = {},
    -- the rate limiter: what the last rate-limit headers said is left, and
    -- until when the next request waits because the budget is spent
    _remaining = nil, _pause_until = nil,
  }, Transport)
  secrets[self] = o.key
  return self
end

--- An id as one path segment: percent-encoded, and an id of dots only
-- ("." or "..") with its dots encoded too, which URL normalisation would
-- otherwise resolve away. Every provider builds its paths with this.
function M.segment(id)
  local e = core.escape(id)
  if e:match("^%.+$") then e = (e:gsub("%.", "%%2E")) end
  return e
end

--- The URL a request goes to: its own, or its path on the base URL.
function Transport:url(req)
  return req.url or (self.base_url .. req.path)
end

-- Sessions -------------------------------------------------------------------

--- A new session; `share`: a session whose multi handle (and so whose
-- connections) it joins.
function Transport:session(share)
  return core.session(self._session_options, share)
end

-- An idle session of the pool (its connection is reused) or a new one. Each
-- call gets its own, so calls that yield inside nginx never share a transfer.
function Transport:acquire()
  local pool = self._pool
  local s = pool[#pool]
  if not s then return self:session() end
  pool[#pool] = nil
  return s
end

function Transport:release(s)
  local pool = self._pool
  if #pool < POOL_MAX and not s:busy() then
    pool[#pool + 1] = s
  else
    s:close()
  end
end

--- Closes the idle sessions (listings own theirs).
function Transport:close()
  local pool = self._pool
  for i = #pool, 1, -1 do
    pool[i]:close()
    pool[i] = nil
  end
end

-- Events and redaction ------------------------------------------------------

-- A server can echo the key back in anything it sends (an error body, a
-- next link): every error and event is scrubbed before the caller sees it.
local scrub_string = core.redact

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

--- Removes the key from every string of v (an error, an event), in place.
-- @return v
function Transport:scrub(v)
  return scrub(v, secrets[self], 0)
end

--- Hands an event to the on_event hook, if any. Events carry the method and
-- the URL (never a key), the attempt, and per type: status, kind, wait.
function Transport:emit(ev)
  local hook = self._on_event
  if hook then
    ev.provider = self.provider
    hook(self:scrub(ev))
  end
end

-- The rate limiter ---------------------------------------------------------

--- When a listing's requests must end: the client's deadline from now.
function Transport:deadline_at()
  return self._deadline and core.now() + self._deadline
end

--- How many requests may be in flight, of `n` wanted: no more than the last
-- rate-limit headers said are left (at least one).
function Transport:window(n)
  local left = self._remaining
  if left and left < n then return left > 0 and left or 1 end
  return n
end

--- Whether a spent rate limit is being waited out: then nothing starts
-- early, and the next request waits first.
function Transport:paused()
  local pause = self._pause_until
  return pause ~= nil and pause > core.now()
end

-- Rate-limit headers that say the budget is spent: pause the next request
-- until the reset instead of spending a request on a 429.
function Transport:_note_rate_limit(rl)
  if rl and rl.remaining then self._remaining = rl.remaining end
  if rl and rl.remaining == 0 and rl.reset and rl.reset > 0 then
    self._pause_until = core.now() + math.min(rl.reset, self._max_retry_wait)
  end
end

-- One call ----------------------------------------------------------------
-- A call is one request with its waits and retries. Its state `c`: req, url,
-- deadline_at, attempt, begun (a first try started ahead), and the "still
-- loading" answers seen (loads) with the time slept on them (waited).

-- Errors that end a call as they are: the deadline's, and data still
-- loading past loading_timeout (the provider's error mapping and the retry
-- policy are for what the server said).
local final = setmetatable({}, { __mode = "k" })

local function deadline_error(self, c, cause)
  local err = errors.new{ kind = "timeout", provider = self.provider, method = c.req.method, url = c.url,
    retryable = false, cause = cause,
    message = ("the deadline of %gs passed%s"):format(self._deadline,
      cause and (" (last error: " .. (cause.message or cause.kind) .. ")") or "") }
  final[err] = true
  return err
end

-- Sleeps `secs` for `reason`, unless that would pass the deadline.
function Transport:_wait(secs, reason, c, attempt)
  if c.deadline_at and core.now() + secs > c.deadline_at then return false end
  self:emit{ type = "wait", reason = reason, wait = secs, method = c.req.method, url = c.url,
             attempt = attempt }
  self._sleep(secs)
  return true
end

-- Whether the body is decoded here rather than by the core as it arrives:
-- when the caller sees the raw body first (`arrived`) or the engine decodes
-- in its own time (nginx's per-turn budget).
local function decodes_later(self, req)
  return req.arrived ~= nil or self.engine.defer_decode
end

-- The transfer table of the core for a call.
function Transport:_exchange(c, timeout)
  local req = c.req
  return { method = req.method, url = c.url, query = req.query, json = req.json,
           api_key = secrets[self], headers = self._headers, timeout = timeout,
           decode = not decodes_later(self, req), rows = req.rows }
end

function Transport:_refused(c)
  local why = self.engine.refusal()
  return why and errors.new{ kind = "invalid", provider = self.provider, method = c.req.method,
    url = c.url, message = why }
end

local function new_call(self, req, deadline_at)
  return { req = req, url = self:url(req), attempt = 0,
           deadline_at = deadline_at or self:deadline_at(), loads = 0, waited = 0 }
end

-- Waits out a spent rate limit before a try (not before collecting one
-- begun ahead). @return nil, or the deadline's error
function Transport:_rate_pause(c)
  if c.begun then return nil end
  local pause = self._pause_until and self._pause_until - core.now()
  self._pause_until = nil
  if pause and pause > 0 and not self:_wait(pause, "rate_limit", c, c.attempt + 1) then
    return deadline_error(self, c)
  end
  return nil
end

-- One try: collects the one begun ahead, or runs a new one. @return res | nil, err
function Transport:_try(session, c)
  local timeout = self._timeout
  if c.deadline_at then
    local left = c.deadline_at - core.now()
    if left <= 0 then return nil, deadline_error(self, c) end
    timeout = math.min(left, timeout)
  end
  local res, err
  if c.begun then
    res, err = c.begun.res, c.begun.err
    if res == nil and err == nil then res, err = self.engine.await(session) end
    c.begun = nil
  else
    self:emit{ type = "request", method = c.req.method, url = c.url, attempt = c.attempt + 1 }
    err = self:_refused(c)
    if not err then res, err = self.engine.transfer(session, self:_exchange(c, timeout)) end
  end
  self:emit{ type = "response", method = c.req.method, url = c.url, attempt = c.attempt + 1,
             status = res and res.status or err.status, kind = err and err.kind }
  self:_note_rate_limit((res or err).rate_limit)
  return res, err
end

-- A body the core did not decode on arrival: the raw text to `arrived`
-- first, then, once the engine admits it, decoded as the core would have.
function Transport:_decode(c, res)
  local req = c.req
  if type(res.body) ~= "string" or not decodes_later(self, req) then return res end
  if req.arrived then req.arrived(res.body) end
  self.engine.admit(#res.body)
  if res.status == 204 then
    res.body = nil
    return res
  end
  local body, more = core.decode_body(res.body, req.method, c.url, secrets[self], req.rows)
  if body == nil then return nil, more end
  res.body, res.shaped = body, req.rows and more or nil
  return res
end

-- The retry policy ----------------------------------------------------------

-- A request the server judged wrong or unauthorised fails the same way
-- every time: never retried, whatever x-should-retry says.
local NEVER = { [400] = true, [401] = true, [403] = true, [404] = true, [422] = true }

--- Whether trying again can help, from the facts the core reports: a
-- transfer libcurl gave up on for the network or a timeout (it has a
-- curl_code); an HTTP 408, 409, 429 or 5xx, unless the server's
-- x-should-retry header says otherwise either way.
function M.retryable(err)
  local kind = rawget(err, "kind")
  if kind == "http" then
    local status = rawget(err, "status") or 0
    local headers = rawget(err, "headers")
    local says = type(headers) == "table" and headers["x-should-retry"]
    if says == "false" then return false end
    if says == "true" then return not NEVER[status] end
    return status == 408 or status == 409 or status == 429 or status >= 500
  end
  return (kind == "network" or kind == "timeout") and rawget(err, "curl_code") ~= nil
end

-- The core's errors come without `retryable`: reading it asks the policy
-- (errors the Lua layer makes say it themselves).
core.error_mt.__index = function(err, k)
  if k == "retryable" then return M.retryable(err) end
end

-- Waits before another try: the server's word if it gave one (up to the
-- cap), else exponential backoff 0.5 s doubling to 8 s, minus up to 25% jitter.
local function backoff(attempt, retry_after, cap)
  if retry_after then return math.min(retry_after, cap) end
  local base = math.min(0.5 * 2 ^ (attempt - 1), 8)
  return base * (1 - 0.25 * math.random())
end

-- The provider's verdict on a response: res, nil with its error, or false
-- when the server is still loading the data and the same request is to be
-- asked again (after a wait, within loading_timeout).
function Transport:_check(c, res)
  local check = self._def.check
  if not check then return res end
  local verdict, perr = check(res)
  if verdict ~= "loading" then
    if perr then return nil, perr end
    return res
  end
  local now = core.now()
  c.loading_since = c.loading_since or now
  local wait = backoff(math.min(c.loads + 1, 4), nil, self._max_retry_wait)
  -- the larger of the clock and the sum of waits: an injected sleep that
  -- does not really sleep still reaches the bound
  if math.max(now - c.loading_since, c.waited) + wait > self._loading_timeout then
    local err = errors.new{ kind = "loading", provider = self.provider, status = res.status,
      retryable = true, method = c.req.method, url = c.url,
      message = ("data still loading after %gs (loading_timeout)"):format(self._loading_timeout) }
    final[err] = true
    return nil, err
  end
  c.loads, c.waited = c.loads + 1, c.waited + wait
  if not self:_wait(wait, "loading", c, c.attempt + 1) then return nil, deadline_error(self, c) end
  return false
end

-- The retry policy: whether a failed try is tried again (after its wait).
-- @return true, or false and the error to give the caller
function Transport:_retry(c, err)
  if rawget(err, "retryable") == nil then err.retryable = M.retryable(err) end
  err.provider = self.provider
  err.method, err.url = err.method or c.req.method, err.url or c.url
  if self._def.error then self._def.error(err) end
  if not (err.retryable and c.attempt < self._max_retries) then return false, err end
  c.attempt = c.attempt + 1
  local rl = err.rate_limit
  local hint = err.retry_after or (rl and rl.remaining == 0 and rl.reset) or nil
  local wait = backoff(c.attempt, hint, self._max_retry_wait)
  self._pause_until = nil -- this wait covers it
  self:emit{ type = "retry", method = c.req.method, url = c.url, attempt = c.attempt,
             status = err.status, kind = err.kind, wait = wait }
  if not self:_wait(wait, "retry", c, c.attempt) then return false, deadline_error(self, c, err) end
  return true
end

-- The loop of one call: tries until a response the provider accepts, an
-- error not worth another try, or the deadline.
function Transport:_run(session, c)
  while true do
    local res, err
    err = self:_rate_pause(c)
    if not err then res, err = self:_try(session, c) end
    if res then res, err = self:_decode(c, res) end
    -- for normalize.rows, handed it by the listing's parse
    if res and res.shaped then res.shaped.lenient = c.req.rows[4] end
    if res then res, err = self:_check(c, res) end
    if res then return res end
    if res == nil then
      if final[err] then return nil, err end
      local again, last = self:_retry(c, err)
      if not again then return nil, last end
    end
  end
end

--- Collects the call of `req` on `session`: its first try begun ahead
-- (`begun`, from begin) or a new one, then what goes wrong handled, retries
-- included. `deadline_at` (core.now() time) bounds the call with its
-- retries and waits; by default the client's `deadline` from now. A
-- provider's `fallback(transport, req, res, err)` may ask once for another
-- request instead (Helicone's refused default sort).
-- @return the response (status, headers, body) or nil, err
function Transport:collect(req, session, deadline_at, begun)
  local c = new_call(self, req, deadline_at)
  c.begun = begun
  local res, err = self:_run(session, c)
  local fallback = self._def.fallback
  local again = fallback and fallback(self, req, res, err)
  if again then res, err = self:_run(session, new_call(self, again, deadline_at)) end
  if err then self:scrub(err) end
  return res, err
end

--- One call on an idle session of the client's (see collect).
function Transport:request(req)
  local session = self:acquire()
  local res, err = self:collect(req, session)
  self:release(session)
  return res, err
end

--- Starts the first try of req on `session` without waiting for it (a page
-- fetched ahead), for `collect(req, session, deadline_at, begun)`: what goes
-- wrong is handled there, retries included. Returns `begun`.
function Transport:begin(req, session, deadline_at)
  local c = new_call(self, req, deadline_at)
  local timeout = self._timeout
  if deadline_at then timeout = math.max(math.min(deadline_at - core.now(), timeout), 0.001) end
  local begun = { err = self:_refused(c) }
  if begun.err then return begun end
  self:emit{ type = "request", method = req.method, url = c.url, attempt = 1 }
  local ok, err = session:start(self:_exchange(c, timeout))
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

return M
