-- Every error kind of the core, produced by real faults from the emulator.
local core = require "userlist.core"
local userlist = require "userlist"
local emu = require "support.emu"

local KEY = "sk-never-shown-1234"

local function fetch(fault, opts, req)
  local s = core.session(opts)
  req = req or {}
  req.url = req.url or (emu.http .. "/_emu/echo")
  req.api_key = req.api_key or KEY
  if fault then req.headers = { ["X-Emu-Fault"] = emu.fault(fault) } end
  local res, err = s:request(req)
  s:close()
  return res, err
end

-- Every error: nil result, a structured value, a one-line tostring, no key.
local function expect_error(kind, res, err)
  assert.is_nil(res)
  assert.is_true(userlist.is_error(err), "not a userlist error: " .. tostring(err))
  assert.equal(kind, err.kind, tostring(err))
  local line = tostring(err)
  assert.matches("^userlist: ", line)
  assert.not_matches("\n", line)
  assert.is_nil(line:find(KEY, 1, true))
  assert.is_nil(err.message:find(KEY, 1, true))
  return err
end

describe("core errors", function()
  before_each(function() emu.reset() end)

  describe("http", function()
    it("carries status, headers, the decoded body and a non-retryable flag for 404", function()
      local err = expect_error("http", fetch{ status = 404, body = '{"detail":"nope"}' })
      assert.equal(404, err.status)
      assert.same({ detail = "nope" }, err.body)
      assert.is_false(err.retryable)
      assert.equal("table", type(err.headers))
      assert.equal("GET", err.method)
      assert.matches("/_emu/echo$", err.url)
    end)

    it("marks 408, 409, 429 and 5xx retryable and reads Retry-After seconds", function()
      for _, st in ipairs{ 408, 409, 429, 500, 502, 503, 504 } do
        local err = expect_error("http", fetch{ status = st, headers = { ["Retry-After"] = "7" } })
        assert.equal(st, err.status)
        assert.is_true(err.retryable, "status " .. st)
        assert.equal(7, err.retry_after)
      end
    end)

    it("prefers retry-after-ms, and reads an HTTP-date Retry-After", function()
      local err = expect_error("http", fetch{ status = 429,
        headers = { ["retry-after-ms"] = "1500", ["Retry-After"] = "9" } })
      assert.equal(1.5, err.retry_after)
      local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 30)
      err = expect_error("http", fetch{ status = 503, headers = { ["Retry-After"] = date } })
      assert.is_true(err.retry_after > 20 and err.retry_after <= 31, tostring(err.retry_after))
    end)

    it("lets x-should-retry override the status rule both ways", function()
      local err = expect_error("http", fetch{ status = 500, headers = { ["x-should-retry"] = "false" } })
      assert.is_false(err.retryable)
      err = expect_error("http", fetch{ status = 418, headers = { ["x-should-retry"] = "true" } })
      assert.is_true(err.retryable)
    end)

    it("never marks 400, 401, 403, 404 or 422 retryable, even with x-should-retry: true", function()
      for _, status in ipairs{ 400, 401, 403, 404, 422 } do
        local err = expect_error("http", fetch{ status = status, headers = { ["x-should-retry"] = "true" } })
        assert.is_false(err.retryable, status)
      end
    end)

    it("keeps a non-JSON error body as a short raw excerpt", function()
      local err = expect_error("http", fetch{ status = 502, html = true })
      assert.is_nil(err.body)
      assert.matches("<", err.raw)
      assert.is_true(#err.message <= 60)
    end)

    it("redacts the key if a server echoes it into an error body", function()
      local err = expect_error("http", fetch{ status = 400, body = "bad key " .. KEY })
      assert.matches("%[REDACTED%]", err.message)
    end)

    it("redacts before cutting the excerpt, so no prefix of the key survives", function()
      local err = expect_error("http", fetch{ status = 400, body = "a key echoed: " .. KEY .. " and more" })
      assert.is_nil(err.message:find("sk-never", 1, true))
      assert.is_nil(err.raw:find("sk-never", 1, true))
      err = expect_error("http", fetch{ status = 401, body = '{"message":"bad key ' .. KEY .. '"}' })
      assert.equal("bad key [REDACTED]", err.body.message)
    end)
  end)

  describe("decode", function()
    it("reports the byte offset and an excerpt of invalid JSON", function()
      local err = expect_error("decode", fetch{ invalid_json = true })
      assert.equal("number", type(err.offset))
      assert.is_true(err.offset >= 0)
      assert.equal("string", type(err.excerpt))
      assert.matches("invalid JSON at byte %d+", err.message)
    end)

    it("redacts the key from the excerpt of an invalid body", function()
      local err = expect_error("decode", fetch{ status = 200, body = '{"echo":"' .. KEY .. '" oops}' })
      assert.is_nil(err.excerpt:find("sk-never", 1, true))
      assert.matches("[REDACTED]", err.excerpt, 1, true)
    end)

    it("reports an HTML page served as 200", function()
      local err = expect_error("decode", fetch{ status = 200, html = true })
      assert.equal(0, err.offset)
      assert.matches("<", err.excerpt)
    end)

    it("reports an empty 200 body", function()
      local err = expect_error("decode", fetch{ empty = true })
      assert.matches("empty response body", err.message)
    end)

    it("reports a body nested past the decoder's depth", function()
      local err = expect_error("decode", fetch{ deep = 1000 })
      assert.matches("nested", err.message)
    end)
  end)

  describe("too_large", function()
    it("stops at max_size when Content-Length announces a large body", function()
      local err = expect_error("too_large", fetch(nil, { max_size = 10000 },
        { url = emu.http .. "/_emu/big?bytes=200000" }))
      assert.matches("max_size", err.message)
    end)

    it("stops at max_size for a chunked body with no Content-Length", function()
      expect_error("too_large", fetch(nil, { max_size = 10000 },
        { url = emu.http .. "/_emu/big?bytes=200000&chunked=1" }))
    end)

    it("accepts a body just under the limit", function()
      local res = assert(fetch(nil, { max_size = 300000 }, { url = emu.http .. "/_emu/big?bytes=200000" }))
      assert.equal(200, res.status)
      assert.is_true(res.bytes >= 190000)
    end)
  end)

  describe("timeout", function()
    it("aborts a response slower than the total timeout", function()
      local err = expect_error("timeout", fetch({ delay_ms = 3000 }, { timeout = 0.3 }))
      assert.is_true(err.retryable)
    end)

    it("honours a per-request timeout over the session's", function()
      expect_error("timeout", fetch({ delay_ms = 3000 }, { timeout = 30 }, { timeout = 0.3 }))
    end)

    it("aborts a body that drips slower than the low-speed limit", function()
      local err = expect_error("timeout", fetch({ drip_ms = 400, drip_bytes = 1 },
        { low_speed_limit = 100000, low_speed_time = 1 }, { url = emu.http .. "/_emu/big?bytes=4000" }))
      assert.matches("too slow", err.message)
    end)
  end)

  describe("network", function()
    it("reports a refused connection as retryable", function()
      local err = expect_error("network", fetch(nil, nil, { url = "http://127.0.0.1:9/x" }))
      assert.is_true(err.retryable)
      assert.equal("number", type(err.curl_code))
    end)

    it("reports a connection reset with no response", function()
      expect_error("network", fetch{ reset = true })
    end)

    it("reports a connection reset mid-body", function()
      expect_error("network", fetch{ reset_mid_body = true })
    end)

    it("reports a truncated body rather than decoding half of it", function()
      expect_error("network", fetch{ truncate = true })
    end)
  end)

  describe("tls", function()
    it("fails verification of the emulator's self-signed certificate by default", function()
      local err = expect_error("tls", fetch(nil, nil, { url = emu.https .. "/_emu/echo" }))
      assert.is_false(err.retryable)
    end)

    it("passes with the emulator's CA file", function()
      local res = assert(fetch(nil, { cafile = emu.ca }, { url = emu.https .. "/_emu/echo" }))
      assert.equal(200, res.status)
    end)

    it("passes with verification explicitly turned off", function()
      local res = assert(fetch(nil, { verify = false }, { url = emu.https .. "/_emu/echo" }))
      assert.equal(200, res.status)
    end)
  end)
end)
