--- The OpenResty specs' application (spec/openresty/nginx.conf.in): listings
-- of every provider inside nginx, in request handlers and in timers, with
-- their outcomes as JSON for spec/60-openresty_spec.lua to check.
local cjson = require "cjson.safe"
local userlist = require "userlist"

local M = {}
local emu -- the emulator's addresses
local dict = ngx.shared.app

local KEYS = {
  helicone = "sk-helicone-emu", openlayer = "ol-emu-key", arthur = "arthur-emu-key",
  usertour = "ak_emu", usertour_v2 = "utp_emu",
}
local PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

-- One listing per provider name: the client and the query of its users{}.
local PROVIDERS = {
  helicone = function(o) return userlist.helicone(o), { limit = 100 } end,
  openlayer = function(o)
    o.base_url = o.base_url .. "/v1"
    return userlist.openlayer(o), { pipeline_id = PIPE }
  end,
  arthur = function(o)
    return userlist.arthur(o), { task_ids = { "task-1" }, page_size = 100, sort = "asc" }
  end,
  usertour = function(o) return userlist.usertour(o), { limit = 100 } end,
  usertour_v2 = function(o)
    o.project_id, o.environment_id = "p", "e"
    return userlist.usertour(o), { limit = 100 }
  end,
}

function M.configure(t) emu = t end

-- A client for `name`, from the request's arguments: users (X-Emu-Users),
-- tls (1: the emulator's https port, verified against its CA unless ca=0).
local function client_for(name, args, on_event)
  local o = {
    api_key = KEYS[name], base_url = emu.http, max_retry_wait = 5, on_event = on_event,
    headers = { ["X-Emu-Users"] = args.users or "250" },
  }
  if args.tls == "1" then
    o.base_url = emu.https
    if args.ca ~= "0" then o.cafile = emu.ca end
  end
  if args.timeout then o.timeout = tonumber(args.timeout) end
  if args.engine then o.engine = args.engine end
  if args.thread then o.transfer_thread = args.thread == "1" end
  local make = PROVIDERS[name]
  if not make then error("unknown provider " .. tostring(name)) end
  return make(o)
end

local function describe(err)
  return { kind = err.kind, status = err.status, message = err.message, text = tostring(err) }
end

-- Lists every user: {provider, count, first, last, pages, retries, waits,
-- worker} or {error = {...}}.
local function run_listing(name, args)
  local out = { provider = name, count = 0, retries = 0, waits = 0, worker = ngx.worker.pid() }
  local ok, err = pcall(function()
    local c, q = client_for(name, args, function(ev)
      if ev.type == "retry" then out.retries = out.retries + 1 end
      if ev.type == "wait" then
        out.waits = out.waits + 1
        out.wait_reasons = (out.wait_reasons and out.wait_reasons .. "," or "") .. ev.reason
      end
    end)
    for page in c:pages(q) do
      out.pages = page.number
      for _, u in ipairs(page.users) do
        out.count = out.count + 1
        local key = name == "arthur" and (u.id .. "/" .. u.task_id) or u.id
        out.first = out.first or key
        out.last = key
      end
    end
  end)
  if not ok then
    out.error = userlist.is_error(err) and describe(err) or { text = tostring(err) }
  end
  return out
end

function M.list()
  local args = ngx.req.get_uri_args()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(run_listing(args.provider, args)))
end

-- One page on a client kept per worker (its connections are reused across
-- requests): {worker, count}.
local per_worker
function M.page()
  local args = ngx.req.get_uri_args()
  per_worker = per_worker or client_for("usertour", {})
  local page, err = per_worker:page{ limit = 10 }
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode{ worker = ngx.worker.pid(), count = page and #page.users,
    error = err and describe(err), n = args.n })
end

-- Starts n listings in ngx.timer.at jobs; each stores its outcome in the
-- shared dict under its number, and "done" counts them.
function M.start_timers()
  local args = ngx.req.get_uri_args()
  local n = tonumber(args.n) or 1
  dict:flush_all()
  dict:set("done", 0)
  local names = { "helicone", "openlayer", "arthur", "usertour", "usertour_v2" }
  for i = 1, n do
    local name = names[(i - 1) % #names + 1]
    local ok, err = ngx.timer.at(0, function(premature)
      if premature then return end
      dict:set("result:" .. i, cjson.encode(run_listing(name, args)))
      dict:incr("done", 1)
    end)
    if not ok then
      ngx.status = 500
      return ngx.say("timer: ", err)
    end
  end
  ngx.say(cjson.encode{ started = n })
end

function M.results()
  local out = { done = dict:get("done") or 0, results = {} }
  for i = 1, tonumber(ngx.var.arg_n) or 0 do
    local r = dict:get("result:" .. i)
    out.results[i] = r and cjson.decode(r) or cjson.null
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

-- A call where nothing may wait: the error it gave, under "phase:<name>".
local function try_in_phase(phase)
  local c = client_for("usertour", {})
  local page, err = c:page{ limit = 1 }
  dict:set("phase:" .. phase, cjson.encode(page and { page = true } or describe(err)))
end

function M.init_worker() try_in_phase("init_worker") end
function M.in_phase(phase) try_in_phase(phase) end

function M.phase_errors()
  local out = {}
  for _, p in ipairs{ "init_worker", "log", "header_filter" } do
    local v = dict:get("phase:" .. p)
    out[p] = v and cjson.decode(v) or cjson.null
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return M
