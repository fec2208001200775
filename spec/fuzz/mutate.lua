-- spec/fuzz/mutate.lua: the byte mutator and the campaign loop of the Lua-level fuzzers
-- (trace_fuzz.lua, recipe_fuzz.lua). Deterministic for a given seed, so a failure replays.
--
--   local fz = dofile("spec/fuzz/mutate.lua")
--   local rng = fz.rng(seed)
--   fz.mutate(rng, s, others, dict) -> a mutated copy of s (1 to 4 mutations)
--   fz.campaign{name=, seconds=, runs=, seed=, [make = function(rng, i) -> input end,]
--               one = function(rng, i, input) -> size, ok, problem end}
--     runs `one` until the time or run budget is spent (with make, each input is made first,
--     outside the measurement, and passed to `one`); `one` returns the input's size in bytes,
--     and false plus a description when the outcome is not acceptable (a crash). The loop also
--     measures each input's Lua allocation (the collector is stopped during it, so the growth
--     bounds its peak) against 4 x its size + fz.FIXED and its time against fz.HANG seconds.
local fz = {FIXED = 2 * 1048576, HANG = 2}

-- Park-Miller's generator (x * 48271 mod 2^31 - 1): every product stays below 2^53, so plain
-- Lua numbers compute it exactly (a larger multiplier loses low bits and cycles early).
function fz.rng(seed)
  local x = seed % 2147483646 + 1
  return function(n)   -- an integer in [1, n]
    x = x * 48271 % 2147483647
    return 1 + math.floor((x - 1) / 2147483646 * n)
  end
end

fz.edges = {"0", "-0", "1", "-1", "2147483647", "2147483648", "4294967296", "9007199254740993",
  "99999999999999999999", "1e308", "-1e308", "1e999", "-1e999", "1e-320", "nan", "inf", "-inf", "0x10",
  "1.5", " 7 ", "", ",", ",,", "{}", "{{}}", "nil", "true", "\"\"", "%d", "\0", "\255", string.rep("9", 40)}

local function pick(rng, t) return t[rng(#t)] end

function fz.mutate(rng, s, others, dict)
  local n = rng(4)
  for _ = 1, n do
    local len, op = #s, rng(10)
    local at = rng(len + 1) - 1   -- 0-based position
    if op == 1 and len > 0 then     -- flip a bit
      local b = s:byte(at + 1) or 0
      s = s:sub(1, at) .. string.char(bit.bxor(b, bit.lshift(1, rng(8) - 1))) .. s:sub(at + 2)
    elseif op == 2 and len > 0 then -- set a byte
      s = s:sub(1, at) .. string.char(rng(256) - 1) .. s:sub(at + 2)
    elseif op == 3 then             -- delete a run
      s = s:sub(1, at) .. s:sub(at + 1 + rng(8))
    elseif op == 4 then             -- duplicate a run
      local k = rng(16)
      s = s:sub(1, at + k) .. s:sub(at + 1, at + k) .. s:sub(at + k + 1)
    elseif op == 5 then             -- a number becomes an edge value
      local i, j = s:find("%-?%d+%.?%d*", rng(len + 1))
      if i then s = s:sub(1, i - 1) .. pick(rng, fz.edges) .. s:sub(j + 1) end
    elseif op == 6 then             -- insert an edge value
      s = s:sub(1, at) .. pick(rng, fz.edges) .. s:sub(at + 1)
    elseif op == 7 and dict then    -- insert or overwrite a dictionary token
      local tok = pick(rng, dict)
      s = s:sub(1, at) .. tok .. s:sub(at + 1 + (rng(2) - 1) * #tok)
    elseif op == 8 and others and #others > 0 then -- splice with another input
      local o = pick(rng, others)
      local cut = rng(#o + 1) - 1
      s = s:sub(1, at) .. o:sub(cut + 1)
    elseif op == 9 then             -- truncate
      s = s:sub(1, at)
    else                            -- swap two runs
      local b = rng(len + 1) - 1
      if b < at then at, b = b, at end
      local k = math.min(rng(8), b - at)
      s = s:sub(1, at) .. s:sub(b + 1, b + k) .. s:sub(at + k + 1, b) .. s:sub(at + 1, at + k) .. s:sub(b + k + 1)
    end
  end
  return s
end

-- Escapes an input for a one-line report.
function fz.show(s)
  s = s:gsub("[^%w%p ]", function(c) return string.format("\\%d", c:byte()) end)
  return #s > 300 and s:sub(1, 300) .. "..." or s
end

function fz.campaign(c)
  local rng = fz.rng(c.seed or 1)
  local t_start = adaspa.now()
  local t_end = t_start + (c.seconds or 10)
  local runs, crashes, hangs, slowest, max_used, max_excess = 0, 0, 0, 0, 0, 0
  local shown = 0
  collectgarbage()
  while adaspa.now() < t_end and (not c.runs or runs < c.runs) do
    runs = runs + 1
    local ok_make, input = true, nil
    if c.make then ok_make, input = pcall(c.make, rng, runs) end   -- made outside the measurement
    collectgarbage("stop")
    local before, t0 = collectgarbage("count"), adaspa.now()
    local ok_call, size, ok, problem
    if ok_make then ok_call, size, ok, problem = pcall(c.one, rng, runs, input)
    else ok_call, size = false, input end
    local dt, used = adaspa.now() - t0, (collectgarbage("count") - before) * 1024
    collectgarbage("restart")
    if runs % 64 == 0 then collectgarbage() end
    if not ok_call then size, ok, problem = 0, false, "the harness itself failed: " .. tostring(size) end
    slowest = math.max(slowest, dt)
    max_used = math.max(max_used, used)
    local excess = used - 4 * size
    max_excess = math.max(max_excess, excess)
    local bad
    if not ok then crashes = crashes + 1; bad = problem
    elseif dt > fz.HANG then hangs = hangs + 1; bad = string.format("took %.2f s", dt)
    elseif excess > fz.FIXED then
      crashes = crashes + 1
      bad = string.format("allocated %d bytes for a %d-byte input (over 4x + %d)", used, size, fz.FIXED)
    end
    if bad and shown < 10 then
      shown = shown + 1
      io.stderr:write(string.format("%s: input %d (seed %d): %s\n", c.name, runs, c.seed or 1, bad))
    end
  end
  print(string.format("%s: %d inputs in %.0f s, %d crashes, %d hangs (slowest %.3f s), largest Lua allocation of " ..
    "one input %d bytes, largest beyond 4x its input %d bytes", c.name, runs, adaspa.now() - t_start, crashes, hangs, slowest,
    max_used, math.max(0, max_excess)))
  return crashes + hangs == 0
end

return fz
