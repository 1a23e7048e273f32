--- The nginx engine: steps a transfer without blocking and sleeps in nginx
-- (ngx.sleep) between steps, so one worker serves every other connection
-- meanwhile. Same interface as userlist.engine.blocking.
-- @module userlist.engine.nginx
local M = { name = "nginx", defer_decode = true, threads = false }

-- The phases where ngx.sleep may yield; elsewhere waiting would block.
local YIELDING = { rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true }
-- Poll interval: 1 ms at first (a fast answer costs little latency),
-- doubling while the transfer waits, up to 16 ms (a slow one costs few
-- wake-ups); never longer than libcurl's own next deadline.
local POLL_MIN, POLL_MAX = 0.001, 0.016

--- ngx, when this Lua runs inside nginx (OpenResty or ngx_lua), else nil.
function M.api()
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and type(ngx.get_phase) == "function" and type(ngx.sleep) == "function" then
    return ngx
  end
  return nil
end

function M.refusal()
  local phase = M.api().get_phase()
  if YIELDING[phase] then return nil end
  return ("cannot wait for HTTP in nginx's %s phase without blocking the worker: call "
    .. "userlist from a rewrite, access or content handler or from ngx.timer.at"):format(phase)
end

function M.await(session)
  local ngx, pause = M.api(), POLL_MIN
  while true do
    local res, hint = session:step()
    if res ~= false then return res, hint end
    ngx.sleep(hint and hint < pause and hint or pause)
    if pause < POLL_MAX then pause = pause * 2 end
  end
end

function M.transfer(session, t)
  local ok, err = session:start(t)
  if not ok then return nil, err end
  return M.await(session)
end

function M.sleep(secs) return M.api().sleep(secs) end

-- Pages of many listings can land in the same turn of a worker's event
-- loop; decoding them all in that turn would hold every other connection of
-- the worker (25-65 ms for 150 small pages). So at most TURN_BYTES of
-- bodies are decoded per turn. The budget is the worker's: this module
-- lives once per Lua VM, and nginx runs one VM per worker. One page is
-- always let through, however large.
local TURN_BYTES = 256 * 1024
local turn = { at = nil, bytes = 0, gen = 0 }

-- ngx.now() is the time nginx caches at the start of each turn, so a new
-- value means a new turn. With a coarse timer_resolution it changes less
-- often; then a coroutine that slept, and found on waking that no one has
-- begun a turn since (gen unchanged), begins one itself: having slept, it
-- is in a later turn.
function M.admit(bytes)
  local ngx, slept = M.api(), nil
  while true do
    local now = ngx.now()
    if now ~= turn.at or slept == turn.gen then
      turn.at, turn.bytes, turn.gen = now, 0, turn.gen + 1
    end
    if turn.bytes == 0 or turn.bytes + bytes <= TURN_BYTES then
      turn.bytes = turn.bytes + bytes
      return
    end
    slept = turn.gen
    ngx.sleep(0.001)
  end
end

return M
