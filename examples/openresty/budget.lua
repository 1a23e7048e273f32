--- A per-user budget gate for nginx (see nginx.conf and README.md here).
-- One worker refreshes every user's cost from Helicone into the shared dict
-- `budget` from an ngx.timer (userlist yields to nginx while it waits on
-- HTTP, so the worker goes on serving); every worker's access phase reads
-- the dict only, and answers 429 to a user over BUDGET_USD.
--
-- A refresh keeps its listing's resume token in the dict as it goes: one
-- cut short (a reload or exit of the worker, an error past the retries)
-- is continued by the next refresh from the last page it consumed, not
-- listed again from the first user.
local userlist = require "userlist"

local M = {}

local dict = ngx.shared.budget
local function env_number(name, default)
  local v = tonumber(os.getenv(name) or "")
  return v or default
end
local BUDGET = env_number("BUDGET_USD", 5)
local EVERY = env_number("BUDGET_REFRESH_SECONDS", 60)
-- A cut listing is continued while it began less than MAX_AGE ago (by the
-- next timer at the latest), else listed again; a cost is kept KEEP
-- seconds, so that the first costs of a continued listing outlive its end
-- by the three intervals a generation is read for.
local MAX_AGE = 2 * EVERY
local KEEP = MAX_AGE + 3 * EVERY
-- One refresh at a time, across workers (after a reload, the old worker 0
-- may still be reading a page): the lock holds the refreshing worker's pid,
-- renewed at each page; one left by a worker killed mid-page lapses.
local LOCK_TTL = 300

local function pid() return ngx.worker.pid() end
local function owned() return dict:get("refreshing") == pid() end

-- The listing in progress: its generation, when it began, and the token to
-- continue it from (one value, so that the three change together).
local function saved()
  local gen, began, token = (dict:get("resume") or ""):match("^(%d+) ([%d.]+) (%S+)$")
  return tonumber(gen), tonumber(began), token
end
local function save(gen, began, token)
  dict:set("resume", ("%d %.3f %s"):format(gen, began, token))
end

-- Lists every user into generation `gen`, from `token` when given. Returns
-- the number of users listed, or nil and why it stopped early: the worker
-- is exiting, or another took the lock. Raises userlist's errors.
local function list(hc, gen, began, token)
  local total, stop
  local users = hc:users{ limit = 1000, resume = token,
    -- a page consumed: its token is where this listing goes on from
    on_checkpoint = function(t, info)
      total = info.users -- the whole listing's, pages before the resume included
      if info.done then return end
      save(gen, began, t)
      if owned() then dict:set("refreshing", pid(), LOCK_TTL) else stop = "lost the lock" end
    end }
  if token then
    local from = (userlist.token_info(token) or {}).users or 0
    dict:incr("resumed", 1, 0)
    dict:set("resumed_from", from)
    ngx.log(ngx.NOTICE, "budget refresh: continuing generation ", gen, " after ", from, " users")
  end
  for user in users do
    -- on reload the old worker stops here; the new worker 0 goes on from
    -- the token of the last page consumed (the rows of this one are listed again)
    if ngx.worker.exiting() then stop = "the worker is exiting" end
    if stop then break end
    dict:set(gen .. ":" .. user.id, user.cost or 0, KEEP)
  end
  if stop then return nil, stop end
  return total or 0
end

