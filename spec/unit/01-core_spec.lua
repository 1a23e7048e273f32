-- The module itself: loading, metadata, helpers, and the private cjson instance.
local userlist = require "userlist"
local core = require "userlist.core"
local cjson = require "cjson"

describe("userlist.core module", function()
  it("loads through the Lua entry point and reports its version", function()
    assert.equal(core, userlist.core)
    assert.matches("^%d+%.%d+%.%d+$", core.version)
    assert.equal("userlist " .. core.version, userlist._VERSION)
  end)

  it("has a User-Agent of userlist/<version> libcurl/<version>", function()
    assert.matches("^userlist/" .. core.version:gsub("%.", "%%.") .. " libcurl/%d+%.%d+%.%d+$",
      core.user_agent)
  end)

  it("reports libcurl and TLS facts at run time", function()
    local v = core.version_info()
    assert.equal(core.version, v.userlist)
    assert.matches("^%d+%.%d+", v.curl)
    assert.is_true(v.tls)
    assert.equal(_VERSION:match("%d%.%d"), v.lua:match("%d%.%d"))
  end)

  it("escapes path segments so that they cannot leave their segment", function()
    assert.equal("..%2Fx", core.escape("../x"))
    assert.equal("a%2Fb%3F%23%20%C3%A9", core.escape("a/b?# é"))
    assert.equal("AZaz09-._~", core.escape("AZaz09-._~"))
  end)

  it("redacts every occurrence of a key, and returns a string without it as it is", function()
    local key = "sk-helicone-abcdefg-hijklmn-opqrstu-vwxyz01"
    assert.equal("a [REDACTED] b [REDACTED][REDACTED]",
      core.redact("a " .. key .. " b " .. key .. key, key))
    assert.equal("bearer token", core.redact("bearer token", key))
    assert.equal("x[REDACTED]y", core.redact("x\0k\0y", "\0k\0")) -- bytes, NULs too
    assert.has_error(function() core.redact("x") end)
  end)

  it("raises naming the argument when escape gets no string", function()
    assert.has_error(function() core.escape({}) end)
    local ok, err = pcall(core.escape)
    assert.is_false(ok)
    assert.matches("bad argument #1", err)
  end)

  describe("private cjson instance", function()
    it("neither uses nor changes the application's cjson settings", function()
      local before = cjson.decode_max_depth()
      cjson.decode_max_depth(2) -- the application makes its cjson strict
      local ok = pcall(cjson.decode, "[[[1]]]")
      assert.is_false(ok)
      -- the core still decodes deep data, with its own limit
      assert.same({ { { 1 } } }, core.json_decode("[[[1]]]"))
      assert.equal(2, cjson.decode_max_depth()) -- and left the app's setting alone
      cjson.decode_max_depth(before)
    end)

    it("has its own depth limit that rejects absurd nesting", function()
      local deep = string.rep("[", 500) .. string.rep("]", 500)
      assert.has_error(function() core.json_decode(deep) end)
    end)

    it("rejects NaN and Infinity that lax cjson settings would accept", function()
      assert.has_error(function() core.json_decode("[NaN]") end)
      assert.has_error(function() core.json_decode("[Infinity]") end)
    end)

    it("shares cjson's null sentinel", function()
      assert.equal(cjson.null, core.null)
      assert.equal(core.null, core.json_decode('{"a":null}').a)
    end)
  end)

  describe("error values", function()
    it("core.error gives a table the error metatable and a one-line tostring", function()
      local e = core.error{ kind = "http", status = 429, code = "E1013",
        message = "Too many\nrequests", method = "GET", url = "https://h/v1/users" }
      assert.is_true(userlist.is_error(e))
      assert.equal("userlist: http 429 E1013: Too many requests (GET https://h/v1/users)", tostring(e))
    end)

    it("core.error raises when the kind is missing", function()
      assert.has_error(function() core.error{ message = "x" } end)
    end)
  end)
end)
