--- What every provider client shares: construction from options and the
-- environment. Requests go through the client's transport
-- (userlist.transport); listings through the pager. Provider modules are
-- declarations handed to `client.define`.
-- @module userlist.client
local core = require "userlist.core"
local pager = require "userlist.pager"
local transport = require "userlist.transport"

local M = {}

-- The options every client takes, and their types. Session options go to
-- the core (userlist.core.session), which checks their values.
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
-- Every option's default, the client's too, is the core's (csrc/session.c):
-- one table, which the docs point to.
M.DEFAULTS = core.defaults

local Client = {}

--- Closes the client's idle connections (listings own their own).
function Client:close() self.transport:close() end

--- `client:pages(query)`: page by page (see userlist.pager).
function Client:pages(q) return pager.pages(self, self.listing, q) end
--- `client:users(query)`: every matching user, across all pages.
function Client:users(q) return pager.users(self, self.listing, q) end
--- `client:page(query)`: one page, or nil, err (never raises for API errors).
function Client:page(q) return pager.page(self, self.listing, q) end

-- Raises a programmer mistake in the options, blamed on the constructor's
-- caller (level 4: past this, the check calling it and the constructor).
local function bad(def, fmt, ...)
  error(("userlist.%s: " .. fmt):format(def.name, ...), 4)
end

-- Every option known, of the right type; numbers in range.
local function check_options(def, opts)
  for k, v in pairs(opts) do
    local want = SESSION_OPTIONS[k] or CLIENT_OPTIONS[k] or (def.options and def.options[k])
    if not want then bad(def, "unknown option '%s'", tostring(k)) end
    if type(v) ~= want then bad(def, "bad option '%s' (%s expected, got %s)", k, want, type(v)) end
  end
end

local function check_numbers(def, opts)
  for _, name in ipairs{ "max_retry_wait", "deadline", "loading_timeout" } do
    local v = opts[name]
    if v ~= nil and not (v >= 0 and v < math.huge) then
      bad(def, "bad option '%s' (a number of seconds >= 0 expected)", name)
    end
  end
  local conc = opts.concurrency or M.DEFAULTS.concurrency
  if conc < 1 or conc > 64 or conc ~= math.floor(conc) then
    bad(def, "bad option 'concurrency' (a whole number from 1 to 64 expected)")
  end
  local retries = opts.max_retries or M.DEFAULTS.max_retries
  if retries < 0 or retries ~= math.floor(retries) then
    bad(def, "bad option 'max_retries' (a whole number >= 0 expected)")
  end
end

-- The engine module; transfer_thread (a session option, off by default:
-- bench/README.md shows the socket buffers mostly do its work) only where
-- the engine allows threads: nginx's worker runs none of ours.
local function engine_of(def, opts)
  local engine, why = transport.engine(opts.engine or M.DEFAULTS.engine)
  if not engine then bad(def, "bad option 'engine' (%s)", why) end
  if opts.transfer_thread and not engine.threads then
    bad(def, "bad option 'transfer_thread' (the %s engine runs no threads)", engine.name)
  end
  return engine
end

--- Builds a provider constructor from its declaration.
-- def: name, env_key, base_url(opts) -> url, options (extra option types),
-- listing, error(err), check(res), fallback(transport, req, res, err), methods.
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
    check_options(def, opts)
    local key = opts.api_key or os.getenv(def.env_key)
    if key == nil or key == "" then
      error(("userlist.%s: no API key (pass api_key or set %s)"):format(def.name, def.env_key), 2)
    end
    local base = opts.base_url or def.base_url(opts)
    if type(base) ~= "string" or not base:match("^https?://[^/]") then
      error(("userlist.%s: bad base_url %s (an http(s) URL expected)"):format(def.name, tostring(base)), 2)
    end
    base = base:gsub("/+$", "")
    local engine = engine_of(def, opts)
    check_numbers(def, opts)
    local shown, session_options = {}, {}
    for k, v in pairs(opts) do
      if k ~= "api_key" then shown[k] = v end
    end
    for k in pairs(SESSION_OPTIONS) do session_options[k] = opts[k] end
    -- fail now, not at the first request, on bad session options
    core.session(session_options):close()
    local d = M.DEFAULTS
    return setmetatable({
      provider = def.name, base_url = base, options = shown, listing = def.listing,
      schema = def.query, -- the listing's query (userlist.args), which resume tokens fingerprint
      transport = transport.new{
        provider = def, base_url = base, key = key, engine = engine,
        session_options = session_options, headers = opts.headers,
        max_retries = opts.max_retries or d.max_retries, timeout = opts.timeout or d.timeout,
        loading_timeout = opts.loading_timeout or d.loading_timeout,
        max_retry_wait = opts.max_retry_wait or d.max_retry_wait, deadline = opts.deadline,
        on_event = opts.on_event, sleep = opts.sleep, strict = opts.strict,
        concurrency = opts.concurrency or d.concurrency,
      },
    }, mt)
  end
end

M.Client = Client
return M