-- One listing of every user into the dict. Costs are written under the
-- listing's generation and the generation switched at the end, so readers
-- never see a half-written refresh; a failed refresh keeps the last one.
local function run()
  local base = os.getenv("HELICONE_BASE_URL")
  local hc = userlist.helicone{ base_url = base ~= "" and base or nil, max_retries = 3 }
  local gen, began, token = saved()
  if token and ngx.now() - began > MAX_AGE then
    ngx.log(ngx.WARN, "budget refresh: the cut listing began ", math.floor(ngx.now() - began),
      " s ago, too long to continue (its first costs would not outlive it): listing every user again")
    token = nil
  end
  local function fresh()
    dict:delete("resume")
    -- a new number: a listing dropped half-way leaves none of its users in it
    gen, began, token = dict:incr("generations", 1, 0), ngx.now(), nil
  end
  if not token then fresh() end
  local ok, n, stopped = pcall(list, hc, gen, began, token)
  if not ok and token and type(n) == "table" and n.kind == "invalid" and n.field == "resume" then
    -- a token of another listing: the query or the base URL changed
    ngx.log(ngx.WARN, "budget refresh: dropping the saved resume token (", tostring(n),
      "): listing every user again")
    fresh()
    ok, n, stopped = pcall(list, hc, gen, began, nil)
  end
  if not ok then
    -- the token at the page that failed (nothing of it was given)
    if type(n) == "table" and n.resume then save(gen, began, n.resume) end
    error(n, 0)
  end
  if stopped then
    ngx.log(ngx.NOTICE, "budget refresh stopped (", stopped, "): the next one continues it")
    return
  end
  dict:set("generation", gen)
  dict:set("users", n)
  dict:set("refreshed_at", ngx.now())
  dict:delete("resume")
  dict:delete("last_error")
end

local function refresh(premature, retry)
  -- premature: the worker is exiting (a reload); a listing in progress
  -- has its token in the dict already
  if premature or ngx.worker.exiting() then return end
  if not dict:add("refreshing", pid(), LOCK_TTL) then
    -- another refresh runs: this worker's own (a long one), or an old
    -- worker's that stops at its next page; the one at start waits for it
    if retry and not owned() then assert(ngx.timer.at(1, refresh, true)) end
    return
  end
  local ok, err = pcall(run)
  if not ok then
    dict:set("last_error", tostring(err)) -- userlist errors print one line, never the key
    ngx.log(ngx.ERR, "budget refresh failed: ", tostring(err))
  end
  if owned() then dict:delete("refreshing") end
end

--- init_worker: worker 0 refreshes now and then every EVERY seconds.
function M.start()
  if ngx.worker.id() ~= 0 then return end
  assert(ngx.timer.at(0, refresh, true))
  assert(ngx.timer.every(EVERY, refresh))
end

--- access: 429 for a user whose cost is over the budget. Users the gate has
-- not seen (new, or before the first refresh) pass.
function M.gate()
  local user = ngx.var.http_x_user_id
  local gen = dict:get("generation")
  if not user or not gen then return end
  local cost = dict:get(gen .. ":" .. user)
  if cost and cost > BUDGET then
    ngx.status = 429
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Retry-After"] = EVERY
    ngx.say(('{"error":"budget exceeded","cost":%.6f,"budget":%.6f}'):format(cost, BUDGET))
    return ngx.exit(429)
  end
end

local function json_number(v) return v and ("%.17g"):format(v) or "null" end

--- /_budget: {"users", "refreshed_at", "budget", "last_error", "generation",
-- "refreshing", "resume_users", "resumed", "resumed_from"}: the last
-- complete refresh; whether one runs; the users before the saved token of
-- a listing in progress (null: none saved); how many refreshes continued
-- a cut listing, and from how many users the last one did.
function M.status()
  -- the lock first: a refresh writes its outcome before it lets go of the
  -- lock, so when it is free what follows is read whole
  local refreshing = dict:get("refreshing") ~= nil
  local err = dict:get("last_error")
  local _, _, token = saved()
  local info = token and userlist.token_info(token)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(('{"users":%d,"refreshed_at":%s,"budget":%.6f,"last_error":%s,"generation":%s,'
    .. '"refreshing":%s,"resume_users":%s,"resumed":%d,"resumed_from":%s}'):format(
    dict:get("users") or 0, tostring(dict:get("refreshed_at") or "null"), BUDGET,
    err and ('"' .. err:gsub('[%c"\\]', " ") .. '"') or "null",
    json_number(dict:get("generation")), tostring(refreshing),
    json_number(info and info.users), dict:get("resumed") or 0, json_number(dict:get("resumed_from"))))
end

return M
