-- adaspa.pictures: mask and mass pictures (sizes, upscaling and downsampling, kept/dropped colors
-- of random hand-made masks, boundary lines, heat-map colors and monotonicity), the density grid,
-- side by side, boundaries of the joint sequence, a PNG round trip, and bad arguments.
local P = require "adaspa.pictures"

math.randomseed(20261124)

-- A random u8 mask [H, nqb, nkb] (from randn > 0: about half kept) as a tensor and a table.
local function rand_mask(H, nqb, nkb, seed)
  local t = adaspa.randn({H, nqb, nkb}, {seed = seed}):totable()
  for _, head in ipairs(t) do
    for _, row in ipairs(head) do for j = 1, nkb do row[j] = row[j] > 0 and 1 or 0 end end
  end
  return adaspa.tensor(t, {dtype = "u8"}), t
end

local function same(a, b) return a[1] == b[1] and a[2] == b[2] and a[3] == b[3] end
local function px(img, r, c) return {img:get(r, c, 1), img:get(r, c, 2), img:get(r, c, 3)} end
local function shape(img) return table.concat(img:shape(), "x") end
local function fmt(c) return "{" .. table.concat(c, ",") .. "}" end

-- The mask palette's color of a kept share in [0, 1] (as pictures.mask computes it).
local function shade(share)
  local i = math.floor(share * 255 + 0.5) / 255
  local c = {}
  for k = 1, 3 do
    local d, kk = P.colors.dropped[k], P.colors.kept[k]
    c[k] = math.floor(d + (kk - d) * i + 0.5)
  end
  return c
end

-- The heat map's color of a mass value under range {lo, hi}.
local function heat(m, lo, hi)
  local t = (math.log10(m) - lo) / (hi - lo)
  t = math.max(0, math.min(1, t))
  return P.colormap[math.floor(t * 255 + 0.5) + 1]
end

