-- adaspa.chart and adaspa.font: points land where the axis mapping puts them, lines join a
-- series, +inf values sit in their band, the legend shows each series' color, ticks are nice
-- numbers; every digit renders as its own glyph, dot for dot.
local chart = require "adaspa.chart"
local font = require "adaspa.font"

local function px(img, row, col) return {img:get(row, col, 1), img:get(row, col, 2), img:get(row, col, 3)} end
local function fmt(c) return "{" .. table.concat(c, ",") .. "}" end

describe("adaspa.chart", function()
  local red, blue = {200, 30, 40}, {20, 60, 210}
  local spec = {
    width = 437, height = 311, title = "quality against speed", x_label = "speedup (x)", y_label = "PSNR (dB)",
    x_range = {0, 10}, y_range = {20, 70}, point_radius = 3,
    series = {
      {name = "reference", color = {0, 150, 0}, points = {{x = 1, y = math.huge}}},
      {name = "red", color = red, line = true, points = {{x = 2, y = 60, label = "a"}, {x = 7.5, y = 35, label = "b"}}},
      {name = "blue", color = blue, points = {{x = 4.25, y = 27.5}, {x = 9, y = 66}}},
    },
  }
  local img, f = chart.draw(spec)

  it("has the asked size and a plot area inside it", function()
    assert.same({311, 437, 3}, img:shape())
    assert.is_true(f.left > 1 and f.right < 437 and f.top > 1 and f.bottom < 311)
    assert.is_true(f.right - f.left > 250 and f.bottom - f.top > 150)
    assert.same({0, 10, 20, 70}, {f.x_lo, f.x_hi, f.y_lo, f.y_hi})
  end)

  it("puts each point at left + (x - lo) / (hi - lo) * width, bottom - (y - lo) / (hi - lo) * height", function()
    for _, s in ipairs({spec.series[2], spec.series[3]}) do
      for _, p in ipairs(s.points) do
        local col = f.left + math.floor((p.x - 0) / 10 * (f.right - f.left) + 0.5)
        local row = f.bottom - math.floor((p.y - 20) / 50 * (f.bottom - f.top) + 0.5)
        assert.equal(col, f.px(p.x))
        assert.equal(row, f.py(p.y))
        for _, d in ipairs({{0, 0}, {1, 0}, {0, -1}, {-1, 1}}) do
          assert.same(s.color, px(img, row + d[1], col + d[2]), string.format("point (%g, %g) at row %d col %d", p.x, p.y, row, col))
        end
        -- the outline ring, and background well outside the disc
        assert.same({0, 0, 0}, px(img, row, col + 3))
        local far = px(img, row + 9, col + 9)
        assert.is_true(far[1] > 200 and far[2] > 200 and far[3] > 200, fmt(far))
      end
    end
  end)

  it("joins a series' points with a line of its color", function()
    local a, b = spec.series[2].points[1], spec.series[2].points[2]
    for _, t in ipairs({0.3, 0.5, 0.7}) do
      local col = math.floor(f.px(a.x) + t * (f.px(b.x) - f.px(a.x)) + 0.5)
      local row = math.floor(f.py(a.y) + t * (f.py(b.y) - f.py(a.y)) + 0.5)
      -- a 2-pixel line: the pixel or a neighbor carries the color
      local hit = false
      for dr = -1, 1 do for dc = -1, 1 do
        local c = px(img, row + dr, col + dc)
        if c[1] == red[1] and c[2] == red[2] and c[3] == red[3] then hit = true end
      end end
      assert.is_true(hit, "line at t=" .. t)
    end
    -- the blue series has no line: halfway between its points is not blue
    local p, q = spec.series[3].points[1], spec.series[3].points[2]
    local mid = px(img, math.floor((f.py(p.y) + f.py(q.y)) / 2), math.floor((f.px(p.x) + f.px(q.x)) / 2))
    assert.is_false(mid[1] == blue[1] and mid[2] == blue[2] and mid[3] == blue[3])
  end)

  it("draws +inf in a band above the plot, and the legend with each series' color", function()
    assert.is_true(f.inf_y < f.top)
    assert.same({0, 150, 0}, px(img, f.inf_y, f.px(1)))
    local items = f.legend.items
    assert.equal(3, #items)
    for i, s in ipairs(spec.series) do
      local it = items[i]
      assert.equal(s.name, it.name)
      assert.is_true(it.y > f.bottom, "the legend lies under the plot")
      assert.same(s.color, px(img, it.y + 3, it.x + 3), s.name)
    end
    assert.is_true(items[2].x > items[1].x)
  end)

  it("picks ticks of 1, 2 or 5 times a power of ten and labels them with the decimals they need", function()
    assert.equal(20, chart.nice_step(100, 5))
    assert.equal(0.05, chart.nice_step(0.37, 5))
    assert.equal(1, chart.nice_step(7.3, 5))
    assert.same({0.5, 1, 1.5, 2, 2.5, 3, 3.5}, chart.ticks(0.4, 3.6, 0.5))
    assert.equal("0.15", chart.format_tick(0.15, 0.05))
    assert.equal("40", chart.format_tick(40, 20))
    assert.equal("0", chart.format_tick(1e-17, 0.1):gsub("%.0$", ""))
    -- without ranges the data fit inside the ticks
    local _, g = chart.draw({series = {{points = {{x = 0.83, y = 41.2}, {x = 3.4, y = 63.9}}}}})
    assert.is_true(g.x_lo <= 0.83 and g.x_hi >= 3.4 and g.y_lo <= 41.2 and g.y_hi >= 63.9)
    assert.is_true(g.x_hi - g.x_lo < 2 * (3.4 - 0.83))
  end)

  it("rejects bad points and ranges, naming them", function()
    spec_error(function() chart.draw({series = {{points = {{x = 1, y = 2}, {x = "a", y = 1}}}}}) end, "series[1].points[2]", "finite")
    spec_error(function() chart.draw({series = {{points = {{x = 0 / 0, y = 1}}}}}) end, "series[1].points[1]")
    spec_error(function() chart.draw({series = {}, x_range = {3, 1}}) end, "x_range")
    spec_error(function() chart.draw({series = {{color = {1, 2}, points = {}}}}) end, "series[1].color")
    spec_error(function() chart.draw({series = {}, width = 50}) end, "width")
  end)
end)

describe("adaspa.font", function()
  it("renders every digit as its own glyph, dot for dot", function()
    local seen = {}
    for d = 0, 9 do
      local ch = tostring(d)
      local t = font.render(ch, {fg = {0, 0, 0}, bg = {255, 255, 255}})
      assert.same({7, 5, 3}, t:shape())
      local g = font.glyph(ch)
      local key, on = {}, 0
      for r = 1, 7 do
        for c = 1, 5 do
          local want = bit.band(g[r], bit.lshift(1, 5 - c)) ~= 0
          local v = t:get(r, c, 1)
          assert.equal(want and 0 or 255, v, string.format("digit %s row %d col %d", ch, r, c))
          key[#key + 1] = want and "#" or "."
          if want then on = on + 1 end
        end
      end
      key = table.concat(key)
      assert.is_true(on >= 8, "digit " .. ch .. " has " .. on .. " dots")
      assert.is_nil(seen[key], "digits " .. tostring(seen[key]) .. " and " .. ch .. " look the same")
      seen[key] = ch
    end
  end)

  it("lays out text in 6-dot cells at a scale, with padding, in the given colors", function()
    assert.equal(59, font.width("0123456789"))
    assert.equal(177, font.width("0123456789", 3))
    local t = font.render("1.5x", {scale = 2, pad = 1, fg = {10, 20, 30}, bg = {200, 210, 220}})
    assert.same({(7 + 2) * 2, (4 * 6 - 1 + 2) * 2, 3}, t:shape())
    assert.same({200, 210, 220}, px(t, 1, 1))
    -- "1": top row ..#.. -> dot 3 of cell 1; at scale 2 with 1 dot of padding, pixels 7..8, rows 3..4
    assert.same({10, 20, 30}, px(t, 3, 7))
    assert.same({10, 20, 30}, px(t, 4, 8))
    assert.same({200, 210, 220}, px(t, 3, 5))
    -- ".": dots 2..3 of rows 6..7 of cell 2, which starts 1 + 6 dots in -> pixels 17..20, rows 13..16
    assert.same({10, 20, 30}, px(t, 13, 17))
    assert.same({10, 20, 30}, px(t, 16, 20))
    assert.same({200, 210, 220}, px(t, 12, 17))
    assert.same({200, 210, 220}, px(t, 13, 21))
  end)

  it("has the letters and punctuation labels use, and draws unknown characters as ?", function()
    for ch in ("ABCXYZabcxyz.,:;-+%()/=[]<>'!?#*"):gmatch(".") do assert.is_table(font.glyph(ch), ch) end
    local q, e = font.render("?"), font.render("\1")
    assert.equal(0, spec_maxdiff(q, e))
    spec_error(function() font.render("\1", {strict = true}) end, "no glyph", "byte 1")
    spec_error(function() font.render(12) end, "text must be a string")
    local img = adaspa.zeros({20, 40, 3}, {dtype = "u8"})
    spec_error(function() require("adaspa.preview").label(img, "AB\1") end, "preview.label: no glyph for", "byte 1")
  end)
end)
