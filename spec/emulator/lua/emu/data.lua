--- Deterministic users. User i (1-based) is computed from i alone, so a page
-- of a million-user listing costs only its own rows. Pure Lua (5.1 to 5.4,
-- LuaJIT), no ngx: specs may dofile() this file to compute expected values.
-- The formulas are documented in spec/emulator/README.md.
local M = {}

local floor, fmt = math.floor, string.format

M.BASE = 1735689600 -- 2025-01-01T00:00:00Z
M.DEFAULT_USERS = 250
M.PLANS = { "free", "pro", "enterprise" }
M.MAX_SPAN_HOURS = 720 -- last activity is 1..720 hours after the first

local MOD = 2147483647 -- 2^31 - 1: every product below stays under 2^53

--- Integer hash of i in [0, 2^31 - 2]: MINSTD steps around a square of the
-- low 16 bits, so that nearby indices land far apart.
function M.hash(i)
  local x = (i * 48271) % MOD
  local y = x % 65536
  x = (x * 16807 + y * y) % MOD
  return (x * 48271) % MOD
end

function M.id(i) return fmt("user-%07d", i) end
function M.email(i) return fmt("user%07d@example.com", i) end
function M.name(i) return fmt("User %07d", i) end

--- Inverse of M.id: "user-0000042" -> 42; nil for any other string.
function M.index(id)
  local d = type(id) == "string" and id:match("^user%-(%d+)$")
  local i = d and tonumber(d)
  if i and i >= 1 and i == floor(i) and M.id(i) == id then return i end
  return nil
end

--- Inverse of M.email, case-insensitive.
function M.index_of_email(email)
  local d = type(email) == "string" and email:lower():match("^user(%d+)@example%.com$")
  local i = d and tonumber(d)
  if i and i >= 1 and M.email(i) == email:lower() then return i end
  return nil
end

--- Creation time (epoch seconds): ascending index = ascending creation.
function M.created(i) return M.BASE + 60 * i end

--- Every figure of user i, computed once.
function M.user(i)
  local h = M.hash(i)
  local requests = 1 + h % 20
  local sessions = 1 + floor(h / 20) % 5
  if sessions > requests then sessions = requests end
  local prompt = requests * (100 + floor(h / 100) % 900)
  local completion = requests * (20 + floor(h / 7) % 480)
  local first = M.created(i)
  local last = first + 3600 * (1 + h % M.MAX_SPAN_HOURS)
  local u = {
    i = i, h = h, id = M.id(i),
    first = first, last = last,
    active_for = floor((last - first) / 86400), -- whole days
    requests = requests, sessions = sessions,
    spans = requests * (1 + floor(h / 3) % 4),
    prompt_tokens = prompt, completion_tokens = completion, tokens = prompt + completion,
    -- costs in millionths of a USD, integers so that they stay exact
    prompt_cost = 3 * prompt, completion_cost = 15 * completion,
    rate_limited = (i % 11 == 0) and (1 + h % 3) or nil,
    has_tokens = i % 7 ~= 0,
    plan = M.PLANS[h % 3 + 1],
  }
  u.cost = u.prompt_cost + u.completion_cost
  return u
end

--- USD from millionths, always printed with six decimals.
function M.usd(micros) return fmt("%.6f", micros / 1e6) end

--- Arthur task numbers of user i, ascending: task-(i%3+1), plus
-- task-((i+1)%3+1) when i%5 == 0.
function M.tasks(i)
  local p = i % 3 + 1
  if i % 5 == 0 then
    local s = (i + 1) % 3 + 1
    if s < p then return { s, p } end
    return { p, s }
  end
  return { p }
end

--- Usertour companies of user i: co-(i%10), plus co-((i+3)%10) when i%4 == 0.
function M.companies(i)
  local c = { "co-" .. (i % 10) }
  if i % 4 == 0 then c[2] = "co-" .. ((i + 3) % 10) end
  return c
end

--- Usertour segment of user i: seg-(i%5).
function M.segment(i) return "seg-" .. (i % 5) end

--- Usertour seen times of user i (epoch seconds, whole): the first event
-- 1..3599 s after the record was made, the last at the user's `last` (at
-- least an hour after it), so first_seen_at < last_seen_at always.
function M.seen(i)
  local h = M.hash(i)
  return M.created(i) + 1 + h % 3599, M.created(i) + 3600 * (1 + h % M.MAX_SPAN_HOURS)
end

-- Times ---------------------------------------------------------------------

--- Epoch seconds of a UTC civil time (days-from-civil, no os.time: the
-- result must not depend on the local zone).
function M.timegm(y, mo, d, h, mi, s)
  if mo <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * ((mo + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return (era * 146097 + doe - 719468) * 86400 + h * 3600 + mi * 60 + s
end

--- Parses ISO 8601 "2025-01-02", "2025-01-02T03:04[:05[.123]][Z|+01:00]".
-- @return epoch seconds (fraction kept), has_zone, date_only; or nil
function M.parse_iso(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil end
  if rest == "" then return M.timegm(y, mo, d, 0, 0, 0), false, true end
  local h, mi, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
  if not h then return nil end
  local sec = tail:match("^:(%d%d)")
  if sec then tail = tail:sub(4) else sec = "0" end
  local frac = tail:match("^[.,](%d+)")
  if frac then tail = tail:sub(#frac + 2) end
  h, mi, sec = tonumber(h), tonumber(mi), tonumber(sec)
  if h > 23 or mi > 59 or sec > 60 then return nil end
  local t = M.timegm(y, mo, d, h, mi, sec) + (frac and tonumber("0." .. frac) or 0)
  if tail == "" then return t, false end
  if tail == "Z" or tail == "z" then return t, true end
  local sign, oh, om = tail:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then return nil end
  local off = tonumber(oh) * 3600 + tonumber(om) * 60
  return (sign == "+") and (t - off) or (t + off), true
end

--- UTC civil time of epoch seconds t (an integer): y, mo, d, h, mi, s.
-- Arithmetic rather than os.date, which LuaJIT cannot compile in hot loops.
function M.civil(t)
  local days = floor(t / 86400)
  local secs = t - days * 86400
  local z = days + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local mo = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (mo <= 2 and 1 or 0)
  return y, mo, d, floor(secs / 3600), floor(secs % 3600 / 60), secs % 60
end

--- "2025-01-01T00:01:00Z"
function M.iso(t) return fmt("%04d-%02d-%02dT%02d:%02d:%02dZ", M.civil(floor(t))) end

--- "2025-01-01T00:01:00" (naive: Arthur, whose server runs in UTC here)
function M.naive(t) return fmt("%04d-%02d-%02dT%02d:%02d:%02d", M.civil(floor(t))) end

--- "2025-01-01T00:01:00.000Z" (JavaScript toISOString)
function M.iso_ms(t)
  local ms = floor(t * 1000 + 0.5)
  local s = floor(ms / 1000)
  local y, mo, d, h, mi, sec = M.civil(s)
  return fmt("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, mo, d, h, mi, sec, ms - s * 1000)
end

--- "2025-01-01 00:01:00.000" (ClickHouse DateTime64 as Helicone returns it)
function M.clickhouse(t) return fmt("%04d-%02d-%02d %02d:%02d:%02d.000", M.civil(floor(t))) end

return M
