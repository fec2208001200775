-- Block-sparse layouts: adaspa.layout.full / from_mask / topk / threshold and the Layout
-- userdata, checked against plain Lua selections on random mass; forced blocks; bad input; free.

local rand_mass = spec_rand_mass

-- The layout's kept blocks as sets: kept[h][qb][kb] = true; checks each row is strictly increasing.
local function kept_sets(l)
  local kept = {}
  for h = 1, l:heads() do
    kept[h] = {}
    for qb = 1, l:nqb() do
      local row, set = l:row(h, qb), {}
      for i, kb in ipairs(row) do
        assert(kb >= 1 and kb <= l:nkb(), "key block out of range")
        assert(i == 1 or kb > row[i - 1], "row indices not strictly increasing")
        set[kb] = true
      end
      kept[h][qb] = set
    end
  end
  return kept
end

local function count(set) local n = 0 for _ in pairs(set) do n = n + 1 end return n end

-- Forced set of row qb (1-based, inclusive ranges as in the Lua API).
local function forced_row(force, qb, nkb)
  local set = {}
  if not force then return set end
  for _, r in ipairs(force.rows or {}) do
    if qb >= r[1] and qb <= r[2] then for kb = 1, nkb do set[kb] = true end return set end
  end
  for _, c in ipairs(force.cols or {}) do for kb = c[1], c[2] do set[kb] = true end end
  if force.diagonal and qb <= nkb then set[qb] = true end
  return set
end

