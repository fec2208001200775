-- The Hopper attention family (kernels/attention_sm90.cu) against the CPU reference, through the
-- attention plan: every variant (st2, st2pp, st3, st3pp) on dense attention, sparse attention over
-- blocks of 64 and 128 (empty and full rows, per-head densities 10x apart) and attention fused with
-- the block mass (mass blocks 64 and 128); odd token counts, kv_valid inside a block, q/k/v as
-- strided views of one [S, 3, H, D] tensor, bf16/f32/f16 outputs; outputs poisoned with NaN.
-- Tolerances (relative L2) as spec/cuda_attention_spec.lua: out 1e-2, lse and mass 1e-3.
-- Skipped without a GPU; the family checks are skipped on GPUs that are not Hopper (9.x).

local NaN = 0 / 0
local flat, rel_l2 = spec_flat, spec_rel_l2

local function close(got, ref, tol, what)
  local e = rel_l2(flat(got), flat(ref))
  assert(e < tol, string.format("%s: relative L2 error %.3g exceeds %.3g", what, e, tol))
end

local seed = 9100
local function qkv(S, H, D)
  seed = seed + 1
  local t = adaspa.randn({S, 3, H, D}, {seed = seed, dtype = "bf16"})
  local function part(i) return t:narrow(2, i, 1):reshape({S, H, D}) end
  return part(1), part(2), part(3)
end
local function gpu(...)
  local r = {}
  for i, t in ipairs({...}) do r[i] = t:to("cuda") end
  return unpack(r)
end
local function poisoned(shape, dtype) return adaspa.full(shape, NaN, {device = "cuda", dtype = dtype or "f32"}) end

local function hopper()
  if not adaspa.cuda.available() then return false end
  local q = adaspa.empty({128, 1, 128}, {dtype = "bf16", device = "cuda"})
  local ok = adaspa.attention_plan(q, q).family == "sm90"
  q:free()
  return ok
end

-- u8 mask [H, nqb, nkb]: head h keeps a fraction 0.05 * 2^(h-1) (10x apart over 4+ heads) of each
-- row, plus the diagonal; head 1 row 2 empty, head 2 row 1 full.
local function mask(H, nqb, nkb, s)
  local x, t = s, {}
  for h = 1, H do
    t[h] = {}
    local frac = math.min(1, 0.05 * 2 ^ (h - 1))
    for qb = 1, nqb do
      t[h][qb] = {}
      for kb = 1, nkb do
        x = (x * 1103515245 + 12345) % 2147483648
        local on = (x % 10000) < frac * 10000 or kb == qb
        if h == 1 and qb == 2 then on = false end
        if h == 2 and qb == 1 then on = true end
        t[h][qb][kb] = on and 1 or 0
      end
    end
  end
  return adaspa.tensor(t, {dtype = "u8"})
end

local variants = {"st2", "st2pp", "st3", "st3pp"}

