-- Openlayer's requests through Prism, each validated against its OpenAPI
-- document (spec/providers/openlayer/openapi.yaml), then read back from the
-- emulator's request log: paging, every sort column, the column filters (every
-- operator and value type), the search lists and both row id lists.
-- This needs the Prism proxies (spec/emulator/run exec -- spec/prism/run exec
-- -- spec/run.sh) and fails, never skips, without them: make check and make
-- check-tsan leave spec/providers/*/openapi_spec.lua out by name. The helpers
-- (through, must, all, forwarded, ...): spec/support/prism.lua.
local userlist = require "userlist"
local emu = require "support.emu"
local prism = require "support.prism"

local through, all, page, forwarded = prism.through, prism.all, prism.page, prism.forwarded
local has_params, json_body = prism.has_params, prism.json_body

local PIPELINE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
local USERS = 250 -- the emulator's default population

describe("OpenAPI conformance through Prism", function()
  before_each(function() emu.reset() end)

  describe("Openlayer", function()
    local function client()
      return userlist.openlayer{ api_key = emu.keys.openlayer, base_url = through("OPENLAYER"),
        pipeline_id = PIPELINE, max_retries = 0, concurrency = 1 }
    end

    it("lists every user over several pages (default query: perPage 100, body {})", function()
      local users = all(client())
      assert.equal(USERS, #users)
      local reqs = forwarded()
      assert.equal(3, #reqs)
      for i, r in ipairs(reqs) do
        assert.equal("/v1/inference-pipelines/" .. PIPELINE .. "/users", r.uri)
        assert.same({ tostring(i) }, r.q.page)
        assert.same({ "100" }, r.q.perPage)
        assert.equal("{}", r.body)
      end
    end)

    it("sends page, perPage, sortColumn and asc, for every sort column", function()
      local c = client()
      for _, col in ipairs{ "id", "dateOfFirstRecord", "dateOfLastRecord", "sessions", "records",
        "tokens", "cost" } do
        for _, asc in ipairs{ true, false } do
          local users = all(c, { page = 2, per_page = 7, max_pages = 2, sort_column = col, asc = asc })
          assert.equal(14, #users)
        end
      end
      local reqs = forwarded()
      assert.equal(28, #reqs)
      has_params(reqs[4], { "page", "perPage", "sortColumn", "asc" })
      assert.same({ "3" }, reqs[4].q.page)
      assert.same({ "false" }, reqs[4].q.asc)
    end)

    it("sends five column filters, every search list and both row id lists in the body", function()
      local filters = {
        { measurement = "cost", operator = ">", value = 0 },
        { measurement = "records", operator = ">=", value = 1 },
        { measurement = "sessions", operator = "<", value = 100 },
        { measurement = "tokens", operator = "<=", value = 1e9 },
        { measurement = "id", operator = "!=", value = "nobody" },
      }
      local q = { per_page = 50, column_filters = filters,
        search_query_or = { "user-000015", "user-0000003" }, search_query_and = { "user" },
        not_search_query_or = { "nobody" },
        not_search_query_and = { "x", "y" }, row_id_list = { 1, 2, 3, 150 },
        exclude_row_id_list = { 2 } }
      local users = all(client(), q)
      -- rows {1, 3, 150} whose id contains "user-000015" or "user-0000003"
      assert.same({ "user-0000003", "user-0000150" }, { users[1].id, users[2].id })
      assert.equal(2, #users)
      local b = json_body(forwarded()[1])
      assert.same(filters, b.columnFilters)
      assert.same({ "user-000015", "user-0000003" }, b.searchQueryOr)
      assert.same({ "user" }, b.searchQueryAnd)
      assert.same({ "nobody" }, b.notSearchQueryOr)
      assert.same({ "x", "y" }, b.notSearchQueryAnd)
      assert.same({ 1, 2, 3, 150 }, b.rowIdList)
      assert.same({ 2 }, b.excludeRowIdList)
    end)

    it("takes the pipeline id per query, and dedupes", function()
      local c = userlist.openlayer{ api_key = emu.keys.openlayer, base_url = through("OPENLAYER"),
        max_retries = 0, concurrency = 1 }
      local other = "0b7e1a52-9c1d-4f0e-8a8e-1d2c3b4a5f60"
      local users = all(c, { pipeline_id = other, per_page = 100, max_pages = 2, dedupe = true })
      assert.equal(200, #users)
      assert.equal("/v1/inference-pipelines/" .. other .. "/users", forwarded()[2].uri)
    end)

    it("sends every column filter operator and value type the client allows", function()
      local c = client()
      local groups = {
        { { measurement = "id", operator = "one_of", value = { "user-0000001", "user-0000002" } },
          { measurement = "records", operator = "none_of", value = { 0, 999 } },
          { measurement = "tags", operator = "contains_any", value = { "a", 1 } },
          { measurement = "tags", operator = "contains_all", value = { "a" } },
          { measurement = "tags", operator = "contains_none", value = { 2.5 } } },
        { { measurement = "id", operator = "is", value = "user-0000001" },
          { measurement = "sessions", operator = "is", value = 1 },
          { measurement = "flag", operator = "is", value = true },
          { measurement = "flag", operator = "!=", value = false },
          { measurement = "cost", operator = "!=", value = userlist.null } },
        { { measurement = "cost", operator = ">", value = userlist.null } },
      }
      for _, g in ipairs(groups) do page(c, { column_filters = g }) end
      assert.equal(#groups, #forwarded())
    end)
  end)
end)
