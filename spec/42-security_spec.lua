-- Security defaults: redirects, path segments, header values, keys over
-- plain http, and where keys may appear, against the emulator.
local userlist = require "userlist"
local core = require "userlist.core"
local emu = require "support.emu"

local KEY = "sk-security-spec-0042"
local PORT = emu.http:match(":(%d+)$")

describe("redirects", function()
  before_each(function() emu.reset() end)

  -- queued, so that the redirected request is answered normally
  local function redirect_to(url)
    emu.faults("/_emu/echo", { { status = 302, headers = { Location = url } } })
    return nil
  end

  it("are not followed by default: a 302 is an http error, and the target is never asked", function()
    local s = core.session()
    local res, err = s:request{ url = emu.http .. "/_emu/echo", api_key = KEY,
      headers = redirect_to(emu.http .. "/_emu/echo?followed=1") }
    s:close()
    assert.is_nil(res)
    assert.equal("http", err.kind)
    assert.equal(302, err.status)
    assert.equal(1, emu.stats().requests)
  end)

  it("when enabled, never carry Authorization to another host", function()
    -- localhost and 127.0.0.1 are different hosts to libcurl, same server here
    local s = core.session{ follow_redirects = true }
    local res = assert(s:request{ url = emu.http .. "/_emu/echo", api_key = KEY,
      headers = redirect_to("http://localhost:" .. PORT .. "/_emu/echo?followed=1") })
    s:close()
    assert.equal(200, res.status)
    assert.equal("1", res.body.query.followed)
    assert.is_nil(res.body.headers.authorization)
  end)

  it("when enabled, keep Authorization on the same host", function()
    local s = core.session{ follow_redirects = true }
    local res = assert(s:request{ url = emu.http .. "/_emu/echo", api_key = KEY,
      headers = redirect_to(emu.http .. "/_emu/echo?followed=1") })
    s:close()
    assert.equal("Bearer " .. KEY, res.body.headers.authorization)
  end)
end)

describe("path parameters", function()
  before_each(function() emu.reset() end)

  for _, id in ipairs{ "../x", "a/b", "a?b=c", "a#b", "a b", "é✓", "..", "%2F" } do
    it(("%q stays in its path segment"):format(id), function()
      local ut = userlist.usertour{ api_key = emu.keys.usertour, base_url = emu.http }
      ut:user(id) -- a 404 from the emulator is fine: what was asked is the point
      local log = emu.requests()
      local uri = log[#log].uri
      assert.equal("/v1/users/", uri:sub(1, 10))
      local seg = uri:sub(11)
      assert.is_nil(seg:find("[/?#%s]"), uri)
      -- the server decodes the segment back to exactly the id
      assert.equal(id, (seg:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)))
    end)
  end
end)

describe("keys", function()
  before_each(function() emu.reset() end)

  it("are refused over plain http to a non-loopback host, before any connection", function()
    local ut = userlist.usertour{ api_key = KEY, base_url = "http://api.example.invalid" }
    local page, err = ut:page{}
    assert.is_nil(page)
    assert.equal("invalid", err.kind)
    assert.matches("allow_insecure_http", err.message)
    assert.is_nil(tostring(err):find(KEY, 1, true))
  end)

  it("never show in tostring of a client, its options, or a header value refused", function()
    local ut = userlist.usertour{ api_key = KEY, base_url = emu.http }
    assert.is_nil(tostring(ut):find(KEY, 1, true))
    for k, v in pairs(ut) do
      assert.is_nil(tostring(k):find(KEY, 1, true))
      if type(v) == "table" then
        for k2, v2 in pairs(v) do assert.is_nil((tostring(k2) .. tostring(v2)):find(KEY, 1, true)) end
      else
        assert.is_nil(tostring(v):find(KEY, 1, true))
      end
    end
    local bad = userlist.usertour{ api_key = KEY .. "\r\nX-Evil: 1", base_url = emu.http }
    local page, err = bad:page{}
    assert.is_nil(page)
    assert.equal("invalid", err.kind)
    assert.is_nil(tostring(err):find(KEY, 1, true))
    assert.equal(0, emu.stats().requests)
  end)

  it("are verified over TLS by default: the emulator's self-signed port fails, its CA passes", function()
    local ut = userlist.usertour{ api_key = KEY, base_url = emu.https }
    local page, err = ut:page{}
    assert.is_nil(page)
    assert.equal("tls", err.kind)
    ut = userlist.usertour{ api_key = emu.keys.usertour, base_url = emu.https, cafile = emu.ca }
    assert.is_table((assert(ut:page{ limit = 1 })).users)
  end)
end)
