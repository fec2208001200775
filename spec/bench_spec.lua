-- adaspa.bench: the benchmark scripts' argument parser and timer.
local bench = require "adaspa.bench"

describe("adaspa.bench", function()
  it("parses key=value (numbers or strings) and bare flags", function()
    assert.same({frames = 33, policy = "window", quick = true, ["720p"] = true},
      bench.args({"frames=33", "policy=window", "quick", "720p"}))
    assert.same({}, bench.args(nil))
  end)

  it("times the median of reps runs after the warm-up runs", function()
    local calls, waits = 0, {0.2, 0.001, 0.1, 0.03, 0.002}
    local function fn()
      calls = calls + 1
      local t0 = adaspa.now()
      while adaspa.now() - t0 < (waits[calls - 2] or 0) do end -- the first two calls are the warm-up
    end
    local t = bench.time(fn, 5, 2)
    assert.equal(7, calls)
    -- the sorted waits are 0.001 0.002 0.03 0.1 0.2: the median run waited 0.03 s; busy waits
    -- only overshoot, so the median is at least 0.03 (a mean would be 0.067) and below 0.1
    assert.is_true(t >= 0.03 and t < 0.1, tostring(t))
  end)

  it("times functions in alternation: one warm-up each, then rounds of all in turn, medians", function()
    local order, waits = {}, {a = {0.001, 0.1, 0.002}, b = {0.1, 0.002, 0.001}}
    local n = {a = 0, b = 0}
    local function f(name)
      return function()
        order[#order + 1] = name
        n[name] = n[name] + 1
        local t0 = adaspa.now()
        while adaspa.now() - t0 < (waits[name][n[name] - 1] or 0) do end -- call 1 is the warm-up
      end
    end
    local med = bench.alternate({f("a"), f("b")}, 3)
    assert.same({"a", "b", "a", "b", "a", "b", "a", "b"}, order)
    -- each one's waits sorted are 0.001 0.002 0.1: the median run waited 0.002 s (a mean would be 0.034)
    assert.equal(2, #med)
    for i = 1, 2 do assert.is_true(med[i] >= 0.002 and med[i] < 0.05, tostring(med[i])) end
  end)
end)

describe("adaspa.bench.sink_layout", function()
  it("keeps the text rows and columns whole and the other rows at the density", function()
    -- 1,000 tokens, the last 100 text, blocks of 64: 16 blocks, the text from block 15 (token 900)
    local l = require("adaspa.bench").sink_layout(1000, 3, 100, 64, 0.25, 7)
    assert.same({3, 16, 16, 64}, {l:heads(), l:nqb(), l:nkb(), l:block()})
    for h = 1, 3 do
      for qb = 1, 16 do
        local row = l:row(h, qb)
        if qb >= 15 then
          assert.equal(16, #row)
        else
          assert.equal(4, #row, "head " .. h .. " row " .. qb) -- round(0.25 * 16), the 2 text columns among them
          assert.same({15, 16}, {row[3], row[4]})
        end
      end
    end
    l:free()
  end)

  it("takes a density per head (head-adaptive)", function()
    local l = require("adaspa.bench").sink_layout(1000, 3, 100, 64, {0.125, 0.25, 0.5}, 7)
    for h, n in ipairs({2, 4, 8}) do -- round(d * 16) blocks, the 2 text columns among them
      assert.equal(n, #l:row(h, 3), "head " .. h)
      assert.equal(16, #l:row(h, 15))
    end
    l:free()
  end)

  it("spreads the rows' lengths with rows = \"vary\", the heads' densities kept", function()
    -- 6,000 tokens, blocks of 64: 94 blocks, the text (the last 256 tokens) from block 90
    local b = require("adaspa.bench")
    local l = b.sink_layout(6000, 2, 256, 64, 0.2, 5, "vary")
    local even = b.sink_layout(6000, 2, 256, 64, 0.2, 5)
    for h = 1, 2 do
      local lens, total = {}, 0
      for qb = 1, 94 do
        local n = #l:row(h, qb)
        total = total + n
        if qb < 90 then lens[n] = true else assert.equal(94, n) end
        if qb < 90 then assert.equal(19, #even:row(h, qb)) end -- round(0.2 * 94)
      end
      assert.equal(math.floor(0.2 * 94 * 94 + 0.5), total, "head " .. h) -- the head's blocks at the density
      local distinct = 0
      for _ in pairs(lens) do distinct = distinct + 1 end
      assert.is_true(distinct >= 5, "head " .. h .. ": " .. distinct .. " row lengths")
    end
    assert.has_error(function() b.sink_layout(6000, 2, 256, 64, 0.2, 5, "even") end)
    l:free(); even:free()
  end)
end)

describe("the bench scripts", function()
  it("run at quick CPU sizes, or say that they need a GPU", function()
    for b, row in pairs({cpu_ops = "sparse_attention 0.1", policies = "| window plan |"}) do
      local out, err, code = spec_run("recipes/bench/" .. b .. ".lua quick")
      assert.equal(0, code, b .. ": " .. err)
      assert.matches(row, out, 1, true)
    end
    -- the step bench at the model's small preset on the CPU: every mode, the sparse steps twice
    local out, err, code = spec_run("recipes/bench/step.lua quick cpu nopeers")
    assert.equal(0, code, "step: " .. err)
    for _, mode in ipairs({"dense", "search", "sparse 0.8", "sparse 0.9", "sparse 0.8 again", "sparse 0.9 again"}) do
      assert.matches("\n| " .. mode .. " | %d+%.%d+ | %d+%.%d+ | %d+%.%d+ | %-?%d+%.%d+ |", out)
    end
    -- the again rows run the same layouts as the first ones (their densities agree)
    for _, sp in ipairs({"0.8", "0.9"}) do
      local first = out:match("\n  sparse " .. sp .. " +[%d.]+ s[^\n]*density ([%d.]+)")
      local again = out:match("\n  sparse " .. sp .. " again +[%d.]+ s[^\n]*density ([%d.]+)")
      assert.is_truthy(first, "no density printed for sparse " .. sp)
      assert.equal(first, again, "sparse " .. sp .. " again ran other layouts")
    end
    if not adaspa.cuda.available() then
      for _, b in ipairs({"attention", "cuda_nn", "select", "step"}) do
        local out, err, code = spec_run("recipes/bench/" .. b .. ".lua quick")
        assert.equal(0, code, b .. ": " .. err)
        assert.matches(b .. " bench: no GPU", out, 1, true)
      end
    end
  end)
end)

describe("kernels/testbed/l2_sim.lua (block 64's L2 model)", function()
  -- a small case where a head's K/V (16.8 MB) passes the model's 10 MB L2, as 720p's passes 50 MB
  local function hits(out, gen, passes)
    local r = out:match("\n| S=32768 | 0%.1 | " .. gen .. " | " .. passes .. " | %d+ | ([%d.]+) |")
    return assert(tonumber(r), gen .. " " .. passes .. " not in:\n" .. out)
  end

  it("reads more of a head from HBM when the rows' lengths spread, and passes take it back", function()
    local out, err, code = spec_run("kernels/testbed/l2_sim.lua S=32768 heads=4 ctas=32 l2=10 d=0.1 gens=topk,jitter passes=1,2")
    assert.equal(0, code, err)
    local even, spread = hits(out, "topk", 1), hits(out, "jitter", 1)
    assert.is_true(even > spread + 0.1, string.format("rows of one length %.3f, spread %.3f", even, spread))
    assert.is_true(hits(out, "jitter", 2) > spread + 0.2, "two passes keep a pass's K/V in the L2")
    -- the sweep (sweep.patch's start of each row's walk) puts the spread rows back in step
    local sw, err2, code2 = spec_run("kernels/testbed/l2_sim.lua S=32768 heads=4 ctas=32 l2=10 d=0.1 gens=jitter sweep=1")
    assert.equal(0, code2, err2)
    assert.matches("sweep of 1 items", sw, 1, true)
    assert.is_true(hits(sw, "jitter", 1) > spread + 0.1, string.format("with the sweep %.3f, without %.3f", hits(sw, "jitter", 1), spread))
  end)

  it("refuses arguments it does not know, naming them", function()
    for a, msg in pairs({["d=x"] = "d=x is not a number", ["gens=nope"] = "unknown layout kind nope", foo = "unknown argument foo"}) do
      local _, err, code = spec_run("kernels/testbed/l2_sim.lua " .. a)
      assert.is_not.equal(0, code, a)
      assert.matches(msg, err, 1, true)
    end
  end)

  it("blocks of 128: longest-first over all heads mixes heads when the rows spread; head-major does not", function()
    local cmd = "kernels/testbed/l2_sim.lua S=32768 heads=4 ctas=32 l2=10 block=128 d=0.1 gens=jitter"
    local lf, err, code = spec_run(cmd)
    assert.equal(0, code, err)
    assert.matches("block-128 L2 model", lf, 1, true)
    local hm, err2, code2 = spec_run(cmd .. " order=headlf")
    assert.equal(0, code2, err2)
    assert.is_true(hits(hm, "jitter", 1) > hits(lf, "jitter", 1) + 0.15,
      string.format("head-major %.3f, longest-first %.3f", hits(hm, "jitter", 1), hits(lf, "jitter", 1)))
  end)
end)
