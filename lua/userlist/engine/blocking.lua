--- The blocking engine: waits in libcurl (curl_multi_poll), which meanwhile
-- also moves the other transfers of the session's multi handle. For plain
-- Lua, and for nginx code that opts into blocking (engine = "blocking").
-- Every engine has this interface (see userlist.engine.nginx):
--
--    refusal() -> message | nil     why waiting here would be wrong
--    transfer(session, t) -> res | nil, err   one exchange, waited for
--    await(session) -> res | nil, err         a started transfer, waited for
--    sleep(seconds)
--    admit(bytes)                   waits until a body this size may be decoded
--    defer_decode                   whether bodies are decoded by admit's
--                                   caller rather than by the core on arrival
--    threads                        whether a transfer thread is allowed
-- @module userlist.engine.blocking
local core = require "userlist.core"

local M = { name = "blocking", defer_decode = false, threads = true }

function M.refusal() return nil end

function M.transfer(session, t) return session:request(t) end

function M.await(session)
  while true do
    local res, hint = session:step()
    if res ~= false then return res, hint end
    session:wait(hint and hint < 1 and hint or 1)
  end
end

M.sleep = core.sleep

function M.admit() end

return M
