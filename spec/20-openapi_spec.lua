-- Every request the client sends validates against the provider's OpenAPI
-- document: the client talks to a Prism validating proxy per document
-- (spec/prism, started by `spec/prism/run exec`), which forwards a valid
-- request to the emulator and answers an invalid one itself with a
-- problem+json of type https://stoplight.io/prism/errors#... (not
-- forwarded). So a call succeeds through Prism only when each of its
-- requests, next-page requests included, matched the document; `run exec`
-- also fails the run if Prism logged a rejection no test declared.
--
-- This file holds the generic checks: every proxy is there, in strict mode,
-- and a rejected request comes back as Prism's problem with its violation.
-- Each provider's conformance tests (every query key of each listing and
-- method, checked in the emulator's request log) are in its harness folder,
-- spec/providers/<name>/openapi_spec.lua; the helpers they share are
-- spec/support/prism.lua. make check and make check-tsan leave all of these
-- out by name, as they need the proxies.
local core = require "userlist.core"
local emu = require "support.emu"
local prism = require "support.prism"

local PRISM_ERRORS, MISSING = prism.PRISM_ERRORS, prism.MISSING
local through, problem_of, explain = prism.through, prism.problem_of, prism.explain
local forwarded = prism.forwarded

local PIPELINE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"

-- ------------------------------------------------------------ the specs
describe("OpenAPI conformance through Prism", function()
  before_each(function() emu.reset() end)

  it("has all five Prism proxies (spec/prism/run exec sets USERLIST_PRISM_*)", function()
    assert(MISSING == nil, MISSING)
    assert.equal("strict", os.getenv("USERLIST_PRISM_MODE"),
      "USERLIST_PRISM_MODE: the Prism proxies must run in strict mode (spec/prism/run exec)")
  end)

  it("reports a request Prism rejects as problem+json with the violation", function()
    -- the detector itself: a request no document allows must be refused,
    -- and explain() must show Prism's detail
    -- (the header tells `spec/prism/run check` this rejection is intended)
    local s = core.session()
    local res, err = s:request{ method = "POST", api_key = emu.keys.openlayer, json = {},
      url = through("OPENLAYER") .. "/inference-pipelines/" .. PIPELINE .. "/users",
      query = { perPage = 500 }, headers = { ["X-Userlist-Expect-Rejection"] = "query.perpage" } }
    s:close()
    assert.is_nil(res)
    assert.equal(422, err.status)
    assert.matches("^application/problem%+json", err.headers["content-type"])
    local b = assert(problem_of(err), tostring(err))
    assert.equal(PRISM_ERRORS .. "UNPROCESSABLE_ENTITY", b.type)
    -- (Prism matches query names case-insensitively and reports them lower-cased)
    assert.matches("query%.perpage: .*<= 100 %(maximum%)", explain(err))
    assert.equal(0, #forwarded())
  end)
end)
