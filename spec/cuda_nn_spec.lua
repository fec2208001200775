-- The CUDA backend of the neural-network ops (linear, matmul, norms, softmax, elementwise, rope3d, rmsnorm_rope3d,
-- patchify, unpatchify, timestep_embedding, concat) against the CPU reference on the same
-- inputs: random values, odd sizes, strided views (narrowed, transposed, QKV-style), f32 and bf16,
-- outputs poisoned with NaN, in-place use. Tolerances: relative L2 error 1e-5 (f32), 1e-2 (bf16).
-- Every spec needs a GPU; without one they are reported as skipped.

local NaN = 0 / 0
local TOL = {f32 = 1e-5, bf16 = 1e-2, f16 = 1e-2}
local NS, CS = {1, 7, 65, 300}, {3, 64, 130}

local seed = 7100
local function rnd(shape, dt)
  seed = seed + 1
  return adaspa.randn(shape, {seed = seed, dtype = dt or "f32"})
end
local function poisoned(shape, dt) return adaspa.full(shape, NaN, {dtype = dt or "f32", device = "cuda"}) end

-- got (on the GPU) against ref (the CPU op's result) within the tolerance of dtype dt.
local function near(got, ref, dt, what)
  assert.equal("cuda:0", got:device(), what)
  local e = spec_rel_l2(spec_flat(got), spec_flat(ref))
  assert(e < TOL[dt], string.format("%s: relative L2 error %.3g (tolerance %g)", what, e, TOL[dt]))
end

local function fmt(...) return table.concat({...}, " ") end

-- A [rows, cols] view whose rows are strided (narrowed out of wider rows), on the CPU and the GPU.
local function narrowed(rows, cols, dt)
  local base = rnd({rows, cols + 3}, dt)
  return base:narrow(2, 2, cols), base:to("cuda"):narrow(2, 2, cols)
end

-- A [rows, cols] view with neither dimension contiguous (every other element of each row).
local function gapped(rows, cols, dt)
  local base = rnd({rows, cols, 2}, dt)
  local function v(b) return b:narrow(3, 1, 1):reshape({rows, cols}) end
  return v(base), v(base:to("cuda"))
end

describe("cuda nn ops: GEMM", function()
  it_gpu("linear matches the CPU at odd shapes and large K, with and without bias", function()
    local shapes = {{1, 3, 5}, {7, 64, 130}, {65, 130, 64}, {300, 130, 3}, {129, 1000, 257}, {33, 8192, 65},
      {4, 20000, 16}}
    for _, dt in ipairs({"f32", "bf16"}) do
      for i, s in ipairs(shapes) do
        local m, k, n = s[1], s[2], s[3]
        local x, w = rnd({m, k}, dt), rnd({n, k}, dt)
        local b = i % 2 == 1 and rnd({n}, dt) or nil
        local out = poisoned({m, n}, dt)
        local got = adaspa.linear(x:to("cuda"), w:to("cuda"), b and b:to("cuda"), {out = out})
        assert.is_true(rawequal(got, out))
        near(out, adaspa.linear(x, w, b), dt, fmt("linear", dt, m, k, n, b and "bias" or ""))
      end
    end
  end)

  it_gpu("linear takes 3-D x, strided x, transposed and narrowed w, and strided b", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      -- x [2, 5, 70] flattened; w a transposed [70, 33] (columns contiguous)
      local x = rnd({2, 5, 70}, dt)
      local wt = rnd({70, 33}, dt)
      local bb = rnd({33, 2}, dt)
      local function col(t) return t:narrow(2, 2, 1):reshape({33}) end
      local got = adaspa.linear(x:to("cuda"), wt:to("cuda"):transpose(1, 2), col(bb:to("cuda")))
      assert.same({2, 5, 33}, got:shape())
      near(got, adaspa.linear(x, wt:transpose(1, 2), col(bb)), dt, "3-D x, transposed w, strided b " .. dt)
      -- x with strided rows at an odd offset; w narrowed out of a wider matrix (the single
      -- blocks' linear2 halves)
      local xc, xg = narrowed(65, 130, dt)
      local w2 = rnd({40, 300}, dt)
      local w2g = w2:to("cuda")
      near(adaspa.linear(xg, w2g:narrow(2, 171, 130)), adaspa.linear(xc, w2:narrow(2, 171, 130)), dt,
        "narrowed x and w " .. dt)
      -- neither dimension contiguous: copied first
      local gc, gg = gapped(9, 70, dt)
      near(adaspa.linear(gg, wt:to("cuda"):transpose(1, 2)), adaspa.linear(gc, wt:transpose(1, 2)), dt,
        "gapped x " .. dt)
    end
  end)

  it_gpu("linear writes f32 out from bf16 inputs, bf16 out from f32 inputs, and mixes dtypes", function()
    local x, w, b = rnd({33, 96}, "bf16"), rnd({40, 96}, "bf16"), rnd({40}, "bf16")
    local out = poisoned({33, 40}, "f32")
    adaspa.linear(x:to("cuda"), w:to("cuda"), b:to("cuda"), {out = out})
    near(out, adaspa.linear(x, w, b, {out = adaspa.empty({33, 40})}), "f32", "bf16 in, f32 out")
    local xf, wf, bf = rnd({33, 96}), rnd({40, 96}), rnd({40})
    local outb = poisoned({33, 40}, "bf16")
    adaspa.linear(xf:to("cuda"), wf:to("cuda"), bf:to("cuda"), {out = outb})
    near(outb, adaspa.linear(xf, wf, bf), "bf16", "f32 in, bf16 out")
    -- bf16 x with f32 w and bias (converted on the device)
    local got = adaspa.linear(x:to("cuda"), wf:to("cuda"), bf:to("cuda"))
    assert.equal("bf16", got:dtype())
    near(got, adaspa.linear(x, wf, bf), "bf16", "bf16 x, f32 w")
    -- f16
    local xh, wh = x:to("f16"), w:to("f16")
    near(adaspa.linear(xh:to("cuda"), wh:to("cuda"), b:to("cuda")), adaspa.linear(xh, wh, b), "f16", "f16")
  end)

  it_gpu("matmul matches the CPU with transposed, narrowed and gapped operands", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, s in ipairs({{1, 1, 1}, {7, 3, 130}, {65, 64, 7}, {300, 130, 65}, {17, 4100, 9}}) do
        local m, k, n = s[1], s[2], s[3]
        local a, b = rnd({m, k}, dt), rnd({k, n}, dt)
        local out = poisoned({m, n}, dt)
        adaspa.matmul(a:to("cuda"), b:to("cuda"), {out = out})
        near(out, adaspa.matmul(a, b), dt, fmt("matmul", dt, m, k, n))
        local at, bt = rnd({k, m}, dt), rnd({n, k}, dt)
        near(adaspa.matmul(at:to("cuda"):transpose(1, 2), bt:to("cuda"):transpose(1, 2)),
          adaspa.matmul(at:transpose(1, 2), bt:transpose(1, 2)), dt, fmt("matmul transposed", dt, m, k, n))
      end
      local ac, ag = narrowed(33, 70, dt)
      local bc, bg = gapped(70, 19, dt)
      near(adaspa.matmul(ag, bg), adaspa.matmul(ac, bc), dt, "matmul narrowed a, gapped b " .. dt)
    end
  end)
end)

describe("cuda nn ops: linear options act and accumulate", function()
  -- x scaled by 1 / sqrt(k) so x w^T + b is of order 1, where gelu_tanh differs from the exact
  -- (erf) GELU by about 2e-4 relative L2: the f32 tolerance 1e-5 then tells the forms apart
  local function unit_rows(m, k, dt)
    return adaspa.scale(rnd({m, k}, dt), 1 / math.sqrt(k))
  end

  it_gpu("linear act = gelu_tanh matches the CPU at [1000, 777] x [333, 777]^T, f32 and bf16, with and without bias",
    function()
      local m, k, n = 1000, 777, 333
      for _, dt in ipairs({"f32", "bf16"}) do
        for _, bias in ipairs({false, true}) do
          local x, w = unit_rows(m, k, dt), rnd({n, k}, dt)
          local b = bias and rnd({n}, dt) or nil
          local what = fmt("act", dt, bias and "bias" or "no bias")
          local out = poisoned({m, n}, dt)
          local got = adaspa.linear(x:to("cuda"), w:to("cuda"), b and b:to("cuda"), {out = out, act = "gelu_tanh"})
          assert.is_true(rawequal(got, out))
          local ref = adaspa.linear(x, w, b, {act = "gelu_tanh"})
          if dt == "f32" then -- the tanh form, not the exact GELU (checked first: the clearer message)
            local got_l = spec_flat(out)
            local e_tanh = spec_rel_l2(got_l, spec_flat(ref))
            local e_erf = spec_rel_l2(got_l, spec_flat(adaspa.gelu(adaspa.linear(x, w, b))))
            assert(e_tanh < e_erf / 4, string.format("%s: relative L2 error %.3g to gelu_tanh but %.3g to the erf GELU",
              what, e_tanh, e_erf))
          end
          near(out, ref, dt, what)
          -- an f32 out from bf16 inputs, and an f16 out (f32 scratch on the device)
          if dt == "bf16" then
            local outf = poisoned({m, n}, "f32")
            adaspa.linear(x:to("cuda"), w:to("cuda"), b and b:to("cuda"), {out = outf, act = "gelu_tanh"})
            near(outf, adaspa.linear(x, w, b, {out = adaspa.empty({m, n}), act = "gelu_tanh"}), "f32", what .. ", f32 out")
            local outh = poisoned({m, n}, "f16")
            adaspa.linear(x:to("cuda"), w:to("cuda"), b and b:to("cuda"), {out = outh, act = "gelu_tanh"})
            near(outh, ref, "f16", what .. ", f16 out")
          end
        end
      end
    end)

  it_gpu("linear accumulate = true matches the CPU at [1000, 777] x [333, 777]^T, f32 and bf16, with and without bias",
    function()
      local m, k, n = 1000, 777, 333
      for _, dt in ipairs({"f32", "bf16"}) do
        for _, bias in ipairs({false, true}) do
          local x, w = rnd({m, k}, dt), rnd({n, k}, dt)
          local b = bias and rnd({n}, dt) or nil
          local what = fmt("accumulate", dt, bias and "bias" or "no bias")
          local old = adaspa.scale(rnd({m, n}, dt), 30) -- of the order of x w^T
          local ref = old:clone()
          adaspa.linear(x, w, b, {out = ref, accumulate = true})
          local out = old:to("cuda")
          local got = adaspa.linear(x:to("cuda"), w:to("cuda"), b and b:to("cuda"), {out = out, accumulate = true})
          assert.is_true(rawequal(got, out))
          near(out, ref, dt, what)
          -- the previous values were added: not the plain product
          assert(spec_rel_l2(spec_flat(out), spec_flat(adaspa.linear(x, w, b))) > 0.3, what .. ": old values lost")
          if dt == "bf16" then -- an f16 out from bf16 inputs: the f32 scratch starts from out's values
            local oldh = old:to("f16")
            local refh = oldh:clone()
            adaspa.linear(x, w, b, {out = refh, accumulate = true})
            local outh = oldh:to("cuda")
            adaspa.linear(x:to("cuda"), w:to("cuda"), b and b:to("cuda"), {out = outh, accumulate = true})
            near(outh, refh, "f16", what .. ", f16 out")
          end
        end
      end
    end)

  it_gpu("linear act and accumulate at [4096, 3072] x [12288, 3072]^T bf16 (HunyuanVideo's MLP) match the CPU", function()
    local m, k, n = 4096, 3072, 12288
    local x = adaspa.scale(adaspa.randn({m, k}, {seed = 7801, dtype = "bf16", device = "cuda"}), 1 / math.sqrt(k))
    local w = adaspa.randn({n, k}, {seed = 7802, dtype = "bf16", device = "cuda"})
    local b = adaspa.randn({n}, {seed = 7803, dtype = "bf16", device = "cuda"})
    -- relative L2 error of got (on the GPU) against ref, reduced on the GPU in f32 (50M elements
    -- are too many for Lua lists); a NaN fails it
    local function check_big(got, ref, what)
      assert.equal("cuda:0", got:device(), what)
      local r = ref:to("cuda"):to("f32")
      local e = adaspa.add(got:to("f32"), adaspa.scale(r, -1)):norm() / r:norm()
      assert(e < TOL.bf16, string.format("%s: relative L2 error %.3g (tolerance %g)", what, e, TOL.bf16))
    end
    -- rows checked against the CPU: the first, the last and some in between (the full CPU GEMM is slow)
    local picks = {{1, 64}, {2001, 64}, {m - 63, 64}}
    local wc, bc = w:to("cpu"):to("f32"), b:to("cpu")
    local function rows_near(got, ref_of, what)
      for _, p in ipairs(picks) do
        check_big(got:narrow(1, p[1], p[2]), ref_of(x:narrow(1, p[1], p[2]):to("cpu"), p), fmt(what, "rows", p[1]))
      end
    end
    for _, bias in ipairs({false, true}) do
      local bb, bcc = bias and b or nil, bias and bc or nil
      local what = bias and "bias" or "no bias"
      local out = poisoned({m, n}, "bf16")
      adaspa.linear(x, w, bb, {out = out, act = "gelu_tanh"})
      rows_near(out, function(xc) return adaspa.linear(xc, wc, bcc, {act = "gelu_tanh"}) end, "act " .. what)
      -- the whole tensor against the unfused GPU ops (one rounding to bf16 more there)
      check_big(out, adaspa.gelu_tanh(adaspa.linear(x, w, bb)), "act vs linear then gelu_tanh, " .. what)
      local old = adaspa.scale(adaspa.randn({m, n}, {seed = 7804, dtype = "bf16", device = "cuda"}), 2)
      local acc = old:clone()
      adaspa.linear(x, w, bb, {out = acc, accumulate = true})
      rows_near(acc, function(xc, p)
        local r = old:narrow(1, p[1], p[2]):to("cpu"):clone() -- old itself stays as it was
        return adaspa.linear(xc, wc, bcc, {out = r, accumulate = true})
      end, "accumulate " .. what)
      check_big(acc, adaspa.add(old, adaspa.linear(x, w, bb)), "accumulate vs linear then add, " .. what)
    end
  end)
end)

describe("cuda nn ops: norms", function()
  it_gpu("layernorm and rmsnorm match the CPU at odd sizes, with and without weight and bias", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, n in ipairs(NS) do
        for ci, c in ipairs(CS) do
          local x = rnd({n, c}, dt)
          adaspa.add(x, adaspa.full({c}, 3, {dtype = dt}), {out = x}) -- a mean far from 0
          local w, b = rnd({c}, dt), rnd({c}, dt)
          local xg = x:to("cuda")
          local useb = ci % 2 == 1
          local out = poisoned({n, c}, dt)
          adaspa.layernorm(xg, 1e-6, w:to("cuda"), useb and b:to("cuda") or nil, {out = out})
          near(out, adaspa.layernorm(x, 1e-6, w, useb and b or nil), dt, fmt("layernorm", dt, n, c))
          near(adaspa.layernorm(xg, 1e-5), adaspa.layernorm(x, 1e-5), dt, fmt("layernorm plain", dt, n, c))
          local outr = poisoned({n, c}, dt)
          adaspa.rmsnorm(xg, w:to("cuda"), 1e-6, {out = outr})
          near(outr, adaspa.rmsnorm(x, w, 1e-6), dt, fmt("rmsnorm", dt, n, c))
          near(adaspa.rmsnorm(xg, nil, 1e-6), adaspa.rmsnorm(x, nil, 1e-6), dt, fmt("rmsnorm plain", dt, n, c))
        end
      end
    end
  end)

  it_gpu("norms handle wide rows (every kernel shape, the streaming one past 8192)", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, c in ipairs({256, 1000, 1024, 2000, 3072, 4100, 8192, 9000}) do
        local x, w, b = rnd({5, c}, dt), rnd({c}, dt), rnd({c}, dt)
        local xg = x:to("cuda")
        near(adaspa.layernorm(xg, 1e-6, w:to("cuda"), b:to("cuda")), adaspa.layernorm(x, 1e-6, w, b), dt,
          fmt("layernorm wide", dt, c))
        near(adaspa.rmsnorm(xg, w:to("cuda"), 1e-6), adaspa.rmsnorm(x, w, 1e-6), dt, fmt("rmsnorm wide", dt, c))
      end
    end
  end)

  it_gpu("norms read strided, QKV-style and transposed views, mix dtypes and run in place", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      local xc, xg = narrowed(65, 130, dt)
      local w = rnd({130}, "f32") -- f32 weight with a bf16 x
      near(adaspa.layernorm(xg, 1e-6, w:to("cuda")), adaspa.layernorm(xc, 1e-6, w), dt, "layernorm narrowed " .. dt)
      -- q of a [S, 3, H, D] QKV tensor: rows at two strides
      local qkv = rnd({37, 3, 4, 64}, dt)
      local function q(t) return t:narrow(2, 1, 1):reshape({37, 4, 64}) end
      local wq = rnd({64}, dt)
      local qg = q(qkv:to("cuda"))
      assert.is_false(qg:is_contiguous())
      local out = poisoned({37, 4, 64}, dt)
      adaspa.rmsnorm(qg, wq:to("cuda"), 1e-6, {out = out})
      near(out, adaspa.rmsnorm(q(qkv), wq, 1e-6), dt, "rmsnorm of a QKV view " .. dt)
      -- last dimension not contiguous: copied first
      local xt = rnd({64, 9}, dt)
      near(adaspa.layernorm(xt:to("cuda"):transpose(1, 2), 1e-6), adaspa.layernorm(xt:transpose(1, 2), 1e-6), dt,
        "layernorm transposed " .. dt)
      -- a strided weight (every other element)
      local wb = rnd({64, 2}, dt)
      local function ws(t) return t:narrow(2, 2, 1):reshape({64}) end
      local x = rnd({7, 64}, dt)
      near(adaspa.rmsnorm(x:to("cuda"), ws(wb:to("cuda")), 1e-6), adaspa.rmsnorm(x, ws(wb), 1e-6), dt,
        "rmsnorm strided weight " .. dt)
      -- in place
      local xi = rnd({65, 130}, dt)
      local gi = xi:clone():to("cuda")
      adaspa.layernorm(gi, 1e-6, w:to("cuda"), nil, {out = gi})
      near(gi, adaspa.layernorm(xi, 1e-6, w), dt, "layernorm in place " .. dt)
      local xr = rnd({300, 64}, dt)
      local gr = xr:clone():to("cuda")
      adaspa.rmsnorm(gr, nil, 1e-6, {out = gr})
      near(gr, adaspa.rmsnorm(xr, nil, 1e-6), dt, "rmsnorm in place " .. dt)
    end
  end)

  it_gpu("layernorm_modulate (when bound) equals layernorm then modulate", function()
    if not adaspa.layernorm_modulate then return end -- the Lua binding comes with the integration
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, c in ipairs({3, 64, 130, 3072}) do
        local x, sh, sc = rnd({65, c}, dt), rnd({c}, dt), rnd({c}, dt)
        local ref = adaspa.modulate(adaspa.layernorm(x:to("f32"), 1e-6), sh, sc)
        local out = poisoned({65, c}, dt)
        adaspa.layernorm_modulate(x:to("cuda"), 1e-6, nil, nil, sh:to("cuda"), sc:to("cuda"), {out = out})
        near(out, ref, dt, fmt("layernorm_modulate", dt, c))
      end
    end
  end)

  it_gpu("gated_add_layernorm_modulate matches the CPU and the two CUDA ops; odd sizes, poisoned outputs, in place", function()
    local op = adaspa.gated_add_layernorm_modulate
    -- 8195 > 8192: the kernel's path that reads the row back from x_out in each pass
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, n in ipairs({1, 7, 65, 300}) do
        for _, c in ipairs(n < 300 and {3, 64, 130, 3072, 8195} or {3, 64, 130, 3072}) do
          local x, y = rnd({n, c}, dt), rnd({n, c}, dt)
          local sh, sc, w, b = rnd({c}, dt), rnd({c}, dt), rnd({c}, dt), rnd({c}, dt)
          for _, gform in ipairs({{c}, {n, c}}) do
            local g = rnd(gform, dt)
            local wb = #gform == 2
            local wx, bx = wb and w or nil, wb and b or nil
            local what = fmt("gated_add_layernorm_modulate", dt, n, c, "gate [" .. table.concat(gform, ", ") .. "]",
              wb and "weight, bias" or "")
            local ref, ref_xo = op(x, g, y, 1e-6, wx, bx, sh, sc)
            local xg, gg, yg = x:to("cuda"), g:to("cuda"), y:to("cuda")
            local shg, scg = sh:to("cuda"), sc:to("cuda")
            local wg, bg = wx and wx:to("cuda"), bx and bx:to("cuda")
            -- into poisoned x_out and out
            local xo, out = poisoned({n, c}, dt), poisoned({n, c}, dt)
            local r1, r2 = op(xg, gg, yg, 1e-6, wg, bg, shg, scg, {x_out = xo, out = out})
            assert.is_true(rawequal(r1, out) and rawequal(r2, xo), what)
            near(xo, ref_xo, dt, what .. ": x_out")
            near(out, ref, dt, what .. ": out")
            assert.equal(0, spec_maxdiff(xg, x), what .. ": x untouched")
            -- the two CUDA ops in turn give the same values
            local xo2 = adaspa.gated_add(xg, gg, yg)
            near(xo2, ref_xo, dt, what .. ": gated_add")
            near(adaspa.layernorm_modulate(xo2, 1e-6, wg, bg, shg, scg), out:to("cpu"), dt, what .. ": against the two ops")
            -- in place: x_out = x
            local out2 = poisoned({n, c}, dt)
            op(xg, gg, yg, 1e-6, wg, bg, shg, scg, {x_out = xg, out = out2})
            near(xg, ref_xo, dt, what .. ": in place x")
            near(out2, ref, dt, what .. ": in place out")
          end
        end
      end
    end
  end)

  it_gpu("gated_add_layernorm_modulate reads strided, 3-D and mixed-dtype inputs", function()
    local op = adaspa.gated_add_layernorm_modulate
    for _, dt in ipairs({"f32", "bf16"}) do
      -- narrowed x and y rows, a [C] gate narrowed out of an f32 modulation vector at an odd offset
      local xc, xg = narrowed(65, 130, dt)
      local yc, yg = narrowed(65, 130, dt)
      local mod = rnd({3 * 130}, "f32")
      local gc, gg = mod:narrow(1, 131, 130), mod:to("cuda"):narrow(1, 131, 130)
      local sh, sc = rnd({130}, dt), rnd({130}, "f32")
      local ref, ref_xo = op(xc, gc, yc, 1e-6, nil, nil, sh, sc)
      local out, xo = op(xg, gg, yg, 1e-6, nil, nil, sh:to("cuda"), sc:to("cuda"),
        {out = poisoned({65, 130}, dt), x_out = poisoned({65, 130}, dt)})
      near(xo, ref_xo, dt, "strided x_out " .. dt)
      near(out, ref, dt, "strided out " .. dt)
      -- 3-D x (rows fold), [1, C] gate, gapped y (copied first)
      local x3 = rnd({3, 11, 64}, dt)
      local g1 = rnd({1, 1, 64}, dt)
      local ybase = rnd({3, 11, 64, 2}, dt)
      local function gap(t) return t:narrow(4, 2, 1):reshape({3, 11, 64}) end
      local w = rnd({64}, dt)
      local r3, rx3 = op(x3, g1, gap(ybase), 1e-6, w, nil, sh:narrow(1, 1, 64), sh:narrow(1, 2, 64))
      local o3, ox3 = op(x3:to("cuda"), g1:to("cuda"), gap(ybase:to("cuda")), 1e-6, w:to("cuda"), nil,
        sh:to("cuda"):narrow(1, 1, 64), sh:to("cuda"):narrow(1, 2, 64))
      near(ox3, rx3, dt, "3-D x_out " .. dt)
      near(o3, r3, dt, "3-D out " .. dt)
    end
    -- bf16 x and x_out with an f32 gate, f16 y and f32 out: x_out rounded to bf16 before the norm
    local x, g, y = rnd({65, 64}, "bf16"), rnd({64}), rnd({65, 64}, "f16")
    local sh, sc = rnd({64}), rnd({64})
    local ref, ref_xo = op(x, g, y, 1e-6, nil, nil, sh, sc, {out = adaspa.empty({65, 64})})
    local out, xo = op(x:to("cuda"), g:to("cuda"), y:to("cuda"), 1e-6, nil, nil, sh:to("cuda"), sc:to("cuda"),
      {out = poisoned({65, 64}, "f32")})
    assert.equal("bf16", xo:dtype())
    near(xo, ref_xo, "bf16", "mixed dtypes: x_out")
    near(out, ref, "f32", "mixed dtypes: out")
    -- tensors on different devices are named
    spec_error(function() op(x:to("cuda"), g:to("cuda"), y:to("cuda"), 1e-6, nil, nil, sh:to("cuda"), sc:to("cuda"),
      {x_out = adaspa.empty({65, 64}, {dtype = "bf16"})}) end, "adaspa.gated_add_layernorm_modulate", "x_out is on cpu")
  end)
end)

describe("cuda nn ops: elementwise", function()
  local ops3 = {{"modulate", adaspa.modulate}, {"gated_add", adaspa.gated_add}}

  it_gpu("modulate, gated_add, add and mul match the CPU with [C], [1, C] and full operands", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, n in ipairs(NS) do
        for _, c in ipairs(CS) do
          local x = rnd({n, c}, dt)
          local xg = x:to("cuda")
          for _, form in ipairs({{c}, {1, c}, {n, c}}) do
            local a, b = rnd(form, dt), rnd(form, dt)
            local ag, bg = a:to("cuda"), b:to("cuda")
            local what = fmt(dt, n, c, "operands [" .. table.concat(form, ", ") .. "]")
            for _, o in ipairs(ops3) do
              local out = poisoned({n, c}, dt)
              o[2](xg, ag, bg, {out = out})
              near(out, o[2](x, a, b), dt, o[1] .. " " .. what)
            end
            local out = poisoned({n, c}, dt)
            adaspa.add(xg, ag, {out = out})
            near(out, adaspa.add(x, a), dt, "add " .. what)
            near(adaspa.mul(xg, ag), adaspa.mul(x, a), dt, "mul " .. what)
          end
        end
      end
    end
  end)

  it_gpu("scale, silu, gelu_tanh and gelu match the CPU, extremes included", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, n in ipairs(NS) do
        for _, c in ipairs(CS) do
          local x = adaspa.scale(rnd({n, c}, dt), 4)
          local xg = x:to("cuda")
          local out = poisoned({n, c}, dt)
          adaspa.scale(xg, -0.37, {out = out})
          near(out, adaspa.scale(x, -0.37), dt, fmt("scale", dt, n, c))
          out = poisoned({n, c}, dt)
          adaspa.silu(xg, {out = out})
          near(out, adaspa.silu(x), dt, fmt("silu", dt, n, c))
          out = poisoned({n, c}, dt)
          adaspa.gelu_tanh(xg, {out = out})
          near(out, adaspa.gelu_tanh(x), dt, fmt("gelu_tanh", dt, n, c))
          out = poisoned({n, c}, dt)
          adaspa.gelu(xg, {out = out})
          near(out, adaspa.gelu(x), dt, fmt("gelu", dt, n, c))
        end
      end
      local ext = adaspa.tensor({-100, -30, -5, 0, 1e-3, 5, 30, 100}, {dtype = dt})
      near(adaspa.silu(ext:to("cuda")), adaspa.silu(ext), dt, "silu extremes " .. dt)
      near(adaspa.gelu_tanh(ext:to("cuda")), adaspa.gelu_tanh(ext), dt, "gelu_tanh extremes " .. dt)
      near(adaspa.gelu(ext:to("cuda")), adaspa.gelu(ext), dt, "gelu extremes " .. dt)
      -- exact, not the tanh form: at -3 they differ by 4e-4
      local m3 = adaspa.tensor({-3, -2.5}, {dtype = dt}):to("cuda")
      assert.is_true(spec_maxdiff(adaspa.gelu(m3):to("cpu"), adaspa.gelu_tanh(m3):to("cpu")) > 2e-4, "gelu is not gelu_tanh " .. dt)
    end
  end)

  it_gpu("elementwise ops read strided, 3-D and transposed views and mixed dtypes", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      local xc, xg = narrowed(65, 130, dt)
      local yc, yg = narrowed(65, 130, dt)
      -- a [C] gate narrowed out of a [3C] modulation vector at an odd offset, in f32
      local mod = rnd({3 * 130}, "f32")
      local gc, gg = mod:narrow(1, 131, 130), mod:to("cuda"):narrow(1, 131, 130)
      near(adaspa.gated_add(xg, gg, yg), adaspa.gated_add(xc, gc, yc), dt, "gated_add strided " .. dt)
      near(adaspa.modulate(xg, gg, yg), adaspa.modulate(xc, gc, yc), dt, "modulate strided " .. dt)
      near(adaspa.add(xg, yg), adaspa.add(xc, yc), dt, "add strided " .. dt)
      near(adaspa.gelu_tanh(xg), adaspa.gelu_tanh(xc), dt, "gelu_tanh strided " .. dt)
      near(adaspa.gelu(xg), adaspa.gelu(xc), dt, "gelu strided " .. dt)
      near(adaspa.silu(xg), adaspa.silu(xc), dt, "silu strided " .. dt)
      -- the MLP half of a single block's linear1 output: columns narrowed out of wide rows
      local lin1 = rnd({33, 3 * 64 + 256}, dt)
      near(adaspa.gelu_tanh(lin1:to("cuda"):narrow(2, 193, 256)), adaspa.gelu_tanh(lin1:narrow(2, 193, 256)), dt,
        "gelu_tanh of a column block " .. dt)
      -- 3-D and QKV-style views
      local qkv = rnd({7, 3, 5, 16}, dt)
      local function k(t) return t:narrow(2, 2, 1):reshape({7, 5, 16}) end
      local v = rnd({16}, dt)
      near(adaspa.mul(k(qkv:to("cuda")), v:to("cuda")), adaspa.mul(k(qkv), v), dt, "mul of a QKV view " .. dt)
      near(adaspa.scale(k(qkv:to("cuda")), 3), adaspa.scale(k(qkv), 3), dt, "scale of a QKV view " .. dt)
      -- transposed (copied first)
      local t = rnd({130, 65}, dt)
      local s = rnd({130}, dt)
      near(adaspa.modulate(t:to("cuda"):transpose(1, 2), s:to("cuda"), s:to("cuda")),
        adaspa.modulate(t:transpose(1, 2), s, s), dt, "modulate transposed " .. dt)
      near(adaspa.silu(t:to("cuda"):transpose(1, 2)), adaspa.silu(t:transpose(1, 2)), dt, "silu transposed " .. dt)
    end
    -- bf16 x with f32 vectors and an f32 output
    local x, sh, sc = rnd({65, 64}, "bf16"), rnd({64}), rnd({64})
    local out = poisoned({65, 64}, "f32")
    adaspa.modulate(x:to("cuda"), sh:to("cuda"), sc:to("cuda"), {out = out})
    near(out, adaspa.modulate(x, sh, sc, {out = adaspa.empty({65, 64})}), "f32", "modulate bf16 x, f32 rest")
    local y16 = rnd({65, 64}, "f16")
    near(adaspa.gated_add(x:to("cuda"), sh:to("cuda"), y16:to("cuda")), adaspa.gated_add(x, sh, y16), "bf16",
      "gated_add bf16 x, f32 gate, f16 y")
  end)

  it_gpu("elementwise ops run in place with out = x", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, c in ipairs(CS) do
        local x, g, y = rnd({65, c}, dt), rnd({c}, dt), rnd({65, c}, dt)
        local xg = x:clone():to("cuda")
        adaspa.gated_add(xg, g:to("cuda"), y:to("cuda"), {out = xg})
        near(xg, adaspa.gated_add(x, g, y), dt, fmt("gated_add in place", dt, c))
        local ref = adaspa.gated_add(x, g, y)
        adaspa.modulate(xg, g:to("cuda"), g:to("cuda"), {out = xg})
        ref = adaspa.modulate(ref, g, g)
        near(xg, ref, dt, fmt("modulate in place", dt, c))
        adaspa.add(xg, y:to("cuda"), {out = xg})
        ref = adaspa.add(ref, y)
        near(xg, ref, dt, fmt("add in place", dt, c))
        adaspa.mul(xg, g:to("cuda"), {out = xg})
        ref = adaspa.mul(ref, g)
        near(xg, ref, dt, fmt("mul in place", dt, c))
        adaspa.scale(xg, 0.5, {out = xg})
        ref = adaspa.scale(ref, 0.5)
        adaspa.gelu_tanh(xg, {out = xg})
        ref = adaspa.gelu_tanh(ref)
        adaspa.gelu(xg, {out = xg})
        ref = adaspa.gelu(ref)
        adaspa.silu(xg, {out = xg})
        ref = adaspa.silu(ref)
        near(xg, ref, dt, fmt("scale, gelu_tanh, gelu, silu in place", dt, c))
      end
    end
  end)
end)

describe("cuda nn ops: video DiT pieces", function()
  it_gpu("rmsnorm_rope3d matches the CPU: odd sizes, text tokens, QKV views, weight dtypes, in place", function()
    local cases = {
      {grid = {3, 4, 5}, s = 67, h = 3, axes = {4, 6, 6}},     -- D 16: 2 lanes per row
      {grid = {2, 3, 4}, s = 30, h = 5, axes = {16, 56, 56}},  -- D 128 as in HunyuanVideo
      {grid = {1, 2, 3}, s = 6, h = 1, axes = {2, 4, 4}},      -- D 10: a partial chunk
      {grid = {5, 1, 1}, s = 9, h = 4, axes = {8, 0, 2}},      -- D 10, an empty axis
      {grid = {2, 2, 2}, s = 11, h = 2, axes = {64, 96, 96}},  -- D 256: a full warp per row
      {grid = {2, 1, 2}, s = 5, h = 2, axes = {100, 100, 100}}, -- D 300: rmsnorm, then rope3d
    }
    for _, dt in ipairs({"f32", "bf16"}) do
      for i, cs in ipairs(cases) do
        local d = cs.axes[1] + cs.axes[2] + cs.axes[3]
        local n = cs.grid[1] * cs.grid[2] * cs.grid[3]
        local x = rnd({cs.s, cs.h, d}, dt)
        local w = i % 3 ~= 0 and rnd({d}, i % 2 == 0 and "f32" or dt) or nil
        local wg = w and w:to("cuda")
        local what = fmt("rmsnorm_rope3d", dt, cs.s, cs.h, d, w and w:dtype() or "no weight")
        local ref = adaspa.rmsnorm_rope3d(x, w, 1e-6, cs.grid, cs.axes, 256, n)
        local out = poisoned({cs.s, cs.h, d}, dt)
        adaspa.rmsnorm_rope3d(x:to("cuda"), wg, 1e-6, cs.grid, cs.axes, 256, n, {out = out})
        near(out, ref, dt, what)
        local qkv = rnd({cs.s, 3, cs.h, d}, dt)
        local function k(t) return t:narrow(2, 2, 1):reshape({cs.s, cs.h, d}) end
        near(adaspa.rmsnorm_rope3d(k(qkv:to("cuda")), wg, 1e-6, cs.grid, cs.axes, 256, n),
          adaspa.rmsnorm_rope3d(k(qkv), w, 1e-6, cs.grid, cs.axes, 256, n), dt, what .. " QKV view")
        local xg = x:to("cuda")
        adaspa.rmsnorm_rope3d(xg, wg, 1e-6, cs.grid, cs.axes, 256, n, {out = xg})
        near(xg, ref, dt, what .. " in place")
      end
    end
  end)

  it_gpu("rope3d matches the CPU with text tokens past the grid, strided and in place", function()
    local cases = {
      {grid = {3, 4, 5}, s = 67, h = 3, axes = {4, 6, 6}, theta = 256},
      {grid = {2, 3, 4}, s = 30, h = 2, axes = {16, 56, 56}, theta = 256},
      {grid = {1, 2, 3}, s = 6, h = 1, axes = {2, 4, 4}, theta = 10000},
      {grid = {5, 1, 1}, s = 9, h = 4, axes = {8, 0, 2}, theta = 256},
    }
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, cs in ipairs(cases) do
        local d = cs.axes[1] + cs.axes[2] + cs.axes[3]
        local n = cs.grid[1] * cs.grid[2] * cs.grid[3]
        local x = rnd({cs.s, cs.h, d}, dt)
        local what = fmt("rope3d", dt, cs.s, cs.h, d)
        local out = poisoned({cs.s, cs.h, d}, dt)
        adaspa.rope3d(x:to("cuda"), cs.grid, cs.axes, cs.theta, n, {out = out})
        near(out, adaspa.rope3d(x, cs.grid, cs.axes, cs.theta, n), dt, what)
        -- q of a QKV tensor
        local qkv = rnd({cs.s, 3, cs.h, d}, dt)
        local function k(t) return t:narrow(2, 2, 1):reshape({cs.s, cs.h, d}) end
        near(adaspa.rope3d(k(qkv:to("cuda")), cs.grid, cs.axes, cs.theta, n), adaspa.rope3d(k(qkv), cs.grid, cs.axes,
          cs.theta, n), dt, what .. " QKV view")
        -- in place
        local xg = x:clone():to("cuda")
        adaspa.rope3d(xg, cs.grid, cs.axes, cs.theta, n, {out = xg})
        near(xg, adaspa.rope3d(x, cs.grid, cs.axes, cs.theta, n), dt, what .. " in place")
      end
      -- the defaults (axes {16, 56, 56}, theta 256, n_tokens T*H*W) and a transposed view
      local x = rnd({24, 2, 128}, dt)
      near(adaspa.rope3d(x:to("cuda"), {2, 3, 4}), adaspa.rope3d(x, {2, 3, 4}), dt, "rope3d defaults " .. dt)
      local xt = rnd({2, 24, 128}, dt)
      near(adaspa.rope3d(xt:to("cuda"):transpose(1, 2), {2, 3, 4}), adaspa.rope3d(xt:transpose(1, 2), {2, 3, 4}), dt,
        "rope3d transposed " .. dt)
      local xl = rnd({16, 24, 2}, dt) -- [24, 2, 16] with the last dimension strided: copied first
      local function lt(t) return t:permute(2, 3, 1) end
      near(adaspa.rope3d(lt(xl:to("cuda")), {2, 3, 4}, {4, 6, 6}), adaspa.rope3d(lt(xl), {2, 3, 4}, {4, 6, 6}), dt,
        "rope3d permuted " .. dt)
    end
  end)

  it_gpu("patchify and unpatchify match the CPU, strided inputs included", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, sz in ipairs({{3, 2, 6, 8}, {16, 3, 4, 10}, {1, 1, 2, 2}}) do
        local c, t, h, w = sz[1], sz[2], sz[3], sz[4]
        local x = rnd({c, t, h, w}, dt)
        local ntok = t * (h / 2) * (w / 2)
        local out = poisoned({ntok, 4 * c}, dt)
        adaspa.patchify(x:to("cuda"), {out = out})
        near(out, adaspa.patchify(x), dt, fmt("patchify", dt, c, t, h, w))
        local back = poisoned({c, t, h, w}, dt)
        adaspa.unpatchify(out, {t, h, w}, {out = back})
        near(back, x, dt, fmt("unpatchify round trip", dt, c, t, h, w))
        -- strided: narrowed W, then a transposed (H, W) view whose last dimension is strided
        local base = rnd({c, t, h, w + 2}, dt)
        near(adaspa.patchify(base:to("cuda"):narrow(4, 2, w)), adaspa.patchify(base:narrow(4, 2, w)), dt,
          fmt("patchify narrowed", dt, c, t, h, w))
        local tr = rnd({c, t, w, h}, dt)
        near(adaspa.patchify(tr:to("cuda"):transpose(3, 4)), adaspa.patchify(tr:transpose(3, 4)), dt,
          fmt("patchify transposed", dt, c, t, h, w))
        local xs = rnd({ntok, 4 * c + 4}, dt)
        near(adaspa.unpatchify(xs:to("cuda"):narrow(2, 3, 4 * c), {t, h, w}),
          adaspa.unpatchify(xs:narrow(2, 3, 4 * c), {t, h, w}), dt, fmt("unpatchify narrowed", dt, c, t, h, w))
      end
    end
  end)

  it_gpu("timestep_embedding matches the CPU (angles in double), strided t included", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      local t = adaspa.tensor({0, 1, 999.5, 500, 0.25, 37, 1000}, {dtype = dt})
      for _, dim in ipairs({2, 6, 256}) do
        local out = poisoned({7, dim}, dt)
        adaspa.timestep_embedding(t:to("cuda"), dim, 10000, {out = out})
        near(out, adaspa.timestep_embedding(t, dim, 10000), dt, fmt("timestep_embedding", dt, dim))
      end
      local tt = adaspa.tensor({{3, 1}, {700, 2}, {12.5, 3}}, {dtype = dt})
      local function col(x) return x:narrow(2, 1, 1):reshape({3}) end
      near(adaspa.timestep_embedding(col(tt:to("cuda")), 64, 100), adaspa.timestep_embedding(col(tt), 64, 100), dt,
        "timestep_embedding strided " .. dt)
    end
  end)

  it_gpu("concat stacks GPU tensors of mixed dtypes and views", function()
    local a, b = rnd({5, 3, 8}), rnd({4, 3, 8}, "bf16")
    local cv = rnd({3, 6, 8}):narrow(2, 2, 3)
    local got = adaspa.concat({a:to("cuda"), b:to("cuda"), cv:to("cuda")})
    assert.equal("cuda:0", got:device())
    assert.same({12, 3, 8}, got:shape())
    assert.equal(0, spec_maxdiff(got, adaspa.concat({a, b, cv})))
    local out = poisoned({9, 3, 8}, "bf16")
    adaspa.concat({b:to("cuda"), a:to("cuda")}, {out = out})
    assert.equal(0, spec_maxdiff(out, adaspa.concat({b, a}, {out = adaspa.empty({9, 3, 8}, {dtype = "bf16"})})))
  end)
end)

describe("cuda nn ops: softmax", function()
  it_gpu("softmax matches the CPU at odd and wide rows, scales, strided and 3-D inputs, -inf, in place", function()
    for _, dt in ipairs({"f32", "bf16"}) do
      for _, n in ipairs(NS) do
        for _, c in ipairs({1, 3, 33, 130, 1861, 4100}) do
          local x = adaspa.scale(rnd({n, c}, dt), 3)
          local xg = x:to("cuda")
          for _, sc in ipairs({1, 0.088}) do
            local out = poisoned({n, c}, dt)
            adaspa.softmax(xg, {scale = sc, out = out})
            near(out, adaspa.softmax(x, {scale = sc}), dt, fmt("softmax", dt, n, c, sc))
          end
          local out32 = poisoned({n, c})
          adaspa.softmax(xg, {scale = 0.5, out = out32})
          near(out32, adaspa.softmax(x, {scale = 0.5, out = adaspa.empty({n, c})}), "f32", fmt("softmax f32 out", dt, n, c))
        end
      end
      local xc, xgc = narrowed(65, 301, dt)
      near(adaspa.softmax(xgc, {scale = 2}), adaspa.softmax(xc, {scale = 2}), dt, fmt("softmax narrowed", dt))
      local xp, xgp = gapped(7, 40, dt)
      near(adaspa.softmax(xgp), adaspa.softmax(xp), dt, fmt("softmax gapped", dt))
      local x3 = rnd({3, 24, 77}, dt)
      near(adaspa.softmax(x3:to("cuda"), {scale = 0.3}), adaspa.softmax(x3, {scale = 0.3}), dt, fmt("softmax 3-D", dt))
      local inf = math.huge
      local xi = adaspa.tensor({{-inf, 1, -inf, 2, 1000}, {-inf, -inf, -inf, -inf, -inf}, {5, 4, 3, 2, 1}}, {dtype = dt})
      local gi = adaspa.softmax(xi:to("cuda"))
      near(gi, adaspa.softmax(xi), dt, fmt("softmax -inf", dt))
      local g = spec_flat(gi)
      assert.same({0, 0, 0, 0, 0}, {g[6], g[7], g[8], g[9], g[10]})
      assert.equal(0, g[1])
      local xr = rnd({9, 70}, dt)
      local ref = adaspa.softmax(xr, {scale = 1.5})
      local gr = xr:to("cuda")
      assert.is_true(rawequal(gr, adaspa.softmax(gr, {scale = 1.5, out = gr})))
      near(gr, ref, dt, fmt("softmax in place", dt))
    end
  end)
end)

describe("cuda nn ops: errors", function()
  it_gpu("mixed devices name both arguments", function()
    local x, w = rnd({4, 8}), rnd({5, 8})
    local xg, wg = x:to("cuda"), w:to("cuda")
    spec_error(function() adaspa.linear(xg, w) end, "adaspa.linear", "w is on cpu but x is on cuda:0")
    spec_error(function() adaspa.linear(x, wg) end, "adaspa.linear", "w is on cuda:0 but x is on cpu")
    spec_error(function() adaspa.linear(xg, wg, rnd({5})) end, "adaspa.linear", "b is on cpu but x is on cuda:0")
    spec_error(function() adaspa.matmul(xg, rnd({8, 3})) end, "adaspa.matmul", "b is on cpu but a is on cuda:0")
    spec_error(function() adaspa.layernorm(xg, 1e-6, rnd({8})) end, "adaspa.layernorm",
      "weight is on cpu but x is on cuda:0")
    spec_error(function() adaspa.rmsnorm(xg, rnd({8}), 1e-6) end, "adaspa.rmsnorm", "weight is on cpu but x is on cuda:0")
    spec_error(function() adaspa.softmax(xg, {out = adaspa.empty({4, 8})}) end, "adaspa.softmax",
      "out is on cpu but x is on cuda:0")
    spec_error(function() adaspa.modulate(xg, rnd({8}), rnd({8}):to("cuda")) end, "adaspa.modulate",
      "shift is on cpu but x is on cuda:0")
    spec_error(function() adaspa.gated_add(xg, rnd({8}):to("cuda"), x) end, "adaspa.gated_add",
      "y is on cpu but x is on cuda:0")
    spec_error(function() adaspa.add(xg, x) end, "adaspa.add", "b is on cpu but a is on cuda:0")
    spec_error(function() adaspa.silu(xg, {out = adaspa.empty({4, 8})}) end, "adaspa.silu",
      "out is on cpu but x is on cuda:0")
    spec_error(function() adaspa.scale(x, 2, {out = adaspa.empty({4, 8}, {device = "cuda"})}) end, "adaspa.scale",
      "out is on cuda:0 but x is on cpu")
    spec_error(function() adaspa.rope3d(rnd({6, 1, 4}):to("cuda"), {1, 2, 3}, {0, 2, 2}, 256, 6,
      {out = adaspa.empty({6, 1, 4})}) end, "adaspa.rope3d", "out is on cpu but x is on cuda:0")
    spec_error(function() adaspa.concat({xg, x}) end, "adaspa.concat", "tensor 2 is on cpu but tensor 1 is on cuda:0")
    spec_error(function() adaspa.timestep_embedding(rnd({3}):to("cuda"), 8, 100, {out = adaspa.empty({3, 8})}) end,
      "adaspa.timestep_embedding", "out is on cpu but t is on cuda:0")
  end)

  it_gpu("shape errors read as on the CPU and nothing is written", function()
    local xg, wg = rnd({4, 8}):to("cuda"), rnd({5, 7}):to("cuda")
    spec_error(function() adaspa.linear(xg, wg) end, "adaspa.linear", "[*, 8]", "[5, 7]")
    local out = adaspa.full({4, 5}, 7, {device = "cuda"})
    pcall(adaspa.linear, xg, rnd({5, 8}):to("cuda"), rnd({4}):to("cuda"), {out = out})
    assert.equal(140, out:sum())
    spec_error(function() adaspa.modulate(xg, rnd({7}):to("cuda"), rnd({8}):to("cuda")) end, "adaspa.modulate",
      "shift must have shape [8]")
  end)
end)
