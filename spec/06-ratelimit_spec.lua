-- The core reads rate-limit headers into res.rate_limit / err.rate_limit, so
-- the Lua layer can pause before the server answers 429.
local core = require "userlist.core"
local emu = require "support.emu"

local function fetch(fault)
  local s = core.session()
  local res, err = s:request{ url = emu.http .. "/_emu/echo",
    headers = { ["X-Emu-Fault"] = emu.fault(fault) } }
  s:close()
  return res, err
end

describe("rate-limit headers", function()
  before_each(function() emu.reset() end)

  it("are absent from a response that has none", function()
    local res = assert(fetch{ headers = { ["X-Other"] = "1" } })
    assert.is_nil(res.rate_limit)
  end)

  it("read RateLimit-Limit/Remaining/Reset in delta seconds", function()
    local res = assert(fetch{ headers = { ["RateLimit-Limit"] = "100", ["RateLimit-Remaining"] = "0",
      ["RateLimit-Reset"] = "7" } })
    assert.same({ limit = 100, remaining = 0, reset = 7 }, res.rate_limit)
  end)

  it("read X-RateLimit-* with an epoch reset as seconds from now", function()
    local res = assert(fetch{ headers = { ["X-RateLimit-Remaining"] = "3",
      ["X-RateLimit-Reset"] = tostring(os.time() + 30) } })
    assert.equal(3, res.rate_limit.remaining)
    assert.is_true(res.rate_limit.reset > 25 and res.rate_limit.reset <= 31, tostring(res.rate_limit.reset))
  end)

  it("read Go-style durations of x-ratelimit-reset-requests", function()
    local res = assert(fetch{ headers = { ["x-ratelimit-remaining-requests"] = "1",
      ["x-ratelimit-reset-requests"] = "1m30.5s" } })
    assert.same({ remaining = 1, reset = 90.5 }, res.rate_limit)
    res = assert(fetch{ headers = { ["x-ratelimit-reset-requests"] = "250ms" } })
    assert.same({ reset = 0.25 }, res.rate_limit)
  end)

  it("read the structured RateLimit header and the first item of a list value", function()
    local res = assert(fetch{ headers = { RateLimit = "limit=10, remaining=2, reset=5" } })
    assert.same({ limit = 10, remaining = 2, reset = 5 }, res.rate_limit)
    res = assert(fetch{ headers = { ["RateLimit-Limit"] = "100, 100;w=60", ["RateLimit-Remaining"] = "9" } })
    assert.same({ limit = 100, remaining = 9 }, res.rate_limit)
  end)

  it("ignore values that are not numbers", function()
    local res = assert(fetch{ headers = { ["RateLimit-Remaining"] = "lots", ["RateLimit-Reset"] = "soon" } })
    assert.is_nil(res.rate_limit)
  end)

  it("ride along on a 429 error too", function()
    local res, err = fetch{ status = 429,
      headers = { ["X-RateLimit-Remaining"] = "0", ["X-RateLimit-Reset"] = "4" } }
    assert.is_nil(res)
    assert.same({ remaining = 0, reset = 4 }, err.rate_limit)
  end)
end)
