--- The wire requests of each provider's listing at its largest page size,
-- for the benchmark's comparisons (bench/bench.lua): what userlist sends,
-- written out by hand as a user of luasocket, Python or curl would.
-- Pure Lua; needs the emulator's user count `n` and base URL.
local M = {}

local PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
M.PIPE = PIPE

-- Each provider: `per` (page size), `pages(n)` (pages of a full listing),
-- `req(base, k, n)` -> method, url, body (page k from 0), and `rows(n)`
-- (rows a full listing yields).
M.helicone = {
  per = 1000,
  req = function(base, k)
    return "POST", base .. "/v1/user/metrics/query",
      ('{"filter":"all","limit":1000,"offset":%d,"sort":{"user_id":"asc"}}'):format(k * 1000)
  end,
}
M.openlayer = {
  per = 100,
  req = function(base, k)
    return "POST", ("%s/v1/inference-pipelines/%s/users?page=%d&perPage=100"):format(base, PIPE, k + 1), "{}"
  end,
}
M.arthur = {
  per = 5000,
  req = function(base, k)
    return "GET", ("%s/api/v1/traces/users?page=%d&page_size=5000&sort=asc&task_ids=task-1"
      .. "&task_ids=task-2&task_ids=task-3"):format(base, k), nil
  end,
}
M.usertour = {
  per = 100,
  -- the cursor of page k is the last id of page k - 1 (the server's next link)
  req = function(base, k)
    if k == 0 then return "GET", base .. "/v1/users?limit=100", nil end
    return "GET", ("%s/v1/users?limit=100&cursor=user-%07d"):format(base, k * 100), nil
  end,
}

--- Rows of a full listing of n users: Arthur has one row per (user, task),
-- users i % 5 == 0 being in two tasks.
function M.rows(name, n)
  if name == "arthur" then return n + math.floor(n / 5) end
  return n
end

--- Requests of a full listing: one per page, plus the empty page that ends
-- an exact multiple (none for Usertour, whose last page says so, nor for
-- Arthur, whose count does).
function M.pages(name, n)
  local p = M[name]
  local rows = M.rows(name, n)
  local full = math.ceil(rows / p.per)
  if rows % p.per == 0 and name ~= "usertour" and name ~= "arthur" then full = full + 1 end
  return math.max(full, 1)
end

M.KEYS = { helicone = "sk-helicone-emu", openlayer = "ol-emu-key", arthur = "arthur-emu-key",
  usertour = "ak_emu" }

return M
