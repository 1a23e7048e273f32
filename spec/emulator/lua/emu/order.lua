--- Orders over users 1..n. Ids and creation times grow with the index, so
-- those orders are arithmetic; a sort on any other figure needs the whole
-- permutation, built once per (n, field) and kept per worker.
local M = {}

local cache, cached = {}, 0

--- Permutation p of 1..n with key(p[1]) <= key(p[2]) <= ..., ties by index.
function M.sorted(n, name, key)
  local ck = name .. ":" .. n
  local p = cache[ck]
  if p then return p end
  local keys, integral, top = {}, true, 0
  for i = 1, n do
    local k = key(i)
    keys[i] = k
    if k ~= math.floor(k) or k < 0 then integral = false elseif k > top then top = k end
  end
  p = {}
  if integral and (top + 1) * (n + 1) < 2 ^ 53 then
    -- key*(n+1)+i sorts with the plain "<": twice as fast as a comparator
    for i = 1, n do p[i] = keys[i] * (n + 1) + i end
    table.sort(p)
    for k = 1, n do p[k] = p[k] % (n + 1) end
  else
    for i = 1, n do p[i] = i end
    table.sort(p, function(a, b)
      local ka, kb = keys[a], keys[b]
      if ka ~= kb then return ka < kb end
      return a < b
    end)
  end
  if cached >= 6 then cache, cached = {}, 0 end -- bound the memory kept
  cache[ck], cached = p, cached + 1
  return p
end

--- A function k -> index for the k-th user (1-based) in the requested order.
-- `key` nil means index order; `asc` false reverses (desc is the exact
-- reverse of asc, ties included).
function M.at(n, name, key, asc)
  if not key then
    if asc then return function(k) return k end end
    return function(k) return n + 1 - k end
  end
  local p = M.sorted(n, name, key)
  if asc then return function(k) return p[k] end end
  return function(k) return p[n + 1 - k] end
end

--- A bijection k -> index over lo..hi (k from 0) that looks unordered:
-- k -> lo + (a*k + b) mod m with a prime a not dividing m.
function M.scramble(lo, hi, seed)
  local m = hi - lo + 1
  local a = 7919
  for _, prime in ipairs{ 7919, 104729, 1299709 } do
    if m % prime ~= 0 then a = prime break end
  end
  local b = (seed or 12345) % m
  return function(k) return lo + (a * k + b) % m end
end

return M