describe("cuda attention, Hopper family (sm90)", function()
  it_gpu("the plan picks sm90 for head dim 128 on Hopper and the sm80 family for what sm90 does not take", function()
    if not hopper() then return pending("not a Hopper GPU") end
    local q = adaspa.empty({300, 2, 128}, {dtype = "bf16", device = "cuda"})
    local p = adaspa.attention_plan(q, q)
    assert.equal("sm90", p.family)
    local big = adaspa.empty({70000, 1, 128}, {dtype = "bf16", device = "cuda"})
    local pb = adaspa.attention_plan(big, big)
    assert.equal("st3", pb.variant) -- dense: st3 with L2 priorities at every size
    assert.equal("persistent, L2 priorities", pb.schedule)
    assert.equal("st3", adaspa.attention_plan(big, big, {mode = "fused", block = 128}).variant) -- st3 since uniform descriptors
    -- block 64: the head-major walk, or with variant "tail" the layout mirror's tail walk
    local l64 = adaspa.layout.full(2, 5, 5)
    -- the default: one pass with the sweep (ADA_SM90_SWEEP=0: without)
    local default64 = os.getenv("ADA_SM90_SWEEP") == "0" and {"st3", "persistent, head-major"}
      or {"sweep", "persistent, head-major, swept start"}
    local p64 = adaspa.attention_plan(q, q, {mode = "sparse", layout = l64})
    assert.same(default64, {p64.variant, p64.schedule})
    local pt = adaspa.attention_plan(q, q, {mode = "sparse", layout = l64, variant = "tail"})
    assert.same({"sm90", "tail", "persistent, tail walk"}, {pt.family, pt.variant, pt.schedule})
    spec_error(function() adaspa.attention_plan(q, q, {variant = "tail"}) end, "variant tail is unknown")
    -- block 64 in passes over the key blocks: asked for ("one": one plain pass, "split2".."split4");
    -- one pass with the sweep by default, at every size
    local p1 = adaspa.attention_plan(q, q, {mode = "sparse", layout = l64, variant = "one"})
    assert.same({"st3", "persistent, head-major"}, {p1.variant, p1.schedule})
    local p2 = adaspa.attention_plan(q, q, {mode = "sparse", layout = l64, variant = "split2"})
    assert.same({"split2", "persistent, head-major, 2 key passes"}, {p2.variant, p2.schedule})
    assert.equal("split3", adaspa.attention_plan(q, q, {mode = "sparse", layout = l64, variant = "split3"}).variant)
    spec_error(function() adaspa.attention_plan(q, q, {variant = "split2"}) end, "variant split2 is unknown")
    -- one pass with the sweep (each row's walk starts where a global sweep has reached)
    local ps = adaspa.attention_plan(q, q, {mode = "sparse", layout = l64, variant = "sweep"})
    assert.same({"sweep", "persistent, head-major, swept start"}, {ps.variant, ps.schedule})
    spec_error(function() adaspa.attention_plan(q, q, {variant = "sweep"}) end, "variant sweep is unknown")
    -- blocks of 128: longest first over all rows, or head-major ("head")
    local l128 = adaspa.layout.full(2, 3, 3, 128)
    if not os.getenv("ADA_SM90_HEAD") then
      assert.same({"st3", "persistent, longest-first"}, {adaspa.attention_plan(q, q, {mode = "sparse", layout = l128}).variant,
        adaspa.attention_plan(q, q, {mode = "sparse", layout = l128}).schedule})
    end
    local ph = adaspa.attention_plan(q, q, {mode = "sparse", layout = l128, variant = "head"})
    assert.same({"head", "persistent, head-major, longest first"}, {ph.variant, ph.schedule})
    spec_error(function() adaspa.attention_plan(q, q, {mode = "sparse", layout = l64, variant = "head"}) end, "variant head is unknown")
    l128:free()
    l64:free()
    local nb = math.ceil(70000 / 64)
    local lbig = adaspa.layout.full(1, nb, nb)
    local pbig = adaspa.attention_plan(big, big, {mode = "sparse", layout = lbig})
    if not os.getenv("ADA_SM90_PASSES") then assert.same(default64, {pbig.variant, pbig.schedule}) end
    assert.equal("split4", adaspa.attention_plan(big, big, {mode = "sparse", layout = lbig, variant = "split4"}).variant)
    lbig:free()
    assert.equal("st3", p.variant)
    assert.equal(128, p.tile_rows)
    local q64 = adaspa.empty({300, 2, 64}, {dtype = "bf16", device = "cuda"})
    assert.equal("sm80", adaspa.attention_plan(q64, q64).family)
    assert.equal("sm80", adaspa.attention_plan(q, q, {mode = "mass"}).family)
    assert.equal("sm80", adaspa.attention_plan(q, q, {scale = -0.1}).family)
    assert.has_error(function() adaspa.attention_plan(q, q, {family = "sm90", variant = "nope"}) end)
  end)

  it_gpu("dense: every variant matches the CPU (odd sizes, kv_valid, strided views, out dtypes)", function()
    if not hopper() then return pending("not a Hopper GPU") end
    for _, c in ipairs({{37, 1, nil}, {1000, 3, nil}, {777, 2, 700}, {1500, 4, 1431}, {1500, 2, 1409}, {352, 2, nil}}) do
      local S, H, kvv = c[1], c[2], c[3]
      local q, k, v = qkv(S, H, 128)
      local ro, rl = adaspa.attention(q, k, v, {kv_valid = kvv})
      local gq, gk, gv = gpu(q, k, v)
      for _, var in ipairs(variants) do
        for _, dt in ipairs({"bf16", "f32", "f16"}) do
          local o, l = adaspa.attention(gq, gk, gv, {kv_valid = kvv, family = "sm90", variant = var,
            out = poisoned({S, H, 128}, dt), lse_out = poisoned({H, S})})
          local w = string.format("S=%d H=%d kv_valid=%s %s %s", S, H, tostring(kvv), var, dt)
          close(o, ro, 1e-2, w .. " out")
          close(l, rl, 1e-3, w .. " lse")
        end
      end
    end
  end)

  it_gpu("sparse: blocks of 64 and 128, empty and full rows, densities 10x apart, match the CPU", function()
    if not hopper() then return pending("not a Hopper GPU") end
    for _, c in ipairs({{1500, 5, 128, 1431}, {1060, 5, 64, nil}, {4000, 5, 64, nil}, {1500, 3, 64, 1431}, {2000, 4, 128, nil}}) do
      local S, H, B, kvv = c[1], c[2], c[3], c[4]
      local nb = math.ceil(S / B)
      local layout = adaspa.layout.from_mask(mask(H, nb, nb, S), B)
      local q, k, v = qkv(S, H, 128)
      local ro, rl = adaspa.sparse_attention(q, k, v, layout, {kv_valid = kvv})
      local gq, gk, gv = gpu(q, k, v)
      -- block 64: head-major, the tail walk, in 2 to 4 passes over the key blocks (each pass after
      -- the first merging its output with the ones before), and with the sweep (rows started mid-way)
      -- blocks of 128: every tiles variant, and the head-major order ("head")
      local v128 = {unpack(variants)}
      v128[#v128 + 1] = "head"
      for _, var in ipairs(B == 64 and {"st3", "tail", "split2", "split3", "split4", "sweep"} or v128) do
        local o, l = adaspa.sparse_attention(gq, gk, gv, layout, {kv_valid = kvv, family = "sm90", variant = var,
          out = poisoned({S, H, 128}, "bf16"), lse_out = poisoned({H, S})})
        local w = string.format("S=%d H=%d block %d kv_valid=%s %s", S, H, B, tostring(kvv), var)
        close(o, ro, 1e-2, w .. " out")
        -- rows without keys: lse -inf on both sides; compare the finite entries
        local a, b = flat(l), flat(rl)
        for i = 1, #a do if b[i] == -math.huge then assert.equal(-math.huge, a[i]) ; a[i], b[i] = 0, 0 end end
        assert(rel_l2(a, b) < 1e-3, w .. " lse")
      end
      layout:free()
    end
  end)

  it_gpu("fused dense + block mass (blocks 64 and 128) matches the CPU, every variant", function()
    if not hopper() then return pending("not a Hopper GPU") end
    -- kv_valid cases: the launcher zeroes the key blocks past kv_valid, a band of 1 to 5 columns
    for _, c in ipairs({{1000, 3, 64, 950}, {777, 2, 128, nil}, {1300, 2, 64, nil}, {1200, 3, 128, 1100},
                        {1300, 2, 64, 1000}, {1300, 2, 128, 900}}) do
      local S, H, B, kvv = c[1], c[2], c[3], c[4]
      local q, k, v = qkv(S, H, 128)
      local _, l0 = adaspa.attention(q, k, v, {kv_valid = kvv})
      local lse_c = adaspa.add(l0, adaspa.scale(adaspa.randn(l0:shape(), {seed = 5}), 0.3))
      local ro, rl, rm = adaspa.attention_with_mass(q, k, v, lse_c, {block = B, kv_valid = kvv})
      local gq, gk, gv, gl = gpu(q, k, v, lse_c)
      local nb = math.ceil(S / B)
      for _, var in ipairs(variants) do
        local o, l, m = adaspa.attention_with_mass(gq, gk, gv, gl, {block = B, kv_valid = kvv, family = "sm90",
          variant = var, out = poisoned({S, H, 128}, "bf16"), lse_out = poisoned({H, S}),
          mass_out = poisoned({H, nb, nb})})
        local w = string.format("S=%d H=%d mass block %d kv_valid=%s %s", S, H, B, tostring(kvv), var)
        close(o, ro, 1e-2, w .. " out")
        close(l, rl, 1e-3, w .. " lse")
        close(m, rm, 1e-3, w .. " mass")
      end
    end
  end)

  it_gpu("is deterministic: the same bits on repeated runs (dense, fused mass 128)", function()
    if not hopper() then return pending("not a Hopper GPU") end
    local q, k, v = gpu(qkv(1500, 2, 128))
    local function same(a, b, what)
      local x, y = flat(a:to("f32")), flat(b:to("f32"))
      for i = 1, #x do if x[i] ~= y[i] then error(string.format("%s: element %d differs: %.9g vs %.9g", what, i, x[i], y[i])) end end
    end
    same(adaspa.attention(q, k, v, {family = "sm90"}), adaspa.attention(q, k, v, {family = "sm90"}), "dense out")
    local _, l = adaspa.attention(q, k, v)
    local _, _, m1 = adaspa.attention_with_mass(q, k, v, l, {block = 128, family = "sm90"})
    local _, _, m2 = adaspa.attention_with_mass(q, k, v, l, {block = 128, family = "sm90"})
    same(m1, m2, "mass")
  end)
end)
