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

-- Median seconds of `reps` runs of fn (default 5) after `warmup` unmeasured runs (default 1);
-- a GPU, when present, is synchronized before each clock read, so queued work is counted.
function bench.time(fn, reps, warmup)
  for _ = 1, warmup or 1 do fn() end
  sync()
  local ts = {}
  for i = 1, reps or 5 do
    local t0 = adaspa.now()
    fn()
    sync()
    ts[i] = adaspa.now() - t0
  end
  table.sort(ts)
  return ts[math.floor((#ts + 1) / 2)]
end

return bench
