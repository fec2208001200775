-- The CUDA attention kernels (kernels/attention_sm80.cu, chosen by the plan) against the CPU reference: dense, sparse,
-- block mass and attention_with_mass. Inputs are bf16 (the kernels' precision) and the CPU
-- computes from the same bf16 values in f32, into f32 outputs; the GPU writes into outputs
-- poisoned with NaN. Tolerances (relative L2): out 1e-2 (P and out are rounded to bf16 on the
-- GPU), lse and mass 1e-3 (f32 softmax from the same bf16 inputs). f32 inputs are converted to
-- bf16 on the device, so they carry the bf16 tolerance too. Skipped without a GPU.

local NaN = 0 / 0
local flat, rel_l2 = spec_flat, spec_rel_l2

local function close(got, ref, tol, what)
  local e = rel_l2(flat(got), type(ref) == "table" and ref or flat(ref))
  assert(e < tol, string.format("%s: relative L2 error %.3g exceeds %.3g", what, e, tol))
end

local seed = 7000
local function randn(shape, dtype)
  seed = seed + 1
  return adaspa.randn(shape, {seed = seed, dtype = dtype or "bf16"})
end

local function gpu_full(shape, dtype) return adaspa.full(shape, NaN, {device = "cuda", dtype = dtype or "f32"}) end
local function cpu_full(shape) return adaspa.full(shape, NaN) end

-- Sq, Skv, H, D, kv_valid (nil: all keys)
local cases = {
  {1, 1, 1, 64}, {65, 65, 3, 64}, {130, 130, 1, 128}, {1000, 1000, 3, 128}, {70, 150, 3, 64, 100},
  {130, 300, 3, 128, 129}, {1000, 1000, 1, 64, 777}, {65, 200, 3, 128}, {200, 65, 1, 64},
}

local function what(c, extra)
  return string.format("Sq=%d Skv=%d H=%d D=%d kv_valid=%s%s", c[1], c[2], c[3], c[4], tostring(c[5]), extra or "")
end

-- The lse of a previous step: lse + 0.5 * noise (CPU f32).
local function stale(lse)
  local noise = adaspa.randn(lse:shape(), {seed = 99})
  return adaspa.add(lse:to("cpu"), adaspa.scale(noise, 0.5))
end

-- A u8 mask [H, nqb, nkb] with head-dependent density, some empty rows (head 1, query block 2,
-- and every fifth row of the last head) and some full rows; keep(h, qb, kb) 0-based.
local function random_mask(h, nqb, nkb, s)
  local x, t = s or 12345, {}
  for hh = 1, h do
    t[hh] = {}
    local keep_frac = ({0.5, 0.15, 0.85})[(hh - 1) % 3 + 1]
    for qb = 1, nqb do
      t[hh][qb] = {}
      local empty = (hh == 1 and qb == 2) or (hh == h and h > 1 and qb % 5 == 0)
      local full = hh == 2 and qb == 1
      for kb = 1, nkb do
        x = (x * 1103515245 + 12345) % 2147483648
        local on = full or (not empty and (x % 1000) < keep_frac * 1000)
        t[hh][qb][kb] = on and 1 or 0
      end
    end
  end
  return adaspa.tensor(t, {dtype = "u8"})
end

describe("cuda attention", function()
  it_gpu("dense attention matches the CPU (sizes, heads, D 64 and 128, kv_valid, NaN-poisoned outputs)", function()
    for _, c in ipairs(cases) do
      local sq, skv, h, d, kvv = c[1], c[2], c[3], c[4], c[5]
      local q, k, v = randn({sq, h, d}), randn({skv, h, d}), randn({skv, h, d})
      local ro, rl = adaspa.attention(q, k, v, {kv_valid = kvv, out = cpu_full({sq, h, d})})
      local o0, l0 = gpu_full({sq, h, d}, "bf16"), gpu_full({h, sq})
      local o, l = adaspa.attention(q:to("cuda"), k:to("cuda"), v:to("cuda"), {kv_valid = kvv, out = o0, lse_out = l0})
      assert.equal(o0, o)
      assert.equal("cuda:0", o:device())
      close(o, ro, 1e-2, what(c, " out"))
      close(l, rl, 1e-3, what(c, " lse"))
    end
  end)

  it_gpu("honours scale (negative too) and writes f32 and f16 outputs", function()
    local q, k, v = randn({130, 3, 64}), randn({150, 3, 64}), randn({150, 3, 64})
    local gq, gk, gv = q:to("cuda"), k:to("cuda"), v:to("cuda")
    for _, sc in ipairs({0.3, -0.2}) do
      local ro, rl = adaspa.attention(q, k, v, {scale = sc, out = cpu_full({130, 3, 64})})
      local o, l = adaspa.attention(gq, gk, gv, {scale = sc})
      assert.equal("bf16", o:dtype())
      close(o, ro, 1e-2, "scale " .. sc .. " out")
      close(l, rl, 1e-3, "scale " .. sc .. " lse")
    end
    local ro = adaspa.attention(q, k, v, {out = cpu_full({130, 3, 64})})
    for _, dt in ipairs({"f32", "f16"}) do
      local o = adaspa.attention(gq, gk, gv, {out = gpu_full({130, 3, 64}, dt)})
      assert.equal(dt, o:dtype())
      close(o, ro, 1e-2, dt .. " out")
    end
  end)

  it_gpu("takes f32 and f16 inputs (converted to bf16 on the device: bf16 tolerance)", function()
    for _, dt in ipairs({"f32", "f16"}) do
      local q, k, v = randn({70, 3, 128}, dt), randn({150, 3, 128}, dt), randn({150, 3, 128}, dt)
      local ro, rl = adaspa.attention(q, k, v, {kv_valid = 120, out = cpu_full({70, 3, 128})})
      local o, l = adaspa.attention(q:to("cuda"), k:to("cuda"), v:to("cuda"), {kv_valid = 120})
      assert.equal(dt, o:dtype())
      close(o, ro, 1e-2, dt .. " out")
      close(l, rl, 1e-3, dt .. " lse")
    end
  end)

  it_gpu("reads strided q, k, v out of one [S, 3, H, D] tensor, a transposed q, and D = 40 (padded)", function()
    for _, c in ipairs({{130, 3, 128}, {1000, 1, 64}, {65, 3, 40}}) do
      local s, h, d = c[1], c[2], c[3]
      local packed = randn({s, 3, h, d})
      local gp = packed:to("cuda")
      local function part(t, i) return t:narrow(2, i, 1):reshape({s, h, d}) end
      local gq, gk, gv = part(gp, 1), part(gp, 2), part(gp, 3)
      assert.is_false(gq:is_contiguous())
      assert.is_true(gq:shares_storage(gp))
      local ro, rl = adaspa.attention(part(packed, 1), part(packed, 2), part(packed, 3), {out = cpu_full({s, h, d})})
      local o, l = adaspa.attention(gq, gk, gv, {out = gpu_full({s, h, d}, "bf16"), lse_out = gpu_full({h, s})})
      local tag = string.format(" S=%d H=%d D=%d", s, h, d)
      close(o, ro, 1e-2, "packed out" .. tag)
      close(l, rl, 1e-3, "packed lse" .. tag)
      -- a last dimension that is not contiguous is staged
      local base = randn({s, d, h})
      local qt, gqt = base:transpose(2, 3), base:to("cuda"):transpose(2, 3)
      if h > 1 then assert.is_false(gqt:is_contiguous()) end
      local ro2 = adaspa.attention(qt, part(packed, 2), part(packed, 3), {out = cpu_full({s, h, d})})
      close(adaspa.attention(gqt, gk, gv), ro2, 1e-2, "transposed q" .. tag)
    end
  end)

  it_gpu("ignores the keys past kv_valid even when they are huge", function()
    local q, k, v = randn({70, 3, 64}), randn({150, 3, 64}), randn({150, 3, 64})
    local k2, v2 = k:clone(), v:clone()
    k2:narrow(1, 101, 50):fill(50)
    v2:narrow(1, 101, 50):fill(1e4)
    local o1, l1 = adaspa.attention(q:to("cuda"), k:to("cuda"), v:to("cuda"), {kv_valid = 100})
    local o2, l2 = adaspa.attention(q:to("cuda"), k2:to("cuda"), v2:to("cuda"), {kv_valid = 100})
    assert.equal(0, spec_maxdiff(o1, o2))
    assert.equal(0, spec_maxdiff(l1, l2))
  end)

  it_gpu("block mass matches the CPU for blocks of 64 and 128; rows sum to 1 with the true lse", function()
    for _, c in ipairs(cases) do
      local sq, skv, h, d, kvv = c[1], c[2], c[3], c[4], c[5]
      local q, k, v = randn({sq, h, d}), randn({skv, h, d}), randn({skv, h, d})
      local gq, gk = q:to("cuda"), k:to("cuda")
      local _, glse = adaspa.attention(gq, gk, v:to("cuda"), {kv_valid = kvv})
      local lse_c = stale(glse)
      for _, b in ipairs({64, 128}) do
        local shape = {h, math.ceil(sq / b), math.ceil(skv / b)}
        local tag = what(c, " block=" .. b)
        local ref = adaspa.block_mass(q, k, lse_c, {block = b, kv_valid = kvv})
        local m0 = gpu_full(shape)
        local m = adaspa.block_mass(gq, gk, lse_c:to("cuda"), {block = b, kv_valid = kvv, out = m0})
        assert.equal(m0, m)
        close(m, ref, 1e-3, tag .. " mass")
        -- with the true lse every row sums to 1, blocks past kv_valid are 0
        local rows = adaspa.block_mass(gq, gk, glse, {block = b, kv_valid = kvv}):totable()
        for hh = 1, h do
          for qb = 1, #rows[hh] do
            local sum = 0
            for kb = 1, #rows[hh][qb] do
              sum = sum + rows[hh][qb][kb]
              if kvv and (kb - 1) * b >= kvv then assert.equal(0, rows[hh][qb][kb]) end
            end
            assert(math.abs(sum - 1) < 1e-3, string.format("%s: head %d row %d sums to %.6f", tag, hh, qb, sum))
          end
        end
      end
    end
  end)

  it_gpu("attention_with_mass matches the CPU and equals attention plus block_mass", function()
    for _, c in ipairs(cases) do
      local sq, skv, h, d, kvv = c[1], c[2], c[3], c[4], c[5]
      local q, k, v = randn({sq, h, d}), randn({skv, h, d}), randn({skv, h, d})
      local gq, gk, gv = q:to("cuda"), k:to("cuda"), v:to("cuda")
      local go, gl = adaspa.attention(gq, gk, gv, {kv_valid = kvv})
      local lc = stale(gl)
      local glc = lc:to("cuda")
      for _, b in ipairs({64, 128}) do
        local shape = {h, math.ceil(sq / b), math.ceil(skv / b)}
        local tag = what(c, " block=" .. b)
        local ro, rl, rm = adaspa.attention_with_mass(q, k, v, lc, {block = b, kv_valid = kvv, out = cpu_full({sq, h, d})})
        local o0, l0, m0 = gpu_full({sq, h, d}, "bf16"), gpu_full({h, sq}), gpu_full(shape)
        local o, l, m = adaspa.attention_with_mass(gq, gk, gv, glc,
          {block = b, kv_valid = kvv, out = o0, lse_out = l0, mass_out = m0})
        assert.equal(o0, o); assert.equal(l0, l); assert.equal(m0, m)
        close(o, ro, 1e-2, tag .. " out")
        close(l, rl, 1e-3, tag .. " lse")
        close(m, rm, 1e-3, tag .. " mass")
        -- the same tiles as the dense kernel: out and lse agree with it
        assert(spec_maxdiff(o, go) <= 1e-2, tag .. ": out differs from attention")
        close(l, gl, 1e-5, tag .. " lse vs attention")
        close(m, adaspa.block_mass(gq, gk, glc, {block = b, kv_valid = kvv}), 1e-3, tag .. " mass vs block_mass")
      end
      -- with the true lse, rows of mass sum to 1
      local _, _, m = adaspa.attention_with_mass(gq, gk, gv, gl, {block = 64, kv_valid = kvv})
      for hh, head in ipairs(m:totable()) do
        for qb, row in ipairs(head) do
          local sum = 0
          for _, x in ipairs(row) do sum = sum + x end
          assert(math.abs(sum - 1) < 1e-3, string.format("%s: fused head %d row %d sums to %.6f", what(c), hh, qb, sum))
        end
      end
    end
  end)

  it_gpu("sparse attention matches the CPU on random layouts with empty rows (blocks of 64 and 128)", function()
    for _, c in ipairs(cases) do
      local sq, skv, h, d, kvv = c[1], c[2], c[3], c[4], c[5]
      local q, k, v = randn({sq, h, d}), randn({skv, h, d}), randn({skv, h, d})
      local gq, gk, gv = q:to("cuda"), k:to("cuda"), v:to("cuda")
      for _, b in ipairs({64, 128}) do
        local layout = adaspa.layout.from_mask(random_mask(h, math.ceil(sq / b), math.ceil(skv / b), seed), b)
        local tag = what(c, " block=" .. b)
        local ro, rl = adaspa.sparse_attention(q, k, v, layout, {kv_valid = kvv, out = cpu_full({sq, h, d})})
        for rep = 1, 2 do -- the second call uses the layout's device mirror
          local o0, l0 = gpu_full({sq, h, d}, "bf16"), gpu_full({h, sq})
          local o, l = adaspa.sparse_attention(gq, gk, gv, layout, {kv_valid = kvv, out = o0, lse_out = l0})
          assert.equal(o0, o)
          close(o, ro, 1e-2, tag .. " out, call " .. rep)
          close(l, rl, 1e-3, tag .. " lse, call " .. rep)
        end
        if sq > b then -- head 1, query block 2 is empty: 0 and -inf
          local rows = math.min(b, sq - b)
          local o, l = adaspa.sparse_attention(gq, gk, gv, layout, {kv_valid = kvv})
          assert.equal(0, o:narrow(1, b + 1, rows):narrow(2, 1, 1):to("cpu"):norm())
          assert.equal(-math.huge, l:narrow(1, 1, 1):narrow(2, b + 1, rows):to("cpu"):max())
        end
      end
    end
  end)

  it_gpu("sparse attention with the full layout equals dense attention", function()
    for _, c in ipairs({{130, 200, 3, 64}, {1000, 1000, 1, 128, 900}, {65, 65, 3, 128}}) do
      local sq, skv, h, d, kvv = c[1], c[2], c[3], c[4], c[5]
      local gq, gk, gv = randn({sq, h, d}):to("cuda"), randn({skv, h, d}):to("cuda"), randn({skv, h, d}):to("cuda")
      local o, l = adaspa.attention(gq, gk, gv, {kv_valid = kvv})
      for _, b in ipairs({64, 128}) do
        local layout = adaspa.layout.full(h, math.ceil(sq / b), math.ceil(skv / b), b)
        local so, sl = adaspa.sparse_attention(gq, gk, gv, layout, {kv_valid = kvv})
        close(so, o, 1e-2, what(c, " block=" .. b .. " out"))
        close(sl, l, 1e-5, what(c, " block=" .. b .. " lse"))
      end
    end
  end)

  it_gpu("rejects a layout of another shape, a non-finite lse and a head dimension above 128", function()
    local gq, gk, gv = randn({70, 3, 64}):to("cuda"), randn({150, 3, 64}):to("cuda"), randn({150, 3, 64}):to("cuda")
    local good = adaspa.layout.full(3, 2, 3, 64)
    adaspa.sparse_attention(gq, gk, gv, good) -- uploads the mirror: later checks take the short path
    spec_error(function() adaspa.sparse_attention(gq, gk, gv, adaspa.layout.full(3, 3, 3, 64)) end,
      "adaspa.sparse_attention", "layout has 3 x 3 blocks of 64, attention over 70 queries and 150 keys needs 2 x 3")
    spec_error(function() adaspa.sparse_attention(gq:narrow(1, 1, 64), gk:narrow(1, 1, 140), gv:narrow(1, 1, 140), good) end,
      "adaspa.sparse_attention", "layout has 2 x 3 blocks of 64, attention over 64 queries and 140 keys needs 1 x 3")
    spec_error(function() adaspa.sparse_attention(gq, gk, gv, adaspa.layout.full(2, 2, 3, 64)) end,
      "adaspa.sparse_attention", "layout has 2 heads, the attention has 3")
    local lse = randn({3, 70}, "f32")
    lse:set(-math.huge, 2, 5)
    spec_error(function() adaspa.block_mass(gq, gk, lse:to("cuda")) end, "adaspa.block_mass",
      "lse [3, 70] must be finite, got 1 non-finite values (the first is -inf)")
    lse:set(NaN, 1, 1)
    spec_error(function() adaspa.attention_with_mass(gq, gk, gv, lse:to("cuda")) end, "adaspa.attention_with_mass",
      "lse_cached [3, 70] must be finite, got 2 non-finite values")
    spec_error(function() adaspa.attention(gq, gk:to("cpu"), gv) end, "adaspa.attention", "k")
    local big = randn({4, 1, 192}):to("cuda")
    spec_error(function() adaspa.attention(big, big, big) end, "adaspa.attention", "the CUDA kernels take at most 128")
  end)
end)
