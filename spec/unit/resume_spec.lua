-- Resume tokens as the core seals them (csrc/token.c) and userlist.resume
-- reads them; no network (the listings' own are in spec/43-resume_spec.lua).
local core = require "userlist.core"
local userlist = require "userlist"

local PAYLOADS = { "a", "ab", "abc", "abcd", "1\nhelicone\n0123456789abcdef\n\n3\n300\nat\n1200",
  ("x"):rep(1000), "\0\1\2\255 binary", ("/v1/users?cursor=user-0000042&limit=10") }

describe("core.token_seal and core.token_open", function()
  it("give back every payload sealed, as printable URL-safe text", function()
    for _, p in ipairs(PAYLOADS) do
      local t = core.token_seal(p)
      assert.matches("^ul1%.[%w_%-]+$", t)
      assert.equal(p, (core.token_open(t)))
    end
  end)

  it("refuse every truncation and every one-character edit of a token", function()
    for _, p in ipairs(PAYLOADS) do
      local t = core.token_seal(p)
      for i = 0, #t - 1 do
        local back, why = core.token_open(t:sub(1, i))
        assert.is_nil(back)
        assert.is_string(why)
      end
      for i = 1, #t do
        for _, ch in ipairs{ "A", "B", "-", "_", "=", ".", " " } do
          if t:sub(i, i) ~= ch then
            assert.is_nil((core.token_open(t:sub(1, i - 1) .. ch .. t:sub(i + 1))), i)
          end
        end
      end
      assert.is_nil((core.token_open(t .. "A")))
      assert.is_nil((core.token_open(t .. "\n")))
    end
  end)

  it("say why a string is not a token", function()
    assert.same({ nil, 'is not a userlist resume token (one starts with "ul1.")' },
      { core.token_open("hello") })
    assert.same({ nil, "is damaged or truncated (not a whole token)" }, { core.token_open("ul1.") })
    assert.same({ nil, "is damaged or truncated (not a whole token)" }, { core.token_open("ul1.!!!!") })
    assert.matches("check value", select(2, core.token_open("ul1." .. ("A"):rep(40))))
    assert.matches("not a userlist resume token", select(2, core.token_open("ul1." .. ("A"):rep(20000))))
  end)

  it("raise for what only code gets wrong: no string, an empty payload", function()
    assert.has_error(function() core.token_seal("") end)
    assert.has_error(function() core.token_open({}) end)
    assert.has_error(function() core.token_seal(("x"):rep(20000)) end)
  end)

  it("bound a token by core.token_max, which the query's resume key takes as its own", function()
    assert.equal(16384, core.token_max)
    assert.equal(core.token_max, require("userlist.args").common.resume.max_len)
    local over = "ul1." .. ("A"):rep(core.token_max)
    assert.matches("not a userlist resume token", select(2, core.token_open(over)))
  end)

  it("digest is FNV-1a 64 in hex", function()
    assert.equal("cbf29ce484222325", core.digest(""))
    assert.equal("af63dc4c8601ec8c", core.digest("a"))
  end)
end)

describe("userlist.token_info", function()
  it("reads a token's provider, counts and end", function()
    local t = core.token_seal(table.concat({ "1", "arthur", core.digest("b"), core.digest("q"), "3", "2500",
      "at", "3" }, "\n"))
    assert.same({ provider = "arthur", pages = 3, users = 2500, done = false }, userlist.token_info(t))
  end)

  it("refuses a token of another format version or with fields that do not add up", function()
    local other = core.token_seal("2\narthur")
    local info, why = userlist.token_info(other)
    assert.is_nil(info)
    assert.matches("another version of userlist", why)
    info, why = userlist.token_info(core.token_seal("1\narthur\nx\ny\nthree\n0\nat\n"))
    assert.is_nil(info)
    assert.matches("do not add up", why)
    info, why = userlist.token_info(42)
    assert.is_nil(info)
    assert.matches("is a string, got number", why)
  end)
end)
