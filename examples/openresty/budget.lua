--- A per-user budget gate for nginx (see nginx.conf and README.md here).
-- One worker refreshes every user's cost from Helicone into the shared dict
-- `budget` from an ngx.timer (userlist yields to nginx while it waits on
-- HTTP, so the worker goes on serving); every worker's access phase reads
-- the dict only, and answers 429 to a user over BUDGET_USD.
local userlist = require "userlist"

local M = {}

local dict = ngx.shared.budget
local function env_number(name, default)
  local v = tonumber(os.getenv(name) or "")
  return v or default
end
local BUDGET = env_number("BUDGET_USD", 5)
local EVERY = env_number("BUDGET_REFRESH_SECONDS", 60)

-- One listing of every user into the dict. Costs are written under the
-- listing's generation and the generation switched at the end, so readers
-- never see a half-written refresh; a failed refresh keeps the last one.
local function refresh(premature)
  if premature then return end
  local base = os.getenv("HELICONE_BASE_URL")
  local ok, err = pcall(function()
    local hc = userlist.helicone{ base_url = base ~= "" and base or nil, max_retries = 3 }
    local gen = (dict:get("generation") or 0) + 1
    local n = 0
    for user in hc:users{ limit = 1000 } do
      dict:set(gen .. ":" .. user.id, user.cost or 0, EVERY * 3)
      n = n + 1
    end
    dict:set("generation", gen)
    dict:set("users", n)
    dict:set("refreshed_at", ngx.now())
    dict:delete("last_error")
  end)
  if not ok then
    dict:set("last_error", tostring(err)) -- userlist errors print one line, never the key
    ngx.log(ngx.ERR, "budget refresh failed: ", tostring(err))
  end
end

--- init_worker: worker 0 refreshes now and then every EVERY seconds.
function M.start()
  if ngx.worker.id() ~= 0 then return end
  assert(ngx.timer.at(0, refresh))
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

--- /_budget: {"users", "refreshed_at", "budget", "last_error"}.
function M.status()
  local err = dict:get("last_error")
  ngx.header["Content-Type"] = "application/json"
  ngx.say(('{"users":%d,"refreshed_at":%s,"budget":%.6f,"last_error":%s}'):format(
    dict:get("users") or 0, tostring(dict:get("refreshed_at") or "null"), BUDGET,
    err and ('"' .. err:gsub('[%c"\\]', " ") .. '"') or "null"))
end

return M
