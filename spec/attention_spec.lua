-- Attention primitives: adaspa.attention, sparse_attention, block_mass, attention_with_mass
-- against a plain float64 reference written below; properties tying them together; bad input.

local NaN = 0 / 0

local flat, rel_l2 = spec_flat, spec_rel_l2

-- Asserts that two tensors hold the same values (equal infinities included), element by element.
local function assert_same(a, b, what)
  local x, y = flat(a), flat(b)
  assert(#x == #y, (what or "result") .. ": sizes differ")
  for i = 1, #x do
    if x[i] ~= y[i] then error(string.format("%s: element %d differs: %.9g vs %.9g", what or "result", i, x[i], y[i]), 2) end
  end
end

local function assert_close(got, ref, tol, what)
  local e = rel_l2(type(got) == "table" and got or flat(got), ref)
  assert(e < tol, string.format("%s: relative L2 error %.3g exceeds %.3g", what or "result", e, tol))
end

-- ---- the float64 reference -------------------------------------------------------------------

-- Scores s[h][i][j] = scale * q[i, h] . k[j, h] in double, with the sizes of the problem.
local function ref_scores(q, k, scale)
  local sq, h, d = q:shape()[1], q:shape()[2], q:shape()[3]
  local skv = k:shape()[1]
  scale = scale or 1 / math.sqrt(d)
  local qf, kf = flat(q), flat(k)
  local s = {}
  for hh = 0, h - 1 do
    s[hh] = {}
    for i = 0, sq - 1 do
      local row, qo = {}, (i * h + hh) * d
      for j = 0, skv - 1 do
        local ko, acc = (j * h + hh) * d, 0
        for x = 1, d do acc = acc + qf[qo + x] * kf[ko + x] end
        row[j] = acc * scale
      end
      s[hh][i] = row
    end
  end
  return {s = s, sq = sq, skv = skv, h = h, d = d}
end

-- Softmax attention per row over keys j < kv_valid with keep(h, qb, kb) (block `block`) true:
-- flat out [Sq*H*D] and lse [H*Sq]; a row without keys gives zeros and -inf.
local function ref_attention(R, v, kv_valid, keep, block)
  local vf = flat(v)
  local out, lse = {}, {}
  kv_valid = kv_valid or R.skv
  for hh = 0, R.h - 1 do
    for i = 0, R.sq - 1 do
      local row, m, keys = R.s[hh][i], -math.huge, {}
      for j = 0, kv_valid - 1 do
        if not keep or keep(hh, math.floor(i / block), math.floor(j / block)) then
          keys[#keys + 1] = j
          if row[j] > m then m = row[j] end
        end
      end
      local l, acc = 0, {}
      for x = 1, R.d do acc[x] = 0 end
      for _, j in ipairs(keys) do
        local p, vo = math.exp(row[j] - m), (j * R.h + hh) * R.d
        l = l + p
        for x = 1, R.d do acc[x] = acc[x] + p * vf[vo + x] end
      end
      local oo = (i * R.h + hh) * R.d
      for x = 1, R.d do out[oo + x] = l > 0 and acc[x] / l or 0 end
      lse[hh * R.sq + i + 1] = l > 0 and m + math.log(l) or -math.huge
    end
  end
  return out, lse
end

-- mass [H, nqb, nkb] flat: per block, the mean over its query rows of the sum over its keys
-- j < kv_valid of exp(s - lse[h, i]).
local function ref_mass(R, lse, block, kv_valid)
  kv_valid = kv_valid or R.skv
  local nqb, nkb = math.ceil(R.sq / block), math.ceil(R.skv / block)
  local mass = {}
  for hh = 0, R.h - 1 do
    for qb = 0, nqb - 1 do
      local i0, i1 = qb * block, math.min(R.sq, (qb + 1) * block) - 1
      for kb = 0, nkb - 1 do
        local acc = 0
        for i = i0, i1 do
          local row, l = R.s[hh][i], lse[hh * R.sq + i + 1]
          for j = kb * block, math.min(kv_valid, (kb + 1) * block) - 1 do acc = acc + math.exp(row[j] - l) end
        end
        mass[(hh * nqb + qb) * nkb + kb + 1] = acc / (i1 - i0 + 1)
      end
    end
  end
  return mass
end

local seed = 100
local function randn(shape, dtype)
  seed = seed + 1
  return adaspa.randn(shape, {seed = seed, dtype = dtype})
end

local function qkv(sq, skv, h, d, dtype)
  return randn({sq, h, d}, dtype), randn({skv, h, d}, dtype), randn({skv, h, d}, dtype)
end

-- Sq, Skv, H, D of the parity cases: single token, sizes not a multiple of 64, Sq ~= Skv, and a
-- head dimension that is not a multiple of the vector tiles.
local cases = {{1, 1, 1, 64}, {65, 65, 3, 64}, {130, 130, 1, 128}, {70, 150, 3, 64}, {65, 65, 3, 128}, {33, 47, 2, 40}}

describe("adaspa.attention", function()
  it("matches the float64 reference, writing into NaN-poisoned outputs", function()
    for _, c in ipairs(cases) do
      local sq, skv, h, d = c[1], c[2], c[3], c[4]
      local q, k, v = qkv(sq, skv, h, d)
      local out0, lse0 = adaspa.full({sq, h, d}, NaN), adaspa.full({h, sq}, NaN)
      local out, lse = adaspa.attention(q, k, v, {out = out0, lse_out = lse0})
      assert.equal(out0, out)
      assert.equal(lse0, lse)
      local ro, rl = ref_attention(ref_scores(q, k), v)
      local what = string.format("Sq=%d Skv=%d H=%d D=%d", sq, skv, h, d)
      assert_close(out, ro, 1e-5, what .. " out")
      assert_close(lse, rl, 1e-5, what .. " lse")
    end
  end)

  it("allocates out with q's dtype and lse as f32 [H, S]", function()
    local q, k, v = qkv(65, 65, 3, 64, "bf16")
    local out, lse = adaspa.attention(q, k, v)
    assert.same({65, 3, 64}, out:shape())
    assert.equal("bf16", out:dtype())
    assert.same({3, 65}, lse:shape())
    assert.equal("f32", lse:dtype())
  end)

  it("honours scale", function()
    local q, k, v = qkv(65, 70, 3, 64)
    local out, lse = adaspa.attention(q, k, v, {scale = 0.3})
    local ro, rl = ref_attention(ref_scores(q, k, 0.3), v)
    assert_close(out, ro, 1e-5, "out")
    assert_close(lse, rl, 1e-5, "lse")
  end)


  it("ignores the keys at and past kv_valid", function()
    local sq, skv, h, d, kvv = 70, 150, 3, 64, 100
    local q, k, v = qkv(sq, skv, h, d)
    local out, lse = adaspa.attention(q, k, v, {kv_valid = kvv})
    local ro, rl = ref_attention(ref_scores(q, k), v, kvv)
    assert_close(out, ro, 1e-5, "out")
    assert_close(lse, rl, 1e-5, "lse")
    -- huge keys and values past kv_valid would dominate every row if they were read
    local k2, v2 = k:clone(), v:clone()
    k2:narrow(1, kvv + 1, skv - kvv):fill(50)
    v2:narrow(1, kvv + 1, skv - kvv):fill(1e4)
    local out2, lse2 = adaspa.attention(q, k2, v2, {kv_valid = kvv})
    assert.equal(0, spec_maxdiff(out, out2))
    assert.equal(0, spec_maxdiff(lse, lse2))
    local out3 = adaspa.attention(q, k2, v2)
    assert.is_true(spec_maxdiff(out, out3) > 1)
  end)

  it("reads strided views: q, k, v narrowed out of one [S, 3, H, D] tensor, a transposed q", function()
    local s, h, d = 130, 3, 64
    local packed = randn({s, 3, h, d})
    local q = packed:narrow(2, 1, 1):reshape({s, h, d})
    local k = packed:narrow(2, 2, 1):reshape({s, h, d})
    local v = packed:narrow(2, 3, 1):reshape({s, h, d})
    assert.is_false(q:is_contiguous())
    assert.is_true(q:shares_storage(packed) and k:shares_storage(packed) and v:shares_storage(packed))
    local out, lse = adaspa.attention(q, k, v)
    local ro, rl = ref_attention(ref_scores(q, k), v)
    assert_close(out, ro, 1e-5, "out")
    assert_close(lse, rl, 1e-5, "lse")
    local outc, lsec = adaspa.attention(q:contiguous(), k:contiguous(), v:contiguous())
    assert.equal(0, spec_maxdiff(out, outc))
    assert.equal(0, spec_maxdiff(lse, lsec))
    -- a last dimension that is not contiguous is staged
    local qt = randn({s, d, h}):transpose(2, 3)
    assert.same({s, h, d}, qt:shape())
    local out4 = adaspa.attention(qt, k, v)
    assert.equal(0, spec_maxdiff(out4, adaspa.attention(qt:contiguous(), k, v)))
  end)

  it("takes bf16 and f16 inputs (computing in f32, rounding out to its dtype)", function()
    for _, dt in ipairs({"bf16", "f16"}) do
      local q, k, v = qkv(70, 130, 3, 64, dt)
      local out, lse = adaspa.attention(q, k, v, {out = adaspa.full({70, 3, 64}, NaN, {dtype = dt})})
      assert.equal(dt, out:dtype())
      local ro, rl = ref_attention(ref_scores(q, k), v)
      assert_close(out, ro, dt == "bf16" and 1e-2 or 2e-3, dt .. " out")
      assert_close(lse, rl, 1e-5, dt .. " lse")
      -- an f32 out keeps the f32 accuracy
      local out32 = adaspa.attention(q, k, v, {out = adaspa.full({70, 3, 64}, NaN)})
      assert_close(out32, ro, 1e-5, dt .. " inputs, f32 out")
    end
  end)

  it("gives the same bits at any thread count", function()
    local q, k, v = qkv(260, 200, 3, 64)
    local lc = randn({3, 260})
    local base = {adaspa.attention_with_mass(q, k, v, lc, {block = 64})}
    local bm = adaspa.block_mass(q, k, lc, {block = 128})
    for _, n in ipairs({1, 3}) do
      adaspa.threads(n)
      local ok, err = pcall(function()
        local got = {adaspa.attention_with_mass(q, k, v, lc, {block = 64})}
        for i = 1, 3 do assert.equal(0, spec_maxdiff(base[i], got[i])) end
        assert.equal(0, spec_maxdiff(bm, adaspa.block_mass(q, k, lc, {block = 128})))
      end)
      adaspa.threads(0)
      assert(ok, err)
    end
  end)
end)

describe("adaspa.block_mass", function()
  it("matches the float64 reference for blocks of 64 and 128, into a NaN-poisoned out", function()
    for _, c in ipairs(cases) do
      local sq, skv, h, d = c[1], c[2], c[3], c[4]
      local q, k, v = qkv(sq, skv, h, d)
      local _, lse = adaspa.attention(q, k, v)
      local R = ref_scores(q, k)
      for _, b in ipairs({64, 128}) do
        local shape = {h, math.ceil(sq / b), math.ceil(skv / b)}
        local m0 = adaspa.full(shape, NaN)
        local mass = adaspa.block_mass(q, k, lse, {block = b, out = m0})
        assert.equal(m0, mass)
        assert.same(shape, mass:shape())
        local what = string.format("Sq=%d Skv=%d H=%d D=%d block=%d", sq, skv, h, d, b)
        assert_close(mass, ref_mass(R, flat(lse), b), 1e-5, what)
      end
    end
  end)

  it("has rows summing to 1 with the true lse, and zeros past kv_valid", function()
    local sq, skv, h, d = 130, 300, 3, 64
    local q, k, v = qkv(sq, skv, h, d)
    for _, kvv in ipairs({skv, 129}) do
      local _, lse = adaspa.attention(q, k, v, {kv_valid = kvv})
      for _, b in ipairs({64, 128}) do
        local mass = adaspa.block_mass(q, k, lse, {block = b, kv_valid = kvv}):totable()
        for hh = 1, h do
          for qb = 1, #mass[hh] do
            local row, sum = mass[hh][qb], 0
            for kb = 1, #row do
              sum = sum + row[kb]
              if (kb - 1) * b >= kvv then assert.equal(0, row[kb]) end
            end
            assert(math.abs(sum - 1) < 1e-5, string.format("head %d block row %d sums to %.8f", hh, qb, sum))
          end
        end
      end
    end
  end)

  it("uses default block 64 and honours scale", function()
    local q, k = randn({70, 3, 64}), randn({150, 3, 64})
    local lse = randn({3, 70})
    local mass = adaspa.block_mass(q, k, lse, {scale = 0.2})
    assert.same({3, 2, 3}, mass:shape())
    assert_close(mass, ref_mass(ref_scores(q, k, 0.2), flat(lse), 64), 1e-5, "mass")
  end)
end)

-- lse + a perturbation: the lse of a previous step, as the search step has it.
local function stale(lse)
  local t = lse:totable()
  local r = flat(randn(lse:shape()))
  local n = 0
  for h = 1, #t do
    for i = 1, #t[h] do n = n + 1; t[h][i] = t[h][i] + 0.5 * r[n] end
  end
  return adaspa.tensor(t)
end

describe("adaspa.attention_with_mass", function()
  it("equals attention and block_mass(lse_cached) in one pass", function()
    for _, c in ipairs({{65, 65, 3, 64}, {70, 150, 3, 64}, {130, 130, 1, 128}}) do
      local sq, skv, h, d = c[1], c[2], c[3], c[4]
      local q, k, v = qkv(sq, skv, h, d)
      local out, lse = adaspa.attention(q, k, v)
      local lc = stale(lse)
      local R = ref_scores(q, k)
      for _, b in ipairs({64, 128}) do
        local shape = {h, math.ceil(sq / b), math.ceil(skv / b)}
        local o0, l0, m0 = adaspa.full({sq, h, d}, NaN), adaspa.full({h, sq}, NaN), adaspa.full(shape, NaN)
        local o, l, m = adaspa.attention_with_mass(q, k, v, lc, {block = b, out = o0, lse_out = l0, mass_out = m0})
        assert.equal(o0, o); assert.equal(l0, l); assert.equal(m0, m)
        local what = string.format("Sq=%d Skv=%d H=%d D=%d block=%d", sq, skv, h, d, b)
        -- the dense op works on blocks of 64: the same arithmetic, the same bits
        local tol = b == 64 and 0 or 1e-6
        assert(spec_maxdiff(o, out) <= tol, what .. ": out differs from attention")
        assert(spec_maxdiff(l, lse) <= tol, what .. ": lse differs from attention")
        assert_close(m, flat(adaspa.block_mass(q, k, lc, {block = b})), 1e-6, what .. " mass vs block_mass")
        assert_close(m, ref_mass(R, flat(lc), b), 1e-5, what .. " mass vs reference")
      end
    end
  end)

  it("honours kv_valid and scale", function()
    local q, k, v = qkv(70, 150, 3, 64)
    local lc = randn({3, 70})
    local o, l, m = adaspa.attention_with_mass(q, k, v, lc, {block = 64, kv_valid = 90, scale = 0.1})
    local R = ref_scores(q, k, 0.1)
    local ro, rl = ref_attention(R, v, 90)
    assert_close(o, ro, 1e-5, "out")
    assert_close(l, rl, 1e-5, "lse")
    assert_close(m, ref_mass(R, flat(lc), 64, 90), 1e-5, "mass")
  end)
end)

-- A u8 mask [H, nqb, nkb] from a fixed pseudo-random sequence (about half the blocks kept),
-- with every block of head 1, query block 2 dropped; returns the tensor and keep(h, qb, kb).
local function random_mask(h, nqb, nkb)
  local x, t = 12345, {}
  for hh = 1, h do
    t[hh] = {}
    for qb = 1, nqb do
      t[hh][qb] = {}
      for kb = 1, nkb do
        x = (x * 1103515245 + 12345) % 2147483648
        t[hh][qb][kb] = (x % 1000 < 500 and not (hh == 1 and qb == 2)) and 1 or 0
      end
    end
  end
  return adaspa.tensor(t, {dtype = "u8"}), function(hh, qb, kb) return t[hh + 1][qb + 1][kb + 1] == 1 end
end

describe("adaspa.sparse_attention", function()
  it("with the full layout equals dense attention", function()
    local sq, skv, h, d = 130, 200, 3, 64
    local q, k, v = qkv(sq, skv, h, d)
    local out, lse = adaspa.attention(q, k, v)
    for _, b in ipairs({64, 128}) do
      local layout = adaspa.layout.full(h, math.ceil(sq / b), math.ceil(skv / b), b)
      local o, l = adaspa.sparse_attention(q, k, v, layout, {out = adaspa.full({sq, h, d}, NaN), lse_out = adaspa.full({h, sq}, NaN)})
      local tol = b == 64 and 0 or 1e-6
      assert(spec_maxdiff(o, out) <= tol, "block " .. b .. ": out differs")
      assert(spec_maxdiff(l, lse) <= tol, "block " .. b .. ": lse differs")
    end
  end)

  it("equals the reference with the dropped blocks masked to -inf; an empty row gives 0 and -inf", function()
    for _, c in ipairs({{130, 130, 3, 64, 64}, {70, 150, 3, 64, 64, 100}, {200, 260, 1, 64, 128}, {65, 65, 3, 128, 64}}) do
      local sq, skv, h, d, b, kvv = c[1], c[2], c[3], c[4], c[5], c[6]
      local q, k, v = qkv(sq, skv, h, d)
      local mask, keep = random_mask(h, math.ceil(sq / b), math.ceil(skv / b))
      local layout = adaspa.layout.from_mask(mask, b)
      local o, l = adaspa.sparse_attention(q, k, v, layout, {kv_valid = kvv, out = adaspa.full({sq, h, d}, NaN), lse_out = adaspa.full({h, sq}, NaN)})
      local ro, rl = ref_attention(ref_scores(q, k), v, kvv, keep, b)
      local what = string.format("Sq=%d Skv=%d H=%d D=%d block=%d", sq, skv, h, d, b)
      assert_close(o, ro, 1e-5, what .. " out")
      assert_close(l, rl, 1e-5, what .. " lse")
      if sq > b then -- query block 2 of head 1 has no block: rows b+1.. are 0 and -inf
        local rows = math.min(b, sq - b)
        assert.equal(0, o:narrow(1, b + 1, rows):narrow(2, 1, 1):norm())
        assert.equal(-math.huge, l:narrow(1, 1, 1):narrow(2, b + 1, rows):max())
      end
    end
  end)

  it("has recall 1 with the full layout", function()
    local q, k, v = qkv(130, 130, 3, 64)
    local _, lse = adaspa.attention(q, k, v)
    local mass = adaspa.block_mass(q, k, lse, {block = 64})
    local r = adaspa.layout.full(3, 3, 3, 64):recall(mass)
    assert.equal(3, #r)
    for h = 1, 3 do assert(math.abs(r[h] - 1) < 1e-12, "head " .. h .. " recall " .. r[h]) end
  end)

  it("gives the same bits at any thread count", function()
    local q, k, v = qkv(260, 260, 3, 64)
    local layout = adaspa.layout.from_mask((random_mask(3, 5, 5)), 64)
    local o, l = adaspa.sparse_attention(q, k, v, layout)
    adaspa.threads(1)
    local ok, err = pcall(function()
      local o1, l1 = adaspa.sparse_attention(q, k, v, layout)
      assert_same(o, o1, "out")
      assert_same(l, l1, "lse")
    end)
    adaspa.threads(0)
    assert(ok, err)
  end)
end)

describe("attention errors", function()
  local q, k, v = qkv(70, 150, 3, 64)
  local lse = randn({3, 70})

  it("name the function and the argument for bad tensors", function()
    spec_error(function() adaspa.attention(q, nil, v) end, "adaspa.attention", "k must be a tensor, got nil")
    spec_error(function() adaspa.attention(randn({70, 192}), k, v) end, "adaspa.attention", "q must have shape [S, H, D], got [70, 192]")
    spec_error(function() adaspa.attention(q, randn({150, 2, 64}), v) end, "adaspa.attention", "k must have shape [*, 3, 64], got [150, 2, 64]")
    spec_error(function() adaspa.attention(q, randn({150, 3, 32}), v) end, "adaspa.attention", "k must have shape [*, 3, 64], got [150, 3, 32]")
    spec_error(function() adaspa.attention(q, k, randn({149, 3, 64})) end, "adaspa.attention", "v has shape [149, 3, 64] but k has shape [150, 3, 64]")
    spec_error(function() adaspa.attention(randn({2, 1, 257}), randn({2, 1, 257}), randn({2, 1, 257})) end,
      "adaspa.attention", "q [2, 1, 257] has head dimension 257; at most 256")
    spec_error(function() adaspa.sparse_attention(q, k, randn({150, 3, 65}), adaspa.layout.full(3, 2, 3, 64)) end,
      "adaspa.sparse_attention", "v has shape [150, 3, 65] but k has shape [150, 3, 64]")
    spec_error(function() adaspa.block_mass(q, randn({150, 4, 64}), lse) end, "adaspa.block_mass", "k must have shape [*, 3, 64], got [150, 4, 64]")
    spec_error(function() adaspa.attention_with_mass(q, k, randn({150, 3}), lse) end, "adaspa.attention_with_mass", "v has shape [150, 3] but k has shape [150, 3, 64]")
  end)

  it("reject mixed and non-float dtypes", function()
    spec_error(function() adaspa.attention(q, k:to("bf16"), v) end, "adaspa.attention", "k is bf16 [150, 3, 64] but q is f32 [70, 3, 64]")
    spec_error(function() adaspa.attention(q, k, v:to("f16")) end, "adaspa.attention", "v is f16 [150, 3, 64] but q is f32")
    spec_error(function() adaspa.attention(q:to("i32"), k, v) end, "adaspa.attention", "q must be f32, bf16 or f16, got i32 [70, 3, 64]")
    spec_error(function() adaspa.block_mass(q, k, lse:to("i16")) end, "adaspa.block_mass", "lse must be f32, bf16 or f16, got i16 [3, 70]")
    spec_error(function() adaspa.attention(q, k, v, {lse_out = adaspa.empty({3, 70}, {dtype = "bf16"})}) end,
      "adaspa.attention", "option lse_out must be f32, got bf16 [3, 70]")
    spec_error(function() adaspa.attention(q, k, v, {out = adaspa.empty({70, 3, 64}, {dtype = "i32"})}) end,
      "adaspa.attention", "out must be f32, bf16 or f16, got i32 [70, 3, 64]")
  end)

  it("reject bad outputs", function()
    spec_error(function() adaspa.attention(q, k, v, {out = adaspa.empty({70, 3, 63})}) end, "adaspa.attention", "option out has shape [70, 3, 63], expected [70, 3, 64]")
    spec_error(function() adaspa.attention(q, k, v, {lse_out = adaspa.empty({70, 3})}) end, "adaspa.attention", "option lse_out has shape [70, 3], expected [3, 70]")
    spec_error(function() adaspa.block_mass(q, k, lse, {out = adaspa.empty({3, 2, 2})}) end, "adaspa.block_mass", "option out has shape [3, 2, 2], expected [3, 2, 3]")
    spec_error(function() adaspa.attention_with_mass(q, k, v, lse, {mass_out = adaspa.empty({3, 2, 3}), block = 128}) end,
      "adaspa.attention_with_mass", "option mass_out has shape [3, 2, 3], expected [3, 1, 2]")
    local strided = adaspa.empty({3, 70, 64}):transpose(1, 2)
    spec_error(function() adaspa.attention(q, k, v, {out = strided}) end, "adaspa.attention", "out [70, 3, 64] must be contiguous")
    local qq = q:clone()
    spec_error(function() adaspa.attention(qq, k, v, {out = qq}) end, "adaspa.attention", "out [70, 3, 64] shares storage with q [70, 3, 64]")
    local lc = lse:clone()
    spec_error(function() adaspa.attention_with_mass(q, k, v, lc, {lse_out = lc}) end,
      "adaspa.attention_with_mass", "lse [3, 70] shares storage with lse_cached [3, 70]")
  end)

  it("reject bad options: block, kv_valid, scale, unknown keys", function()
    spec_error(function() adaspa.block_mass(q, k, lse, {block = 32}) end, "adaspa.block_mass", "option block must be 64 or 128, got 32")
    spec_error(function() adaspa.attention_with_mass(q, k, v, lse, {block = 256}) end, "adaspa.attention_with_mass", "option block must be 64 or 128, got 256")
    spec_error(function() adaspa.block_mass(q, k, lse, {block = 64.5}) end, "adaspa.block_mass", "option block must be an integer")
    spec_error(function() adaspa.attention(q, k, v, {kv_valid = 0}) end, "adaspa.attention", "option kv_valid must be an integer >= 1, got 0")
    spec_error(function() adaspa.attention(q, k, v, {kv_valid = -3}) end, "adaspa.attention", "option kv_valid must be an integer >= 1, got -3")
    spec_error(function() adaspa.attention(q, k, v, {kv_valid = 151}) end, "adaspa.attention", "kv_valid must be in 1..150 (the keys of k [150, 3, 64]), got 151")
    spec_error(function() adaspa.block_mass(q, k, lse, {kv_valid = 200}) end, "adaspa.block_mass", "kv_valid must be in 1..150")
    spec_error(function() adaspa.attention(q, k, v, {scale = 0}) end, "adaspa.attention", "option scale must be a finite non-zero number, got 0")
    spec_error(function() adaspa.attention(q, k, v, {scale = NaN}) end, "adaspa.attention", "option scale must be a finite non-zero number")
    spec_error(function() adaspa.attention(q, k, v, {block = 64}) end, "adaspa.attention", "unknown option 'block'")
    spec_error(function() adaspa.attention(q, k, v, "fast") end, "adaspa.attention", "options must be a table, got string")
  end)

  it("reject a non-finite lse", function()
    local bad = lse:clone()
    bad:set(-math.huge, 2, 5)
    spec_error(function() adaspa.block_mass(q, k, bad) end, "adaspa.block_mass", "lse [3, 70] must be finite, got 1 non-finite values (the first is -inf)")
    bad:set(NaN, 1, 1)
    spec_error(function() adaspa.attention_with_mass(q, k, v, bad) end, "adaspa.attention_with_mass", "lse_cached [3, 70] must be finite, got 2 non-finite values")
    spec_error(function() adaspa.block_mass(q, k, randn({3, 71})) end, "adaspa.block_mass", "lse must have shape [3, 70], got [3, 71]")
    spec_error(function() adaspa.attention_with_mass(q, k, v, randn({70, 3})) end, "adaspa.attention_with_mass", "lse_cached must have shape [3, 70], got [70, 3]")
  end)

  it("reject a layout made for another shape or head count, or not a layout", function()
    spec_error(function() adaspa.sparse_attention(q, k, v, {}) end, "adaspa.sparse_attention", "layout must be a layout, got table")
    spec_error(function() adaspa.sparse_attention(q, k, v, adaspa.layout.full(2, 2, 3, 64)) end,
      "adaspa.sparse_attention", "layout has 2 heads, the attention has 3")
    spec_error(function() adaspa.sparse_attention(q, k, v, adaspa.layout.full(3, 3, 3, 64)) end,
      "adaspa.sparse_attention", "layout has 3 x 3 blocks of 64, attention over 70 queries and 150 keys needs 2 x 3")
    spec_error(function() adaspa.sparse_attention(q, k, v, adaspa.layout.full(3, 2, 2, 64)) end,
      "adaspa.sparse_attention", "layout has 2 x 2 blocks of 64")
    spec_error(function() adaspa.sparse_attention(q, k, v, adaspa.layout.full(3, 2, 3, 128)) end,
      "adaspa.sparse_attention", "layout has 2 x 3 blocks of 128, attention over 70 queries and 150 keys needs 1 x 2")
    local freed = adaspa.layout.full(3, 2, 3, 64)
    freed:free()
    spec_error(function() adaspa.sparse_attention(q, k, v, freed) end, "adaspa.sparse_attention", "layout is layout #", "which was freed")
  end)

  it_gpu("reject tensors on different devices, naming both", function()
    local kg = k:to("cuda")
    spec_error(function() adaspa.attention(q, kg, v) end, "adaspa.attention", "k is on cuda:0 but q is on cpu")
    spec_error(function() adaspa.block_mass(q, k, lse:to("cuda")) end, "adaspa.block_mass", "lse is on cuda:0 but q is on cpu")
  end)
end)
