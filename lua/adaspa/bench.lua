-- adaspa.bench: what the scripts in recipes/bench/ share: their command-line arguments, one way
-- to time a piece of work, and the attention bench's sparse layouts.
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

-- The attention bench's sparse layouts (also kernels/testbed/walk_sim.lua's): heads x ceil(S / block)^2
-- blocks, a row-wise top-k of random mass (normal draws squared, seed) at density d with the text
-- rows and columns kept (the last `text` tokens, AdaSpa's text sink), on the device the mass is made on.
-- d: a density, or a table of one per head (head-adaptive). rows = "vary": a top-k over each head's
-- blocks instead of each row's (the rows' lengths then spread as per-block draws at d would, as a
-- recall target's do; the heads keep their densities).
function bench.sink_layout(S, heads, text, block, d, seed, rows)
  assert(rows == nil or rows == "vary", "sink_layout: rows must be nil or \"vary\"")
  local nb = math.ceil(S / block)
  local first_text = math.floor((S - text) / block) + 1 -- 1-based block holding the first text token
  local x = adaspa.randn({heads, nb, nb}, {seed = seed})
  return adaspa.layout.topk(adaspa.mul(x, x), {density = d, row_wise = rows == nil, block = block,
    force = {cols = {{first_text, nb}}, rows = {{first_text, nb}}}})
end

return bench
