-- Layout selection on the GPU (kernels/select.cu): adaspa.layout.topk / threshold and
-- layout:recall with a CUDA mass must give exactly the CPU's layouts (same to_mask), for random
-- mass, odd sizes, forced blocks, per-head densities and ties; timings at 720p size.

local rand_mass = spec_rand_mass

local function same_mask(a, b)
  assert.equal(a:heads(), b:heads())
  assert.equal(a:nqb(), b:nqb())
  assert.equal(a:nkb(), b:nkb())
  assert.equal(a:nnz(), b:nnz())
  local ma, mb = a:to_mask():to("f32"), b:to_mask():to("f32")
  local d = adaspa.add(ma, adaspa.scale(mb, -1))
  assert.equal(0, d:max())
  assert.equal(0, d:min())
  d:free(); ma:free(); mb:free()
end

local function gpu(m) return m:to("cuda") end

local forces = {
  false,
  {cols = {{1, 1}}, diagonal = true},
  {cols = {{1, 2}, {4, 6}}, rows = {{2, 3}}, diagonal = true},
  {rows = {{1, 1}}},
}

local function fit_force(f, nqb, nkb)
  if not f then return nil end
  local out = {diagonal = f.diagonal}
  if f.cols then
    out.cols = {}
    for _, c in ipairs(f.cols) do if c[2] <= nkb then out.cols[#out.cols + 1] = c end end
  end
  if f.rows then
    out.rows = {}
    for _, r in ipairs(f.rows) do if r[2] <= nqb then out.rows[#out.rows + 1] = r end end
  end
  return out
end

local sizes = {{5, 1}, {7, 13}, {3, 200}, {4, 1861}, {2, 4096}, {1, 4097}}

describe("layout selection on the GPU", function()
  it_gpu("topk matches the CPU (row-wise and per-head, forced blocks, per-head densities)", function()
    local seed = 100
    for _, H in ipairs({1, 3}) do
      for _, sz in ipairs(sizes) do
        seed = seed + 1
        local nqb, nkb = sz[1], sz[2]
        local mass = rand_mass(H, nqb, nkb, seed)
        local gm = gpu(mass)
        local dens = {}
        for h = 1, H do dens[h] = ({0.1, 0.37, 1, 0})[(h + seed) % 4 + 1] end
        for _, f in ipairs(forces) do
          local force = fit_force(f, nqb, nkb)
          for _, rw in ipairs({true, false}) do
            for _, d in ipairs({0.2, dens}) do
              local o = {density = d, row_wise = rw, force = force}
              same_mask(adaspa.layout.topk(mass, o), adaspa.layout.topk(gm, o))
            end
          end
        end
        gm:free()
      end
    end
  end)

  it_gpu("threshold matches the CPU (recall per head, min and max blocks, forced blocks)", function()
    local seed = 200
    for _, H in ipairs({1, 3}) do
      for _, sz in ipairs(sizes) do
        seed = seed + 1
        local nqb, nkb = sz[1], sz[2]
        local mass = rand_mass(H, nqb, nkb, seed)
        local gm = gpu(mass)
        local rec = {}
        for h = 1, H do rec[h] = ({0.5, 0.9, 1, 0})[(h + seed) % 4 + 1] end
        for _, f in ipairs(forces) do
          local force = fit_force(f, nqb, nkb)
          for _, mm in ipairs({{1, 0}, {0, 0}, {3, 5}, {2, 2}, {nkb + 3, 0}}) do
            for _, r in ipairs({0.8, rec}) do
              local o = {recall = r, min_blocks = mm[1], max_blocks = mm[2], force = force}
              same_mask(adaspa.layout.threshold(mass, o), adaspa.layout.threshold(gm, o))
            end
          end
        end
        gm:free()
      end
    end
  end)

  it_gpu("breaks ties like the CPU (equal masses, zeros and -0)", function()
    local H, nqb, nkb = 3, 6, 77
    local t = {}
    local levels = {0, 0.25, 0.5, -0.0, 0.25}
    for h = 1, H do
      t[h] = {}
      for qb = 1, nqb do
        t[h][qb] = {}
        for kb = 1, nkb do t[h][qb][kb] = levels[(h * 7 + qb * 3 + kb * kb) % #levels + 1] end
      end
    end
    local mass = adaspa.tensor(t)
    local gm = gpu(mass)
    for _, f in ipairs(forces) do
      local force = fit_force(f, nqb, nkb)
      for _, d in ipairs({0.05, 0.3, 0.77}) do
        local o = {density = d, row_wise = true, force = force}
        same_mask(adaspa.layout.topk(mass, o), adaspa.layout.topk(gm, o))
        o.row_wise = false
        same_mask(adaspa.layout.topk(mass, o), adaspa.layout.topk(gm, o))
        local th = {recall = d, min_blocks = 2, max_blocks = 40, force = force}
        same_mask(adaspa.layout.threshold(mass, th), adaspa.layout.threshold(gm, th))
      end
    end
  end)

  it_gpu("takes bf16 and strided GPU mass, computes recall on the device, rejects bad mass", function()
    local mass = rand_mass(2, 9, 31, 7)
    local ref = adaspa.layout.topk(mass:to("bf16"):to("f32"), {density = 0.3})
    same_mask(ref, adaspa.layout.topk(mass:to("cuda", "bf16"), {density = 0.3}))
    local wide = gpu(rand_mass(2, 9, 40, 8))
    local view = wide:narrow(3, 5, 31)
    same_mask(adaspa.layout.topk(view:to("cpu"), {density = 0.3}), adaspa.layout.topk(view, {density = 0.3}))
    local l = adaspa.layout.threshold(mass, {recall = 0.7})
    local rc, rg = l:recall(mass), l:recall(gpu(mass))
    local lg = adaspa.layout.threshold(gpu(mass), {recall = 0.7})
    local rg2 = lg:recall(gpu(mass))
    for h = 1, 2 do
      assert.is_true(math.abs(rc[h] - rg[h]) < 1e-12)
      assert.is_true(math.abs(rc[h] - rg2[h]) < 1e-12)
      assert.is_true(rc[h] >= 0.7)
    end
    -- the GPU layout runs sparse attention (its device mirror is filled)
    local q = adaspa.randn({9 * 64, 2, 64}, {seed = 3, dtype = "bf16", device = "cuda"})
    local k = adaspa.randn({31 * 64, 2, 64}, {seed = 4, dtype = "bf16", device = "cuda"})
    local v = adaspa.randn({31 * 64, 2, 64}, {seed = 5, dtype = "bf16", device = "cuda"})
    local o1 = adaspa.sparse_attention(q, k, v, lg)
    local o2 = adaspa.sparse_attention(q, k, v, l)
    local d = adaspa.add(o1:to("f32"), adaspa.scale(o2:to("f32"), -1))
    assert.equal(0, d:norm())
    local t = mass:totable()
    t[2][3][4] = 0 / 0
    local ok, err = pcall(adaspa.layout.topk, gpu(adaspa.tensor(t)), {density = 0.3})
    assert.is_false(ok)
    assert.matches("mass must be finite and >= 0, got .* at head 2, query block 3, key block 4", err)
    t[2][3][4] = -1
    ok, err = pcall(adaspa.layout.threshold, gpu(adaspa.tensor(t)), {recall = 0.3})
    assert.is_false(ok)
    assert.matches("mass must be finite and >= 0, got %-1 at head 2", err)
    ok, err = pcall(adaspa.layout.topk, gpu(mass), {density = 1.5})
    assert.is_false(ok)
    assert.matches("outside", err)
  end)

  it_gpu("selects at full size (24 heads x 1861 x 1861) exactly as the CPU", function()
    local H, n = 24, 1861
    local x = adaspa.randn({H, n, n}, {seed = 11, device = "cuda"})
    local gm = adaspa.mul(x, x)
    x:free()
    local force = {cols = {{1, 4}}, rows = {{1, 4}}, diagonal = true}
    local o = {density = 0.1, row_wise = true, force = force}
    local th = {recall = 0.9, min_blocks = 20, max_blocks = 600, force = force}
    local cm = gm:to("cpu")
    same_mask(adaspa.layout.topk(cm, o), adaspa.layout.topk(gm, o))
    same_mask(adaspa.layout.threshold(cm, th), adaspa.layout.threshold(gm, th))
    gm:free()
  end)
end)
