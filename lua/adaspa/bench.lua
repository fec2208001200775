-- adaspa.bench: what the scripts in recipes/bench/ share: their command-line arguments and one
-- way to time a piece of work.
local adaspa = require "adaspa"

local bench = {}

-- Script arguments: "key=value" gives args.key = the number, or the string when not a number;
-- a bare word gives args[word] = true.
function bench.args(argv)
  local args = {}
  for _, a in ipairs(argv or {}) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if k then args[k] = tonumber(v) or v else args[a] = true end
  end
  return args
end

local function sync() if adaspa.cuda.available() then adaspa.cuda.synchronize() end end

-- seconds of one run of fn, queued GPU work included
local function timed(fn)
  local t0 = adaspa.now()
  fn()
  sync()
  return adaspa.now() - t0
end

local function median(ts)
  table.sort(ts)
  return ts[math.floor((#ts + 1) / 2)]
end

-- Median seconds of `reps` runs of fn (default 5) after `warmup` unmeasured runs (default 1);
-- a GPU, when present, is synchronized before each clock read, so queued work is counted.
function bench.time(fn, reps, warmup)
  for _ = 1, warmup or 1 do fn() end
  sync()
  local ts = {}
  for i = 1, reps or 5 do ts[i] = timed(fn) end
  return median(ts)
end

-- Median seconds of each of fns, timed in alternation: one warm-up run each, then `rounds` rounds
-- (default 9) of fns[1], fns[2], ... in turn. For the ratio of two kernels: a GPU at its power cap
-- (the H200 at ~690 W in attention) moves its clock by a few percent over seconds, so rows timed
-- apart compare different clocks; in alternation both see the same ones (twelfth session: the fused
-- pass read 1.07x dense as rows and 1.02-1.035x in alternation, in one call).
function bench.alternate(fns, rounds)
  local ts = {}
  for i, fn in ipairs(fns) do
    fn()
    ts[i] = {}
  end
  sync()
  for r = 1, rounds or 9 do
    for i, fn in ipairs(fns) do ts[i][r] = timed(fn) end
  end
  local med = {}
  for i, t in ipairs(ts) do med[i] = median(t) end
  return med
end

return bench