describe("adaspa.pictures", function()
  describe("boundaries", function()
    it("matches hand-computed 720p numbers", function()
      local b = P.boundaries({33, 45, 80}, 256, 64)
      assert.are.equal(33, #b.frame_blocks)
      assert.are.equal(1, b.frame_blocks[1])
      assert.are.equal(57, b.frame_blocks[2])          -- token 3600 -> block 56 (0-based)
      assert.are.equal(1857, b.text_block)             -- token 118800 -> block 1856.25 -> 1857
      assert.are.equal(1861, b.blocks)                 -- 119056 tokens
      assert.is_nil(P.boundaries({2, 2, 2}, 0, 4).text_block)
    end)

    it("agrees with a token-by-token walk on random grids", function()
      for _ = 1, 20 do
        local grid = {math.random(1, 6), math.random(1, 9), math.random(1, 9)}
        local ntxt, block = math.random(1, 40), ({8, 16, 64})[math.random(1, 3)]
        local b = P.boundaries(grid, ntxt, block)
        local per, n_img = grid[2] * grid[3], grid[1] * grid[2] * grid[3]
        for tok = 0, n_img + ntxt - 1 do
          local blk = math.floor(tok / block) + 1
          if tok < n_img and tok % per == 0 then assert.are.equal(blk, b.frame_blocks[tok / per + 1]) end
          if tok == n_img then assert.are.equal(blk, b.text_block) end
          if tok == n_img + ntxt - 1 then assert.are.equal(blk, b.blocks) end
        end
        assert.are.equal(grid[1], #b.frame_blocks)
      end
    end)
  end)

  describe("mask", function()
    it("colors kept blocks dark and dropped ones light, per head, at the given scale", function()
      local m, t = rand_mask(2, 7, 9, 11)
      local l = adaspa.layout.from_mask(m)
      for head = 1, 2 do
        local img = P.mask(l, head, {scale = 3})
        assert.are.equal("21x27x3", shape(img))
        local v = img:totable()
        local nk, nd = 0, 0
        for qb = 1, 7 do
          for kb = 1, 9 do
            local want = t[head][qb][kb] == 1 and P.colors.kept or P.colors.dropped
            if t[head][qb][kb] == 1 then nk = nk + 1 else nd = nd + 1 end
            for r = (qb - 1) * 3 + 1, qb * 3 do
              for c = (kb - 1) * 3 + 1, kb * 3 do
                assert(same(v[r][c], want), string.format("head %d block (%d,%d) pixel (%d,%d): %s, want %s",
                  head, qb, kb, r, c, fmt(v[r][c]), fmt(want)))
              end
            end
          end
        end
        assert(nk > 0 and nd > 0, "random mask should keep and drop blocks")
      end
      assert.is_false(same(P.colors.kept, P.colors.dropped))
      assert(P.luminance(P.colors.kept) < P.luminance(P.colors.dropped) - 100, "kept must be much darker")
    end)

    it("picks sizes: upscaled when blocks are few, downsampled past max_size", function()
      local l = adaspa.layout.from_mask((rand_mask(1, 12, 12, 2)))
      assert.are.equal("192x192x3", shape(P.mask(l, 1)))              -- 16 px per block
      local l2 = adaspa.layout.from_mask((rand_mask(1, 100, 70, 3)))
      assert.are.equal("1000x700x3", shape(P.mask(l2, 1)))            -- floor(1024 / 100) = 10
      assert.are.equal("25x18x3", shape(P.mask(l2, 1, {max_size = 32})))   -- tiles of 4 x 4
      assert.are.equal("34x24x3", shape(P.mask(l2, 1, {tile = 3})))
      -- a real large case with the default max_size 2048: 2100 blocks -> tiles of 2 x 2
      local big = adaspa.zeros({1, 2100, 2100}, {dtype = "u8"})
      local kept = {}
      for _ = 1, 50 do
        local q, k = math.random(1, 2100), math.random(1, 2100)
        big:set(1, 1, q, k)
        kept[(math.floor((q - 1) / 2)) * 1050 + math.floor((k - 1) / 2)] = true
      end
      local img = P.mask(adaspa.layout.from_mask(big), 1, {reduce = "max"})
      assert.are.equal("1050x1050x3", shape(img))
      for key in pairs(kept) do
        local r, c = math.floor(key / 1050) + 1, key % 1050 + 1
        assert(same(px(img, r, c), P.colors.kept), "tile with a kept block should be kept-colored")
      end
      -- every other tile is dropped-colored: the pixel sum says so
      local nk = 0
      for _ in pairs(kept) do nk = nk + 1 end
      local function csum(c) return c[1] + c[2] + c[3] end
      assert.are.equal(nk * csum(P.colors.kept) + (1050 * 1050 - nk) * csum(P.colors.dropped), img:sum())
    end)

    it("downsamples by the share kept (mean) or any kept (max), with partial edge tiles", function()
      local m, t = rand_mask(1, 9, 7, 5)
      local l = adaspa.layout.from_mask(m)
      local mean, max = P.mask(l, 1, {tile = 2}), P.mask(l, 1, {tile = 2, reduce = "max"})
      assert.are.equal("5x4x3", shape(mean))
      local grays = 0
      for tr = 1, 5 do
        for tc = 1, 4 do
          local n, s = 0, 0
          for qb = 2 * tr - 1, math.min(2 * tr, 9) do
            for kb = 2 * tc - 1, math.min(2 * tc, 7) do n = n + 1; s = s + t[1][qb][kb] end
          end
          local want = shade(s / n)
          if s > 0 and s < n then grays = grays + 1 end
          assert(same(px(mean, tr, tc), want), string.format("tile (%d,%d): %s, want %s", tr, tc, fmt(px(mean, tr, tc)), fmt(want)))
          assert(same(px(max, tr, tc), s > 0 and P.colors.kept or P.colors.dropped))
        end
      end
      assert(grays > 0, "some tiles should be partly kept")
    end)

    it("draws frame and text lines at the right rows and columns", function()
      local m, t = rand_mask(1, 7, 9, 7)
      local l = adaspa.layout.from_mask(m)
      local s = 4
      local img = P.mask(l, 1, {scale = s, frame_blocks = {1, 3, 5}, text_block = 6, line_alpha = 1})
      local v = img:totable()
      local frame_px = {[9] = true, [17] = true}
      local text_px = 21
      local function block_color(r, c)
        local qb, kb = math.floor((r - 1) / s) + 1, math.floor((c - 1) / s) + 1
        return t[1][qb][kb] == 1 and P.colors.kept or P.colors.dropped
      end
      for r = 1, 28 do
        for c = 1, 36 do
          local want
          if r == text_px or c == text_px then want = P.colors.text
          elseif frame_px[r] or frame_px[c] then want = P.colors.frame
          else want = block_color(r, c) end
          assert(same(v[r][c], want), string.format("pixel (%d,%d): %s, want %s", r, c, fmt(v[r][c]), fmt(want)))
        end
      end
      -- a boundary past the query blocks draws only its column; default alpha blends
      local img2 = P.mask(l, 1, {scale = s, text_block = 8})
      local a = 0.75
      for r = 1, 28 do
        local p, base = px(img2, r, 29), block_color(r, 29)
        for k = 1, 3 do
          assert(math.abs(p[k] - ((1 - a) * base[k] + a * P.colors.text[k])) <= 1, "blended text column")
        end
      end
      for c = 1, 36 do if c ~= 29 then assert(same(px(img2, 28, c), block_color(28, c))) end end
      -- downsampled: block b's line is on pixel floor((b - 1) / k) + 1
      local big = adaspa.layout.from_mask((rand_mask(1, 40, 40, 8)))
      local d = P.mask(big, 1, {tile = 4, frame_blocks = {12}, line_alpha = 1})
      assert.are.equal("10x10x3", shape(d))
      for i = 1, 10 do
        assert(same(px(d, 3, i), P.colors.frame) and same(px(d, i, 3), P.colors.frame))   -- tile 3 holds blocks 9..12
      end
    end)
  end)

  describe("mass", function()
    it("has a colormap rising in luminance from dark to bright", function()
      assert.are.equal(256, #P.colormap)
      assert(same(P.colormap[1], P.stops[1]) and same(P.colormap[256], P.stops[#P.stops]))
      for i = 2, 256 do
        assert(P.luminance(P.colormap[i]) >= P.luminance(P.colormap[i - 1]), "luminance falls at entry " .. i)
      end
      assert(P.luminance(P.colormap[256]) - P.luminance(P.colormap[1]) > 150)
      -- cool to warm: blue dominates red at the bottom, red dominates blue at the top
      assert(P.colormap[1][3] > P.colormap[1][1] and P.colormap[256][1] > P.colormap[256][3])
    end)

    it("colors each block by log10 mass, monotone in mass", function()
      local n = 60
      local vals = {}
      for j = 1, n do vals[j] = 10 ^ (math.random() * 7.5 - 7) end   -- 1e-7 .. 3
      vals[7], vals[19] = 0, 1
      local mass = adaspa.tensor({{vals}})
      local img = P.mass(mass, 1, {scale = 1})
      assert.are.equal("1x60x3", shape(img))
      for j = 1, n do assert(same(px(img, 1, j), heat(vals[j], -6, 0)), "block " .. j) end
      assert(same(px(img, 1, 7), P.colormap[1]) and same(px(img, 1, 19), P.colormap[256]))
      local order = {}
      for j = 1, n do order[j] = j end
      table.sort(order, function(a, b) return vals[a] < vals[b] end)
      for i = 2, n do
        local lo, hi = px(img, 1, order[i - 1]), px(img, 1, order[i])
        assert(P.luminance(hi) >= P.luminance(lo), "higher mass darker")
      end
      -- a custom range moves the scale; bf16 input works
      local img2 = P.mass(mass:to("bf16"), 1, {scale = 2, range = {-3, -1}})
      assert.are.equal("2x120x3", shape(img2))
      local b = mass:to("bf16"):to("f32"):totable()[1][1]
      for j = 1, n do assert(same(px(img2, 2, 2 * j), heat(b[j], -3, -1))) end
    end)

    it("picks a head, downsamples by tile mean, marks NaN, draws lines", function()
      local r = adaspa.randn({3, 10, 10}, {seed = 21})
      local mass = adaspa.scale(adaspa.mul(r, r), 0.01)
      local v = mass:totable()
      v[2][1][1] = 0 / 0
      mass = adaspa.tensor(v)
      for head = 2, 3 do
        local img = P.mass(mass, head, {tile = 3})
        assert.are.equal("4x4x3", shape(img))
        for tr = 1, 4 do
          for tc = 1, 4 do
            local s, n = 0, 0
            for q = 3 * tr - 2, math.min(3 * tr, 10) do
              for k = 3 * tc - 2, math.min(3 * tc, 10) do s = s + v[head][q][k]; n = n + 1 end
            end
            local want = s ~= s and P.colors.nan or heat(s / n, -6, 0)
            local got = px(img, tr, tc)
            -- the picture sums f32 values; allow the neighbouring colormap entry at a rounding edge
            local ok = same(got, want)
            if not ok and s == s then ok = same(got, heat(s / n * (1 + 1e-5), -6, 0)) or same(got, heat(s / n * (1 - 1e-5), -6, 0)) end
            assert(ok, string.format("head %d tile (%d,%d): %s, want %s", head, tr, tc, fmt(got), fmt(want)))
          end
        end
      end
      local lined = P.mass(mass, 3, {scale = 2, frame_blocks = {4}, text_block = 9, line_alpha = 1})
      assert.are.equal("20x20x3", shape(lined))
      for i = 1, 20 do
        if i ~= 17 then assert(same(px(lined, 7, i), P.colors.frame_mass)) end
        assert(same(px(lined, 17, i), P.colors.text) and same(px(lined, i, 17), P.colors.text))
      end
    end)
  end)

  describe("density_grid", function()
    it("has one cell per layer and head with a 1-pixel grid, ragged layers white", function()
      local d = {}
      local r = adaspa.randn({4, 5}, {seed = 31}):totable()
      for l = 1, 4 do
        d[l] = {}
        for h = 1, 5 do d[l][h] = 1 / (1 + math.exp(-2 * r[l][h])) end
      end
      d[3] = {d[3][1], d[3][2], d[3][3]}
      local img = P.density_grid(d, {cell = 4})
      assert.are.equal("21x26x3", shape(img))
      local v = img:totable()
      for row = 1, 21 do
        for col = 1, 26 do
          local want
          if (row - 1) % 5 == 0 or (col - 1) % 5 == 0 then want = P.colors.grid
          else
            local l, h = math.floor((row - 2) / 5) + 1, math.floor((col - 2) / 5) + 1
            want = d[l][h] and P.color(d[l][h]) or P.colors.missing
          end
          assert(same(v[row][col], want), string.format("pixel (%d,%d): %s, want %s", row, col, fmt(v[row][col]), fmt(want)))
        end
      end
      assert(same(P.color(0), P.colormap[1]) and same(P.color(1), P.colormap[256]))
      assert.are.equal("35x35x3", shape(P.density_grid({{0.5, 0.2}, {0.1, 0.9}})))   -- default cell 16
      assert.are.equal("29x36x3", shape(P.density_grid(d, {max_size = 40})))       -- cells shrink to 6
    end)
  end)

  describe("side_by_side", function()
    it("places images left to right, top-aligned, padded white", function()
      local a = adaspa.tensor(adaspa.scale(adaspa.add(adaspa.randn({5, 4, 3}, {seed = 41}), adaspa.tensor({3, 3, 3})), 40):totable(), {dtype = "u8"})
      local b = adaspa.tensor(adaspa.scale(adaspa.add(adaspa.randn({3, 6, 3}, {seed = 42}), adaspa.tensor({3, 3, 3})), 40):totable(), {dtype = "u8"})
      local out = P.side_by_side({a, b}, 2)
      assert.are.equal("5x12x3", shape(out))
      assert.are.equal(0, spec_maxdiff(out:narrow(2, 1, 4), a))
      assert.are.equal(0, spec_maxdiff(out:narrow(1, 1, 3):narrow(2, 7, 6), b))
      local gap, pad = out:narrow(2, 5, 2):to("f32"), out:narrow(1, 4, 2):narrow(2, 7, 6):to("f32")
      assert(gap:min() == 255 and pad:min() == 255)
      assert.are.equal("3x6x3", shape(P.side_by_side({b})))
    end)
  end)

  it("writes a PNG that reads back with the same pixels", function()
    local l = adaspa.layout.from_mask((rand_mask(2, 12, 12, 51)))
    local r = adaspa.randn({2, 12, 12}, {seed = 52})
    local b = P.boundaries({3, 4, 16}, 20, 16)
    local img = P.side_by_side({P.mask(l, 2, b), P.mass(adaspa.mul(r, r), 2, b)}, 6)
    local path = os.tmpname() .. ".png"
    adaspa.png.write(path, img)
    local back = adaspa.png.read(path)
    os.remove(path)
    assert.are.equal(shape(img), shape(back))
    assert.are.equal(0, spec_maxdiff(back, img))
  end)

  it("rejects bad arguments, naming the function and the argument", function()
    local l = adaspa.layout.from_mask((rand_mask(2, 4, 4, 61)))
    local mass = adaspa.randn({2, 4, 4}, {seed = 62})
    spec_error(function() P.mask(l, 3) end, "adaspa.pictures.mask", "head", "1..2", "got 3")
    spec_error(function() P.mask(l, 0) end, "adaspa.pictures.mask", "head")
    spec_error(function() P.mask(mass, 1) end, "adaspa.pictures.mask", "layout", "adaspa.Layout")
    spec_error(function() P.mask(l, 1, {scale = 2, tile = 2}) end, "adaspa.pictures.mask", "opts.scale", "opts.tile")
    spec_error(function() P.mask(l, 1, {frame_blocks = {1, 0}}) end, "adaspa.pictures.mask", "opts.frame_blocks[2]")
    spec_error(function() P.mask(l, 1, {reduce = "median"}) end, "adaspa.pictures.mask", "opts.reduce", "median")
    spec_error(function() P.mass(mass:reshape({2, 16}), 1) end, "adaspa.pictures.mass", "mass", "[H, nqb, nkb]", "[2, 16]")
    spec_error(function() P.mass(adaspa.zeros({1, 2, 2}, {dtype = "u8"}), 1) end, "adaspa.pictures.mass", "mass", "u8")
    spec_error(function() P.mass(mass, 5) end, "adaspa.pictures.mass", "head", "1..2", "got 5")
    spec_error(function() P.mass(mass, 1, {range = {0, -6}}) end, "adaspa.pictures.mass", "opts.range", "{0, -6}")
    spec_error(function() P.density_grid({{0.5}, {0.1, 0.2, 1.5}}) end, "adaspa.pictures.density_grid", "densities[2][3]", "1.5")
    spec_error(function() P.density_grid({}) end, "adaspa.pictures.density_grid", "densities")
    spec_error(function() P.side_by_side({adaspa.zeros({2, 2}, {dtype = "u8"})}) end, "adaspa.pictures.side_by_side", "images[1]", "[2, 2]")
    spec_error(function() P.boundaries({2, 3}, 4) end, "adaspa.pictures.boundaries", "grid")
    spec_error(function() P.boundaries({2, 3, 4}, -1) end, "adaspa.pictures.boundaries", "n_text_tokens")
  end)
end)
