-- One harness folder per provider (HACKING.md, "Adding a fifth provider"):
-- spec/providers/<name>/ holds the provider's emulator module, its OpenAPI
-- document(s), its spec, its conformance spec through Prism (openapi_spec.lua)
-- and its example, and each is found from there: the emulator serves every
-- emulator.lua (spec/emulator/run), Prism starts one proxy per
-- openapi*.json|yaml (spec/prism/run), spec/30 runs every example.lua and
-- busted every *_spec.lua. This checks that each folder is complete, so that
-- a provider cannot be half added.
local userlist = require "userlist"
local emu = require "support.emu"

local function ls(glob)
  local p = assert(io.popen("ls -d " .. glob .. " 2>/dev/null"))
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

describe("spec/providers", function()
  local folders = {}
  for _, dir in ipairs(ls("spec/providers/*/")) do folders[#folders + 1] = dir:match("([^/]+)/?$") end

  it("holds the harness folders", function()
    assert.is_true(#folders > 0)
  end)

  for _, name in ipairs(folders) do
    describe(name, function()
      local dir = "spec/providers/" .. name .. "/"

      it("is named as the library's provider", function()
        assert.matches("^[a-z][a-z0-9_]*$", name)
        assert.equal("function", type(userlist[name]), "userlist." .. name .. " is not a constructor")
      end)

      it("has its emulator module, serving under its own key names", function()
        assert.is_true(exists(dir .. "emulator.lua"), dir .. "emulator.lua")
        assert.is_string(emu.keys[name], "the emulator's keys have no " .. name)
      end)

      -- every openapi* but the conformance spec, openapi_spec.lua (below)
      local function documents()
        local docs = {}
        for _, f in ipairs(ls(dir .. "openapi*")) do
          if f ~= dir .. "openapi_spec.lua" then docs[#docs + 1] = f end
        end
        return docs
      end

      it("has its OpenAPI document(s): openapi.json|yaml or openapi-<variant>.json|yaml", function()
        local docs = documents()
        assert.is_true(#docs > 0, "no " .. dir .. "openapi*")
        for _, doc in ipairs(docs) do
          local variant, ext = doc:match("/openapi(%-?[a-z0-9]*)%.(%a+)$")
          assert.is_truthy(variant == "" or (variant and #variant > 1), doc)
          assert.is_truthy(ext == "json" or ext == "yaml", doc)
        end
      end)

      it("has its spec and its example", function()
        assert.is_true(exists(dir .. name .. "_spec.lua"), dir .. name .. "_spec.lua")
        assert.is_true(exists(dir .. "example.lua"), dir .. "example.lua")
      end)

      it("has its conformance spec through Prism, openapi_spec.lua, with its document(s)", function()
        if #documents() == 0 then return end -- (the test above fails)
        assert.is_true(exists(dir .. "openapi_spec.lua"), dir .. "openapi_spec.lua")
      end)
    end)
  end
end)
