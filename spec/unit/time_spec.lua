-- userlist.time: `since`/`until` in, each server's form out. Reading is the
-- core's (core.parse_time, which also reads every row's times); writing is
-- time.lua's. No network.
local time = require "userlist.time"

describe("userlist.time", function()
  it("reads ISO 8601 through the core, with the zone or as UTC", function()
    assert.same({ 1735783445.5, true }, { time.parse_iso("2025-01-02T03:04:05.5+01:00") })
    assert.same({ 1735776000, false }, { time.parse_iso("2025-01-02") })
    assert.same({ 1735787040, true }, { time.parse_iso("2025-01-02 03:04Z") })
    assert.same({ 951782400, false }, { time.parse_iso("2000-02-29") }) -- a leap day
  end)

  it("says why a string is not a time", function()
    assert.same({ nil, "not an ISO 8601 date" }, { time.parse_iso("yesterday") })
    assert.same({ nil, "date out of range" }, { time.parse_iso("2025-02-30") })
    assert.same({ nil, "bad time of day" }, { time.parse_iso("2025-01-02T3:04") })
    assert.same({ nil, "bad time zone" }, { time.parse_iso("2025-01-02T03:04+1") })
    assert.same({ nil, "time of day out of range" }, { time.parse_iso("2025-01-02T24:00Z") })
  end)

  it("takes a finite time number or an ISO string, and nothing else", function()
    assert.equal(1700000000, time.to_epoch(1700000000))
    assert.equal(1735776000, time.to_epoch("2025-01-02"))
    assert.same({ nil, "not a finite number" }, { time.to_epoch(math.huge) })
    assert.same({ nil, "not a finite number" }, { time.to_epoch(0 / 0) })
    assert.same({ nil, "a time number or an ISO 8601 string expected, got table" },
      { time.to_epoch({}) })
  end)

  it("writes UTC with milliseconds, carrying a rounded-up millisecond into the second", function()
    assert.equal("2025-01-02T03:04:05.000Z", time.iso_utc(1735787045))
    assert.equal("2025-01-02T03:04:05.250Z", time.iso_utc(1735787045.25))
    assert.equal("2025-01-02T03:04:06.000Z", time.iso_utc(1735787045.9996))
    assert.equal("1969-12-31T23:59:59.000Z", time.iso_utc(-1))
  end)

  it("writes a naive time in a zone east of UTC, across a day and a year", function()
    assert.equal("2025-01-01T00:30:00", time.iso_naive(1735687800, 3600)) -- 23:30Z + 1 h
    assert.equal("2024-12-31T19:30:00", time.iso_naive(1735687800, -4 * 3600))
    assert.equal("2025-01-02T03:04:05", time.iso_naive(1735787045, 0))
  end)

  it("reads back what it writes", function()
    for _, t in ipairs{ 0, 86399, 951782400, 1735787045, 4102444800 } do
      assert.equal(t, (time.parse_iso(time.iso_utc(t))))
      assert.equal(t, (time.parse_iso(time.iso_naive(t, 0))))
    end
  end)
end)