-- The entries {mass, index} not in `taken`, best first (more mass, then lower index).
local function ranked(values, taken)
  local r = {}
  for i, v in ipairs(values) do if not taken[i] then r[#r + 1] = {v, i} end end
  table.sort(r, function(a, b) if a[1] ~= b[1] then return a[1] > b[1] end return a[2] < b[2] end)
  return r
end

local function round(x) return math.floor(x + 0.5) end

-- Reference row-wise top-k: forced, then the best blocks up to max(round(d * nkb), forced).
local function ref_topk_rows(m, density, force)
  local nkb, out = #m[1][1], {}
  for h = 1, #m do
    out[h] = {}
    local d = type(density) == "table" and density[h] or density
    for qb = 1, #m[h] do
      local set = forced_row(force, qb, nkb)
      local k = math.max(round(d * nkb), count(set))
      for _, e in ipairs(ranked(m[h][qb], set)) do
        if count(set) >= k then break end
        set[e[2]] = true
      end
      out[h][qb] = set
    end
  end
  return out
end

local function assert_same_sets(got, want)
  for h = 1, #want do
    for qb = 1, #want[h] do
      for kb in pairs(want[h][qb]) do
        assert(got[h][qb][kb], string.format("head %d row %d: block %d missing", h, qb, kb))
      end
      assert.equal(count(want[h][qb]), count(got[h][qb]), string.format("head %d row %d: block count", h, qb))
    end
  end
end

describe("layout construction", function()
  it("full keeps every block", function()
    local l = adaspa.layout.full(3, 5, 7)
    assert.equal(3, l:heads()); assert.equal(5, l:nqb()); assert.equal(7, l:nkb())
    assert.equal(64, l:block()); assert.equal(105, l:nnz())
    assert.same({1, 1, 1}, l:density())
    local m = l:to_mask()
    assert.same({3, 5, 7}, m:shape()); assert.equal("u8", m:dtype())
    assert.equal(105, m:sum()); assert.equal(1, m:min())
    assert.same({1, 2, 3, 4, 5, 6, 7}, l:row(3, 5))
    assert.equal(128, adaspa.layout.full(1, 1, 1, 128):block())
    local s = tostring(l)
    assert.truthy(s:find("heads 3", 1, true) and s:find("5 x 7 blocks of 64", 1, true) and s:find("density 1", 1, true), s)
  end)

  it("from_mask and to_mask round-trip, empty rows included", function()
    for _, sz in ipairs({{3, 4, 6}, {2, 7, 3}, {1, 1, 1}}) do
      local r = adaspa.randn(sz, {seed = sz[1] * 10 + sz[2]}):totable()
      for h = 1, sz[1] do
        for qb = 1, sz[2] do
          for kb = 1, sz[3] do
            r[h][qb][kb] = (r[h][qb][kb] > 0.3 and qb ~= 2) and 1 or 0 -- row 2 empty
          end
        end
      end
      local mask = adaspa.tensor(r, {dtype = "u8"})
      local l = adaspa.layout.from_mask(mask, 128)
      assert.equal(128, l:block())
      assert.same(r, l:to_mask():totable())
      local n = 0
      for h = 1, sz[1] do
        for qb = 1, sz[2] do
          local row, want = l:row(h, qb), {}
          for kb = 1, sz[3] do if r[h][qb][kb] == 1 then want[#want + 1] = kb end end
          assert.same(want, row)
          n = n + #row
        end
      end
      assert.equal(n, l:nnz())
      assert.equal(n, mask:sum())
    end
    local empty = adaspa.layout.from_mask(adaspa.zeros({1, 1, 1}, {dtype = "u8"}))
    assert.equal(0, empty:nnz()); assert.same({0}, empty:density()); assert.same({}, empty:row(1, 1))
  end)

  it("from_mask reads strided views", function()
    local base = adaspa.randn({2, 5, 4}, {seed = 7}):totable()
    for _, head in ipairs(base) do for _, row in ipairs(head) do for j = 1, #row do row[j] = row[j] > 0 and 1 or 0 end end end
    local t = adaspa.tensor(base, {dtype = "u8"}):transpose(2, 3) -- [2, 4, 5], not contiguous
    assert.is_false(t:is_contiguous())
    assert.same(t:totable(), adaspa.layout.from_mask(t):to_mask():totable())
  end)
end)

describe("layout.topk", function()
  it("row_wise keeps the highest-mass blocks, equal counts per row", function()
    local mass, m = rand_mass(2, 6, 13, 11)
    for _, d in ipairs({0.3, 0.5, 0.04}) do
      local l = adaspa.layout.topk(mass, {density = d})
      local got = kept_sets(l)
      assert_same_sets(got, ref_topk_rows(m, d))
      for h = 1, 2 do for qb = 1, 6 do assert.equal(round(d * 13), count(got[h][qb])) end end
      for _, x in ipairs(l:density()) do assert.equal(round(d * 13) / 13, x) end
    end
  end)

  it("matches the reference on long rows (partial selection paths)", function()
    local mass, m = rand_mass(2, 5, 157, 18)
    local force = {cols = {{1, 3}, {100, 120}}, diagonal = true}
    for _, d in ipairs({0.05, 0.3, 0.77}) do
      assert_same_sets(kept_sets(adaspa.layout.topk(mass, {density = d})), ref_topk_rows(m, d))
      assert_same_sets(kept_sets(adaspa.layout.topk(mass, {density = d, force = force})), ref_topk_rows(m, d, force))
    end
    local flat = {}
    for qb = 1, 5 do for kb = 1, 157 do flat[(qb - 1) * 157 + kb] = m[2][qb][kb] end end
    local got = kept_sets(adaspa.layout.topk(mass, {density = {0.1, 0.21}, row_wise = false}))
    local best = ranked(flat, {})
    local n = 0
    for qb = 1, 5 do n = n + count(got[2][qb]) end
    assert.equal(round(0.21 * 5 * 157), n)
    for i = 1, n do
      local e = best[i][2]
      assert.is_true(got[2][math.floor((e - 1) / 157) + 1][(e - 1) % 157 + 1])
    end
  end)

  it("keeps forced columns, rows and the diagonal", function()
    local mass, m = rand_mass(2, 9, 11, 12)
    local force = {cols = {{1, 2}, {10, 10}}, rows = {{4, 5}}, diagonal = true}
    local l = adaspa.layout.topk(mass, {density = 0.45, force = force})
    local got = kept_sets(l)
    assert_same_sets(got, ref_topk_rows(m, 0.45, force))
    for h = 1, 2 do
      for qb = 1, 9 do
        for kb in pairs(forced_row(force, qb, 11)) do assert.is_true(got[h][qb][kb]) end
        if qb == 4 or qb == 5 then assert.equal(11, count(got[h][qb]))
        else assert.equal(round(0.45 * 11), count(got[h][qb])) end -- forced (3 or 4) <= k = 5
      end
    end
    -- more forced than k: the forced blocks only
    local few = kept_sets(adaspa.layout.topk(mass, {density = 0.1, force = {cols = {{3, 6}}}}))
    for h = 1, 2 do for qb = 1, 9 do assert.same({[3] = true, [4] = true, [5] = true, [6] = true}, few[h][qb]) end end
  end)

  it("takes a density per head; density 0 keeps only forced blocks, density 1 everything", function()
    local mass, m = rand_mass(3, 4, 9, 13)
    local dens = {0.2, 0.7, 1}
    assert_same_sets(kept_sets(adaspa.layout.topk(mass, {density = dens})), ref_topk_rows(m, dens))
    assert.same({36 / 36, 36 / 36, 36 / 36}, adaspa.layout.topk(mass, {density = 1}):density())
    assert.equal(0, adaspa.layout.topk(mass, {density = 0}):nnz())
    local force = {cols = {{2, 2}}, diagonal = true}
    local z = kept_sets(adaspa.layout.topk(mass, {density = 0, force = force}))
    for h = 1, 3 do for qb = 1, 4 do assert.same(forced_row(force, qb, 9), z[h][qb]) end end
  end)

  it("breaks ties toward the lower block index", function()
    local l = adaspa.layout.topk(adaspa.full({1, 2, 10}, 0.1), {density = 0.3})
    assert.same({1, 2, 3}, l:row(1, 1)); assert.same({1, 2, 3}, l:row(1, 2))
    local z = adaspa.layout.topk(adaspa.zeros({1, 1, 5}), {density = 0.4, force = {cols = {{2, 2}}}})
    assert.same({1, 2}, z:row(1, 1))
  end)

  it("per head (row_wise = false) keeps the head's best blocks", function()
    local mass, m = rand_mass(2, 5, 7, 14)
    local force = {cols = {{7, 7}}, rows = {{2, 2}}}
    for _, d in ipairs({0.3, 0.6}) do
      local got = kept_sets(adaspa.layout.topk(mass, {density = d, row_wise = false, force = force}))
      for h = 1, 2 do
        local flat, taken, nf = {}, {}, 0
        for qb = 1, 5 do
          local f = forced_row(force, qb, 7)
          for kb = 1, 7 do
            flat[(qb - 1) * 7 + kb] = m[h][qb][kb]
            if f[kb] then taken[(qb - 1) * 7 + kb] = true; nf = nf + 1 end
          end
        end
        local k = math.max(round(d * 35), nf)
        for _, e in ipairs(ranked(flat, taken)) do
          if nf >= k then break end
          taken[e[2]] = true; nf = nf + 1
        end
        local n = 0
        for i in pairs(taken) do
          assert.is_true(got[h][math.floor((i - 1) / 7) + 1][(i - 1) % 7 + 1])
          n = n + 1
        end
        local total = 0
        for qb = 1, 5 do total = total + count(got[h][qb]) end
        assert.equal(n, total)
      end
    end
  end)

  it("stages bf16 and strided mass, and is independent of the thread count", function()
    local mass = rand_mass(2, 7, 19, 15)
    local ref = adaspa.layout.topk(mass:to("bf16"):to("f32"), {density = 0.3}):to_mask():totable()
    assert.same(ref, adaspa.layout.topk(mass:to("bf16"), {density = 0.3}):to_mask():totable())
    local wide = rand_mass(2, 7, 25, 16)
    local view = wide:narrow(3, 4, 19)
    assert.same(adaspa.layout.topk(view:contiguous(), {density = 0.3}):to_mask():totable(),
                adaspa.layout.topk(view, {density = 0.3}):to_mask():totable())
    local big = rand_mass(3, 40, 37, 17)
    local opts = {density = 0.25, force = {cols = {{1, 1}}, diagonal = true}}
    local n0 = adaspa.threads()
    adaspa.threads(1)
    local one = adaspa.layout.topk(big, opts):to_mask():totable()
    local one_t = adaspa.layout.threshold(big, {recall = 0.7}):to_mask():totable()
    adaspa.threads(3)
    local three = adaspa.layout.topk(big, opts):to_mask():totable()
    local three_t = adaspa.layout.threshold(big, {recall = 0.7}):to_mask():totable()
    adaspa.threads(n0)
    assert.same(one, three); assert.same(one_t, three_t)
  end)
end)

-- Row mass kept and total in double.
local function row_mass(values, set)
  local kept, total = 0, 0
  for kb, v in ipairs(values) do
    total = total + v
    if set[kb] then kept = kept + v end
  end
  return kept, total
end

describe("layout.threshold", function()
  it("reaches the recall per row and head, minimally, with the best blocks", function()
    local mass, m = rand_mass(2, 8, 97, 21)
    local force = {cols = {{1, 1}}, diagonal = true}
    for _, target in ipairs({0.5, 0.9, {0.3, 0.95}}) do
      local l = adaspa.layout.threshold(mass, {recall = target, min_blocks = 0, force = force})
      local got, rec = kept_sets(l), l:recall(mass)
      for h = 1, 2 do
        local t = type(target) == "table" and target[h] or target
        assert(rec[h] >= t, string.format("head %d recall %.6f below %.6f", h, rec[h], t))
        for qb = 1, 8 do
          local set, f = got[h][qb], forced_row(force, qb, 97)
          for kb in pairs(f) do assert.is_true(set[kb]) end
          local kept, total = row_mass(m[h][qb], set)
          assert(kept >= t * total, "row below its target")
          -- smallest kept non-forced block; every dropped block has no more mass than it
          local low = math.huge
          for kb in pairs(set) do if not f[kb] then low = math.min(low, m[h][qb][kb]) end end
          for kb = 1, 97 do if not set[kb] then assert(m[h][qb][kb] <= low, "dropped a better block") end end
          if low < math.huge then assert(kept - low < t * total, "not minimal") end
        end
      end
    end
  end)

  it("honors min_blocks and max_blocks, forced blocks beyond max", function()
    local mass, m = rand_mass(2, 5, 12, 22)
    local l = adaspa.layout.threshold(mass, {recall = 0, min_blocks = 3})
    assert_same_sets(kept_sets(l), ref_topk_rows(m, 3 / 12))
    local r1 = adaspa.layout.threshold(mass, {recall = 0})
    for h = 1, 2 do for qb = 1, 5 do assert.equal(1, #r1:row(h, qb)) end end -- min_blocks defaults to 1
    local c = adaspa.layout.threshold(mass, {recall = 1, max_blocks = 4})
    assert_same_sets(kept_sets(c), ref_topk_rows(m, 4 / 12))
    local two = {cols = {{11, 12}}}
    assert_same_sets(kept_sets(adaspa.layout.threshold(mass, {recall = 1, max_blocks = 4, force = two})),
                     ref_topk_rows(m, 4 / 12, two))
    -- against a plain reference: forced, then by mass to the target, then min / max
    for _, o in ipairs({{recall = 0.6, min_blocks = 3, max_blocks = 5, force = two}, {recall = 0.8, min_blocks = 0},
                        {recall = 0.3, min_blocks = 4, force = {rows = {{2, 2}}, diagonal = true}},
                        {recall = 0.05, min_blocks = 40}}) do
      for _, nkb in ipairs({12, 61}) do
        local mass2, m2 = rand_mass(2, 5, nkb, 23 + nkb)
        local got = kept_sets(adaspa.layout.threshold(mass2, o))
        for h = 1, 2 do
          for qb = 1, 5 do
            local set = forced_row(o.force, qb, nkb)
            local nf = count(set)
            local kept, total = row_mass(m2[h][qb], set)
            local order, want = ranked(m2[h][qb], set), 0
            while kept < o.recall * total and want < #order do want = want + 1; kept = kept + order[want][1] end
            want = math.min(math.max(want, o.min_blocks - nf), #order)
            if o.max_blocks then want = math.min(want, math.max(o.max_blocks - nf, 0)) end
            for i = 1, want do set[order[i][2]] = true end
            assert.same(set, got[h][qb])
          end
        end
      end
    end
    local force = {cols = {{1, 6}}}
    local f = adaspa.layout.threshold(mass, {recall = 1, max_blocks = 4, force = force})
    assert_same_sets(kept_sets(f), ref_topk_rows(m, 0, force))
    local all = adaspa.layout.threshold(mass, {recall = 0, min_blocks = 50})
    assert.equal(2 * 5 * 12, all:nnz())
    assert.same({1, 1}, adaspa.layout.threshold(mass, {recall = 1}):recall(mass))
  end)
end)

describe("layout recall", function()
  it("is 1 for the full layout and kept / total otherwise", function()
    local mass, m = rand_mass(3, 4, 5, 31)
    assert.same({1, 1, 1}, adaspa.layout.full(3, 4, 5):recall(mass))
    assert.same({1, 1, 1}, adaspa.layout.full(3, 4, 5):recall(adaspa.zeros({3, 4, 5})))
    local l = adaspa.layout.topk(mass, {density = 0.4, force = {diagonal = true}})
    local got, rec = kept_sets(l), l:recall(mass)
    for h = 1, 3 do
      local kept, total = 0, 0
      for qb = 1, 4 do
        local k, t = row_mass(m[h][qb], got[h][qb])
        kept, total = kept + k, total + t
      end
      assert(math.abs(rec[h] - kept / total) < 1e-12, "recall differs from the reference")
    end
  end)
end)

describe("layout errors", function()
  local mass = rand_mass(3, 4, 5, 41)

  it("names the function and the argument", function()
    spec_error(function() adaspa.layout.full(0, 2, 2) end, "adaspa.layout.full", "H must be an integer")
    spec_error(function() adaspa.layout.full(2, 2.5, 2) end, "adaspa.layout.full", "nqb")
    spec_error(function() adaspa.layout.full(2, 2, "x") end, "adaspa.layout.full", "nkb")
    spec_error(function() adaspa.layout.full(2, 2, 2, 32) end, "adaspa.layout.full", "block must be 64 or 128, got 32")
    spec_error(function() adaspa.layout.from_mask(adaspa.zeros({2, 2})) end, "adaspa.layout.from_mask",
               "mask must be a u8 tensor [H, nqb, nkb], got f32 [2, 2]")
    spec_error(function() adaspa.layout.from_mask({}) end, "adaspa.layout.from_mask", "mask must be a tensor")
    spec_error(function() adaspa.layout.from_mask(adaspa.zeros({1, 1, 1}, {dtype = "u8"}), 100) end,
               "adaspa.layout.from_mask", "block must be 64 or 128, got 100")
  end)

  it("checks every selection option", function()
    local topk, thr = adaspa.layout.topk, adaspa.layout.threshold
    spec_error(function() topk(adaspa.zeros({3, 4}), {density = 0.5}) end, "adaspa.layout.topk",
               "mass must have shape [H, nqb, nkb], got [3, 4]")
    spec_error(function() topk(mass) end, "adaspa.layout.topk", "options must be a table")
    spec_error(function() topk(mass, {}) end, "adaspa.layout.topk", "option density is required")
    spec_error(function() topk(mass, {density = 0.5, dens = 1}) end, "adaspa.layout.topk", "unknown option 'dens'")
    spec_error(function() topk(mass, {density = 1.5}) end, "adaspa.layout.topk", "density = 1.5 is outside [0, 1]")
    spec_error(function() topk(mass, {density = 0 / 0}) end, "adaspa.layout.topk", "density = ", "is outside [0, 1]")
    spec_error(function() topk(mass, {density = {0.1, 0.2, 1.5}}) end, "adaspa.layout.topk", "density[3] = 1.5 is outside [0, 1]")
    spec_error(function() topk(mass, {density = {0.1, 0.2}}) end, "adaspa.layout.topk", "density must have 3 entries (one per head), got 2")
    spec_error(function() topk(mass, {density = {0.1, "a", 0.2}}) end, "adaspa.layout.topk", "density[2] must be a number")
    spec_error(function() topk(mass, {density = "half"}) end, "adaspa.layout.topk", "density must be a number in [0, 1]")
    spec_error(function() topk(mass, {density = 0.5, row_wise = 1}) end, "adaspa.layout.topk", "row_wise must be a boolean")
    spec_error(function() topk(mass, {density = 0.5, block = 96}) end, "adaspa.layout.topk", "option block must be 64 or 128, got 96")
    spec_error(function() topk(mass, {density = 0.5, force = {cols = {{0, 2}}}}) end, "adaspa.layout.topk",
               "force.cols[1] = {0, 2} is not a range within [1, 5]")
    spec_error(function() topk(mass, {density = 0.5, force = {cols = {{1, 2}, {2, 6}}}}) end, "adaspa.layout.topk",
               "force.cols[2] = {2, 6} is not a range within [1, 5]")
    spec_error(function() topk(mass, {density = 0.5, force = {cols = {{3, 2}}}}) end, "adaspa.layout.topk", "force.cols[1] = {3, 2}")
    spec_error(function() topk(mass, {density = 0.5, force = {rows = {{1, 5}}}}) end, "adaspa.layout.topk",
               "force.rows[1] = {1, 5} is not a range within [1, 4]")
    spec_error(function() topk(mass, {density = 0.5, force = {rows = {3}}}) end, "adaspa.layout.topk",
               "force.rows[1] must be {first, last} (two integers), got number")
    spec_error(function() topk(mass, {density = 0.5, force = {cols = 3}}) end, "adaspa.layout.topk", "force.cols must be a list")
    spec_error(function() topk(mass, {density = 0.5, force = {diagonal = 1}}) end, "adaspa.layout.topk", "force.diagonal must be a boolean")
    spec_error(function() topk(mass, {density = 0.5, force = {diag = true}}) end, "adaspa.layout.topk", "force", "unknown option 'diag'")
    spec_error(function() topk(mass:to("i32"), {density = 0.5}) end, "adaspa.layout.topk", "mass must be f32, bf16 or f16")
    local bad = mass:clone(); bad:set(0 / 0, 2, 3, 4)
    spec_error(function() topk(bad, {density = 0.5}) end, "adaspa.layout.topk", "mass must be finite",
               "head 2, query block 3, key block 4")
    bad = mass:clone(); bad:set(-1, 1, 1, 2)
    spec_error(function() thr(bad, {recall = 0.5}) end, "adaspa.layout.threshold", "mass must be finite and >= 0, got -1")
    bad = mass:clone(); bad:set(1 / 0, 3, 4, 5)
    spec_error(function() thr(bad, {recall = 0.5}) end, "adaspa.layout.threshold", "got inf", "head 3, query block 4, key block 5")
    spec_error(function() thr(mass, {density = 0.5}) end, "adaspa.layout.threshold", "unknown option 'density'")
    spec_error(function() thr(mass, {min_blocks = 1}) end, "adaspa.layout.threshold", "option recall is required")
    spec_error(function() thr(mass, {recall = -0.1}) end, "adaspa.layout.threshold", "recall = -0.1 is outside [0, 1]")
    spec_error(function() thr(mass, {recall = {1, 1, 2}}) end, "adaspa.layout.threshold", "recall[3] = 2 is outside [0, 1]")
    spec_error(function() thr(mass, {recall = 0.5, min_blocks = -1}) end, "adaspa.layout.threshold", "min_blocks must be an integer")
    spec_error(function() thr(mass, {recall = 0.5, max_blocks = 1.5}) end, "adaspa.layout.threshold", "max_blocks must be an integer")
    spec_error(function() thr(mass, {recall = 0.5, min_blocks = 3, max_blocks = 2}) end, "adaspa.layout.threshold",
               "max_blocks = 2 is below min_blocks = 3")
    spec_error(function() thr(mass, {recall = 0.5, force = {cols = {{1, 9}}}}) end, "adaspa.layout.threshold", "force.cols[1]")
  end)

  it("checks the methods' arguments", function()
    local l = adaspa.layout.full(3, 4, 5)
    spec_error(function() l:recall(adaspa.zeros({3, 4, 6})) end, "layout:recall", "mass must have shape [3, 4, 5], got [3, 4, 6]")
    spec_error(function() l:recall(nil) end, "layout:recall", "mass must be a tensor")
    spec_error(function() l:row(4, 1) end, "layout:row", "h must be an integer in [1, 3], got 4")
    spec_error(function() l:row(1, 0) end, "layout:row", "qb must be an integer in [1, 4], got 0")
    spec_error(function() l.nnz(mass) end, "layout:nnz", "self must be a layout, got tensor")
  end)

  it("must fit the attention it is used with", function()
    local q, k = adaspa.randn({100, 2, 16}, {seed = 1}), adaspa.randn({70, 2, 16}, {seed = 2})
    local out = adaspa.sparse_attention(q, k, k, adaspa.layout.full(2, 2, 2))
    assert.same({100, 2, 16}, out:shape())
    spec_error(function() adaspa.sparse_attention(q, k, k, adaspa.layout.full(3, 2, 2)) end, "adaspa.sparse_attention",
               "layout has 3 heads, the attention has 2")
    spec_error(function() adaspa.sparse_attention(q, k, k, adaspa.layout.full(2, 2, 3)) end, "adaspa.sparse_attention",
               "layout has 2 x 3 blocks of 64, attention over 100 queries and 70 keys needs 2 x 2")
    spec_error(function() adaspa.sparse_attention(q, k, k, adaspa.layout.full(2, 2, 2, 128)) end,
               "adaspa.sparse_attention", "needs 1 x 1")
  end)

  it("refuses use after free", function()
    local l = adaspa.layout.full(2, 3, 4)
    l:free()
    l:free() -- twice is fine
    for _, f in ipairs({"heads", "nnz", "density", "to_mask"}) do
      spec_error(function() l[f](l) end, "layout:" .. f, "is layout #", "heads 2, 3 x 4 blocks of 64", "which was freed")
    end
    assert.truthy(tostring(l):find("freed", 1, true))
  end)
end)

-- layout:walk64: the order in which the sm90 block-64 kernel's persistent CTAs take the items
-- (runtime/walk.h), against a plain Lua transcription of its rule: base order head-major with
-- head h's pairs rotated by 37 (h - 1); an item of cost c (its longer row + 2) moves up to the
-- last place whose work left (its own included, in base order) is at least c * ctas; stable.
local function ref_walk64(l, ctas)
  local H, nqb = l:heads(), l:nqb()
  local nqt = math.floor((nqb + 1) / 2)
  local function cost(item) -- 1-based item
    local h, p = math.floor((item - 1) / nqt) + 1, (item - 1) % nqt + 1
    local a = #l:row(h, 2 * p - 1)
    local b = 2 * p <= nqb and #l:row(h, 2 * p) or 0
    return math.max(a, b) + 2
  end
  local base, costs = {}, {}
  for h = 1, H do
    for k = 0, nqt - 1 do
      base[#base + 1] = (h - 1) * nqt + (k + 37 * (h - 1)) % nqt + 1
      costs[#base] = cost(base[#base])
    end
  end
  local n, suf = #base, {}
  suf[n + 1] = 0
  for w = n, 1, -1 do suf[w] = suf[w + 1] + costs[w] end
  local keyed = {}
  for w = 1, n do
    local need, to = costs[w] * ctas, 1
    for v = w, 1, -1 do -- the last place v <= w with enough work left
      if suf[v] >= need then to = v break end
    end
    keyed[w] = {to, w}
  end
  table.sort(keyed, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  local walk = {}
  for i, kw in ipairs(keyed) do walk[i] = base[kw[2]] end
  return walk, base, costs
end

-- the makespan of items taken in order by ctas workers, each the next free one (as the kernel's
-- work counter hands them out), over the ideal total / ctas
local function makespan(order, cost_of, ctas)
  local free, total = {}, 0
  for i = 1, ctas do free[i] = 0 end
  for _, item in ipairs(order) do
    local m = 1
    for i = 2, ctas do if free[i] < free[m] then m = i end end
    free[m] = free[m] + cost_of[item]
    total = total + cost_of[item]
  end
  local last = 0
  for i = 1, ctas do last = math.max(last, free[i]) end
  return last / (total / ctas)
end

describe("layout:walk64", function()
  it("is a permutation of the items and follows the rule on random layouts, odd block counts included", function()
    for _, c in ipairs({{3, 13, 13, 0.3, 4}, {2, 9, 11, 0.5, 7}, {4, 20, 20, 0.15, 3}, {1, 1, 3, 0.5, 2}, {2, 6, 6, 0.4, 132}}) do
      local H, nqb, nkb, d, ctas = c[1], c[2], c[3], c[4], c[5]
      -- text-like rows: the last query block of each head keeps every key block
      local l = adaspa.layout.topk(rand_mass(H, nqb, nkb, 40 + nqb), {density = d, row_wise = true,
                                   force = {rows = {{nqb, nqb}}}})
      local got = l:walk64(ctas)
      local nqt = math.floor((nqb + 1) / 2)
      assert.equal(H * nqt, #got)
      local seen = {}
      for _, item in ipairs(got) do
        assert.is_true(item >= 1 and item <= H * nqt and not seen[item], "item " .. item)
        seen[item] = true
      end
      assert.same((ref_walk64(l, ctas)), got)
    end
  end)

  it("keeps the head-major rotated order when every item costs the same", function()
    local l = adaspa.layout.full(3, 10, 10)
    local walk, base = ref_walk64(l, 4)
    assert.same(base, l:walk64(4))
    assert.same(base, walk)
    assert.same({1, 2, 3, 4, 5, 8, 9, 10, 6, 7}, {base[1], base[2], base[3], base[4], base[5], base[6], base[7], base[8], base[9], base[10]})
  end)

  it("moves the last heads' full text rows up so that they end with the rest", function()
    -- 6 heads of 40 x 40 blocks at density 0.1 whose last 2 query blocks keep every key block, 8 CTAs
    local H, nb, ctas = 6, 40, 8
    local l = adaspa.layout.topk(rand_mass(H, nb, nb, 77), {density = 0.1, row_wise = true, force = {rows = {{nb - 1, nb}}}})
    local walk, base, costs = ref_walk64(l, ctas)
    local cost_of = {}
    for w, item in ipairs(base) do cost_of[item] = costs[w] end
    local before, after = makespan(base, cost_of, ctas), makespan(l:walk64(ctas), cost_of, ctas)
    assert.same(walk, l:walk64(ctas))
    assert.is_true(before > 1.1, "the base order's tail: " .. before) -- the last head's text pair starts late
    assert.is_true(after < before - 0.05 and after < 1.06, string.format("makespan %.3f -> %.3f", before, after))
  end)

  it("refuses layouts of other blocks and bad CTA counts", function()
    spec_error(function() adaspa.layout.full(2, 3, 3, 128):walk64() end, "layout:walk64",
               "has blocks of 128; the walk pairs 64-row blocks")
    spec_error(function() adaspa.layout.full(2, 3, 3):walk64(0) end, "layout:walk64", "ctas must be an integer")
  end)
end)

-- layout:order: the rows in the order the sparse kernels' CTAs take them (runtime/walk.h): longest
-- first over all rows, or head-major (heads by their work, each head's rows longest first)
describe("layout:order", function()
  -- rows of spread lengths: a top-k per head, not per row (a recall target's layouts are so)
  local function spread(H, nqb, nkb, seed, d)
    return adaspa.layout.topk(rand_mass(H, nqb, nkb, seed), {density = d, row_wise = false})
  end
  local function lengths(l)
    local len, nqb = {}, l:nqb()
    for h = 1, l:heads() do for qb = 1, nqb do len[(h - 1) * nqb + qb] = #l:row(h, qb) end end
    return len
  end
  local function is_permutation(order, n)
    assert.equal(n, #order)
    local seen = {}
    for _, r in ipairs(order) do
      assert.is_true(r >= 1 and r <= n and not seen[r], "row " .. r)
      seen[r] = true
    end
  end

  it("longest: every row once, longest first, rows of one length in order", function()
    for _, c in ipairs({{3, 13, 17, 0.3}, {2, 9, 9, 0.5}, {1, 1, 3, 0.5}, {5, 20, 20, 0.15}}) do
      local l = spread(c[1], c[2], c[3], 60 + c[2], c[4])
      local got, len = l:order(), lengths(l)
      is_permutation(got, c[1] * c[2])
      assert.same(got, l:order("longest"))
      for i = 2, #got do
        local a, b = got[i - 1], got[i]
        assert.is_true(len[a] > len[b] or (len[a] == len[b] and a < b), string.format("rows %d, %d", a, b))
      end
      l:free()
    end
  end)

  it("head: head-major, the heads by their work, each head's rows longest first", function()
    for _, c in ipairs({{3, 13, 17, 0.3}, {4, 9, 9, 0.5}, {1, 5, 3, 0.5}, {6, 20, 20, 0.15}}) do
      local H, nqb = c[1], c[2]
      local l = spread(H, nqb, c[3], 70 + nqb, c[4])
      local got, len = l:order("head"), lengths(l)
      is_permutation(got, H * nqb)
      local work = {}
      for r, n in ipairs(len) do local h = math.floor((r - 1) / nqb) + 1; work[h] = (work[h] or 0) + n end
      for i = 2, #got do
        local a, b = got[i - 1], got[i]
        local ha, hb = math.floor((a - 1) / nqb) + 1, math.floor((b - 1) / nqb) + 1
        if ha == hb then
          assert.is_true(len[a] > len[b] or (len[a] == len[b] and a < b), string.format("head %d rows %d, %d", ha, a, b))
        else -- a head's rows together (each head starts once), heads by work, ties by head
          assert.equal(0, (i - 1) % nqb, "head " .. hb .. " starts at place " .. i)
          assert.is_true(work[ha] > work[hb] or (work[ha] == work[hb] and ha < hb), string.format("heads %d, %d", ha, hb))
        end
      end
      l:free()
    end
    -- rows of one length in every head: both orders are the natural one
    local f = adaspa.layout.full(3, 4, 4, 128)
    local natural = {}
    for r = 1, 12 do natural[r] = r end
    assert.same(natural, f:order("head"))
    assert.same(natural, f:order())
    spec_error(function() f:order("widest") end, "layout:order", 'kind must be "longest" or "head", got "widest"')
    f:free()
  end)
end)

-- Layout messages (layout:encode, adaspa.layout.decode): what moves a head's layout between
-- processes. Header (40 bytes, host order): magic u32, index width u32, heads, nqb, nkb, block
-- (i32), nnz u64, total bytes u64; then heads * (nqb + 1) u64 offsets; then the indices.
local function le(v, n) -- v as n little-endian bytes (v < 2^53)
  local t = {}
  for i = 1, n do t[i] = string.char(v % 256); v = math.floor(v / 256) end
  return table.concat(t)
end
local function put(s, pos, bytes) return s:sub(1, pos - 1) .. bytes .. s:sub(pos + #bytes) end -- pos 1-based
local function get(s, pos, n) local v = 0 for i = n, 1, -1 do v = v * 256 + s:byte(pos + i - 1) end return v end

local function small_layout()
  local r = adaspa.randn({3, 5, 7}, {seed = 11}):totable()
  for h = 1, 3 do for qb = 1, 5 do for kb = 1, 7 do r[h][qb][kb] = (r[h][qb][kb] > 0.2 and qb ~= 4) and 1 or 0 end end end
  return adaspa.layout.from_mask(adaspa.tensor(r, {dtype = "u8"}), 64), r
end

describe("layout messages", function()
  it("round-trip every head, a selection in any order, and messages back to back", function()
    local l, r = small_layout()
    assert.truthy(l:nnz() > 10)
    local msg = l:encode()
    assert.equal(40 + 3 * 6 * 8 + l:nnz() * 2, #msg)
    assert.equal(0x31594c41, get(msg, 1, 4)); assert.equal(2, get(msg, 5, 4)); assert.equal(l:nnz(), get(msg, 25, 8))
    local back = adaspa.layout.decode(msg)
    assert.same(r, back:to_mask():totable())
    assert.equal(64, back:block())
    local picked = adaspa.layout.decode(l:encode({3, 1, 3}))
    assert.same({r[3], r[1], r[3]}, picked:to_mask():totable())
    assert.same({r[3], r[1], r[3]}, l:select({3, 1, 3}):to_mask():totable())
    local joined = adaspa.layout.decode(l:encode({2}) .. l:encode({1, 3}))
    assert.same({r[2], r[1], r[3]}, joined:to_mask():totable())
    assert.equal(msg, back:encode()) -- bytes of a decoded layout are those it came from
    -- 4-byte indices past 65536 key blocks
    local wide = adaspa.zeros({1, 2, 70000}, {dtype = "u8"})
    wide:set(1, 1, 1, 3); wide:set(1, 1, 1, 69999); wide:set(1, 1, 2, 70000)
    local wl = adaspa.layout.from_mask(wide)
    local wm = wl:encode()
    assert.equal(4, get(wm, 5, 4)); assert.equal(40 + 3 * 8 + 3 * 4, #wm)
    local wb = adaspa.layout.decode(wm)
    assert.same({3, 69999}, wb:row(1, 1)); assert.same({70000}, wb:row(1, 2))
  end)

  it("are much smaller than f16 masks for sparse heads at 720p (1857 x 1857 blocks of 64)", function()
    local n = 1857
    local mass = adaspa.softmax(adaspa.randn({2, n, n}, {seed = 3}))
    local l = adaspa.layout.topk(mass, {density = 0.1})
    mass:free()
    local msg = l:encode()
    local mask_f16 = 2 * n * n * 2
    -- 0.1 x 1857 = 186 blocks a row: 2 x 1857 x 186 indices of 2 bytes + 2 x 1858 offsets of 8
    assert.equal(40 + 2 * (n + 1) * 8 + 2 * n * 186 * 2, #msg)
    assert.truthy(#msg * 9 < mask_f16, string.format("message %d bytes, f16 masks %d", #msg, mask_f16))
    assert.truthy(#msg * 4 < mask_f16 / 2, "smaller than a u8 mask by 4x too")
    local back = adaspa.layout.decode(msg)
    assert.equal(msg, back:encode())
    assert.same(l:row(2, 1000), back:row(2, 1000))
    -- a dense head still takes no more than its f16 mask (2-byte indices + offsets)
    local full = adaspa.layout.full(1, n, n)
    assert.truthy(#full:encode() < n * n * 2 + 40 + (n + 1) * 8 + 1)
  end)

  it("refuse corrupt, truncated and oversized messages with an error naming what is wrong", function()
    local l = small_layout()
    local msg = l:encode()
    local nnz, offs = l:nnz(), 41 -- offsets start at byte 41 (1-based)
    local idx = offs + 3 * 6 * 8
    local function bad(m, ...) spec_error(function() adaspa.layout.decode(m) end, "adaspa.layout.decode", ...) end
    bad("", "no message (0 bytes)")
    for cut = 1, #msg - 1 do -- every truncation
      spec_error(function() adaspa.layout.decode(msg:sub(1, cut)) end, "adaspa.layout.decode")
    end
    bad(msg .. "x", "too few for a layout message header")
    bad(msg .. msg:sub(1, 40), "left")
    bad(put(msg, 1, "XXXX"), "is not a layout message")
    bad(put(msg, 5, le(4, 4)), "4-byte indices, 7 key blocks need 2")
    bad(put(msg, 9, le(0, 4)), "heads, nqb and nkb must be in [1")
    bad(put(msg, 9, le(0x7fffffff, 4)), "needs", "are left")              -- 2^31 heads in a few bytes
    bad(put(msg, 13, le(0x40000000, 4)), "blocks per head is too many")
    bad(put(msg, 21, le(32, 4)), "block must be 64 or 128, got 32")
    bad(put(msg, 25, le(nnz + 1, 8)), "says")                              -- nnz and total disagree
    bad(put(put(msg, 25, le(2 ^ 40, 8)), 33, le(2 ^ 41, 8)), "claims")     -- more entries than blocks
    bad(put(msg, 33, le(#msg + 2, 8)), "says")
    bad(put(msg, offs, le(1, 8)), "offset 0 of head 1 is 1 after 0")      -- must start at 0
    bad(put(msg, offs + 8, le(9, 8)), "grow by at most 7 a row")           -- row longer than nkb
    local o2 = get(msg, offs + 16, 8)
    bad(put(msg, offs + 8, le(o2 + 1, 8)), "offset 2 of head 1")           -- decreasing
    bad(put(msg, offs + 3 * 6 * 8 - 8, le(nnz - 1, 8)), "end at nnz")     -- last offset short of nnz
    bad(put(msg, idx, le(7, 2)), "keeps key block 7")                     -- index out of range
    local first_row = l:row(1, 1)
    assert.truthy(#first_row >= 2)
    bad(put(msg, idx + 2, le(first_row[1] - 1, 2)), "strictly increasing")
    local other = adaspa.layout.full(1, 5, 6):encode()
    bad(msg .. other, "has 5 x 6 blocks of 64, the first one 5 x 7 of 64")
    -- every single-byte change either decodes to a well-formed layout or is refused (never a crash)
    local refused = 0
    for i = 1, #msg do
      for _, v in ipairs({0, 1, 0x7f, 0xff}) do
        local ok, got = pcall(adaspa.layout.decode, put(msg, i, string.char(v)))
        if ok then
          for h = 1, got:heads() do for qb = 1, got:nqb() do
            local row = got:row(h, qb)
            for j, kb in ipairs(row) do assert(kb >= 1 and kb <= got:nkb() and (j == 1 or kb > row[j - 1])) end
          end end
        else
          assert.truthy(tostring(got):find("adaspa.layout.decode", 1, true), tostring(got))
          refused = refused + 1
        end
      end
    end
    assert.truthy(refused > #msg, "most corruptions are refused: " .. refused)
    spec_error(function() adaspa.layout.decode(12) end, "adaspa.layout.decode", "bytes must be a string")
    spec_error(function() l:encode({4}) end, "layout:encode", "heads[1] must be an integer in [1, 3]")
    spec_error(function() l:select({}) end, "layout:select", "non-empty list")
  end)
end)
