-- adaspa.chart: scatter and line charts drawn into a u8 [H, W, 3] tensor (for PNG reports such as
-- the compare recipe's quality-against-speed chart), with axes, "nice" ticks, labelled points and
-- a legend, in adaspa.font's 5x7 glyphs.
--
--   chart.draw(spec) -> img, frame
-- spec = {
--   width = 900, height = 560, title = "...", x_label = "...", y_label = "...",
--   series = {{name = "adaspa", color = {r, g, b} (default: chart.palette[i]), line = true,
--              points = {{x = 1.5, y = 40, label = "0.8"}, ...}}, ...},
--   x_range = {lo, hi}, y_range = {lo, hi}   (default: the data with 5% margins, widened to ticks),
--   legend = true, text_scale = 2 (axes, title, legend), label_scale = 1 (point labels),
--   point_radius = 4,
-- }
-- A y of +inf (e.g. the PSNR of identical runs) is drawn in a band above the plot labelled "inf";
-- -inf below it ("-inf"); NaN points are skipped. x must be finite.
-- frame = {left, right, top, bottom (plot area, pixels, 1-based, inclusive), x_lo, x_hi, y_lo, y_hi,
--          inf_y (the row of +inf points), px = fn(x), py = fn(y)}:
--   px(x) = left + round((x - x_lo) / (x_hi - x_lo) * (right - left))
--   py(y) = bottom - round((y - y_lo) / (y_hi - y_lo) * (bottom - top))
-- Points are filled discs of point_radius around (px, py), drawn after lines and labels. The
-- legend lies under the x label (frame.legend.items[i] = {x, y, name, color}: its swatch's top-left).
--
--   chart.canvas(w, h [, bg]) -> an adaspa.canvas (set, fill, line, disc, text, tensor() -> u8 [h, w, 3]).
local font = require "adaspa.font"
local canvas = require "adaspa.canvas"

local chart = {}

-- Ten distinct series colors.
chart.palette = {
  {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
  {140, 86, 75}, {227, 119, 194}, {90, 90, 90}, {188, 189, 34}, {23, 190, 207},
}
chart.colors = {background = {255, 255, 255}, axis = {0, 0, 0}, grid = {225, 225, 225}, text = {20, 20, 20},
                inf_band = {245, 245, 235}, outline = {0, 0, 0}}

-- ---- canvas ----------------------------------------------------------------------------------------

function chart.canvas(w, h, bg) return canvas.new(w, h, bg or chart.colors.background) end

-- ---- ticks -----------------------------------------------------------------------------------------

-- A step of 1, 2 or 5 times a power of ten, near span / n.
function chart.nice_step(span, n)
  if not (span > 0) then return 1 end
  local raw = span / (n or 5)
  local p = 10 ^ math.floor(math.log10(raw))
  local f = raw / p
  local m = f < 1.5 and 1 or f < 3.5 and 2 or f < 7.5 and 5 or 10
  return m * p
end

-- Ticks of step over [lo, hi] (multiples of step within the range, with rounding slack).
function chart.ticks(lo, hi, step)
  local out = {}
  local first = math.ceil(lo / step - 1e-9)
  local last = math.floor(hi / step + 1e-9)
  for i = first, last do out[#out + 1] = i * step end
  return out
end

-- A tick label: as many decimals as the step needs.
function chart.format_tick(v, step)
  local d = -math.floor(math.log10(step) + 1e-9)
  if d < 0 then d = 0 end
  if math.abs(v) < step * 1e-6 then v = 0 end
  return string.format(string.format("%%.%df", d), v)
end

-- ---- the chart ------------------------------------------------------------------------------------

local function fail(msg, ...) error(string.format("adaspa.chart.draw: " .. msg, ...), 3) end

local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

local function data_range(series, key)
  local lo, hi = math.huge, -math.huge
  for _, s in ipairs(series) do
    for _, p in ipairs(s.points) do
      local v = p[key]
      if finite(v) then lo, hi = math.min(lo, v), math.max(hi, v) end
    end
  end
  if lo == math.huge then return 0, 1 end
  if hi - lo < 1e-12 then
    local d = math.max(math.abs(lo) * 0.1, 1e-3)
    return lo - d, hi + d
  end
  local m = 0.05 * (hi - lo)
  return lo - m, hi + m
end

local function check_spec(spec)
  if type(spec) ~= "table" then fail("spec must be a table, got %s", type(spec)) end
  if type(spec.series) ~= "table" then fail("spec.series must be a list of series, got %s", type(spec.series)) end
  for i, s in ipairs(spec.series) do
    if type(s) ~= "table" or type(s.points) ~= "table" then fail("series[%d] needs a list of points", i) end
    if s.color ~= nil and (type(s.color) ~= "table" or #s.color ~= 3) then fail("series[%d].color must be {r, g, b}", i) end
    for j, p in ipairs(s.points) do
      if type(p) ~= "table" or not finite(p.x) or type(p.y) ~= "number" then
        fail("series[%d].points[%d] needs a finite number x and a number y, got x = %s, y = %s", i, j,
          tostring(type(p) == "table" and p.x), tostring(type(p) == "table" and p.y))
      end
    end
  end
  for _, k in ipairs({"x_range", "y_range"}) do
    local r = spec[k]
    if r ~= nil and (type(r) ~= "table" or not finite(r[1]) or not finite(r[2]) or not (r[1] < r[2])) then
      fail("spec.%s must be {lo, hi} with lo < hi", k)
    end
  end
  local w, h = spec.width or 900, spec.height or 560
  if type(w) ~= "number" or w % 1 ~= 0 or w < 120 then fail("spec.width must be an integer >= 120, got %s", tostring(w)) end
  if type(h) ~= "number" or h % 1 ~= 0 or h < 100 then fail("spec.height must be an integer >= 100, got %s", tostring(h)) end
  return w, h
end

function chart.draw(spec)
  local W, H = check_spec(spec)
  local ts, ls = spec.text_scale or 2, spec.label_scale or 1
  local radius = spec.point_radius or 4
  local th = font.height(ts)
  local cv = chart.canvas(W, H)
  local C = chart.colors

  local any_inf, any_ninf = false, false
  for _, s in ipairs(spec.series) do
    for _, p in ipairs(s.points) do
      if p.y == math.huge then any_inf = true elseif p.y == -math.huge then any_ninf = true end
    end
  end

  -- ranges and ticks
  local x_lo, x_hi, y_lo, y_hi
  if spec.x_range then x_lo, x_hi = spec.x_range[1], spec.x_range[2] else x_lo, x_hi = data_range(spec.series, "x") end
  if spec.y_range then y_lo, y_hi = spec.y_range[1], spec.y_range[2] else y_lo, y_hi = data_range(spec.series, "y") end
  local xs, ys = chart.nice_step(x_hi - x_lo, 6), chart.nice_step(y_hi - y_lo, 5)
  if not spec.x_range then x_lo, x_hi = math.floor(x_lo / xs + 1e-9) * xs, math.ceil(x_hi / xs - 1e-9) * xs end
  if not spec.y_range then y_lo, y_hi = math.floor(y_lo / ys + 1e-9) * ys, math.ceil(y_hi / ys - 1e-9) * ys end
  local xticks, yticks = chart.ticks(x_lo, x_hi, xs), chart.ticks(y_lo, y_hi, ys)
  local ylabels, ylw = {}, 0
  for i, v in ipairs(yticks) do
    ylabels[i] = chart.format_tick(v, ys)
    ylw = math.max(ylw, font.width(ylabels[i], ts))
  end
  if any_inf then ylw = math.max(ylw, font.width("inf", ts)) end
  if any_ninf then ylw = math.max(ylw, font.width("-inf", ts)) end

  -- the plot area
  local pad = 2 * ts + 4
  local left = pad + ylw + 8
  local top = pad + (spec.title and th + pad or 0) + (spec.y_label and th + pad or 0)
  -- the legend: a band under the x label, entries left to right, wrapping
  local function color_of(i, s) return s.color or chart.palette[(i - 1) % #chart.palette + 1] end
  local legend_items, legend_h = {}, 0
  if spec.legend ~= false then
    local x, row, gapx = pad, 0, 3 * ts + 8
    for i, s in ipairs(spec.series) do
      if s.name then
        local w = th + 4 + font.width(s.name, ts)
        if x > pad and x + w > W - pad then x, row = pad, row + 1 end
        legend_items[#legend_items + 1] = {x = x, row = row, name = s.name, color = color_of(i, s)}
        x = x + w + gapx
      end
    end
    if #legend_items > 0 then legend_h = (row + 1) * (th + 6) + pad end
  end
  local bottom = H - (pad + th + 6 + (spec.x_label and th + pad or 0)) - legend_h
  local xlw = 0
  for _, v in ipairs(xticks) do xlw = math.max(xlw, font.width(chart.format_tick(v, xs), ts)) end
  local right = W - pad - math.floor(xlw / 2) - 2
  local inf_y, ninf_y
  local band = math.max(radius + 3, math.ceil(th / 2) + 1)
  if any_inf then inf_y = top + band; top = inf_y + band + 10 end
  if any_ninf then ninf_y = bottom - band; bottom = ninf_y - band - 10 end
  if right - left < 40 or bottom - top < 30 then fail("the chart is too small for its labels (%dx%d)", W, H) end
  local function px(x) return left + math.floor((x - x_lo) / (x_hi - x_lo) * (right - left) + 0.5) end
  local function py(y)
    if y == math.huge then return inf_y end
    if y == -math.huge then return ninf_y end
    return bottom - math.floor((y - y_lo) / (y_hi - y_lo) * (bottom - top) + 0.5)
  end

  -- title, axis labels
  local yy = pad
  if spec.title then cv:text(math.max(pad, math.floor((W - font.width(spec.title, ts)) / 2)), yy, spec.title, C.text, ts); yy = yy + th + pad end
  if spec.y_label then cv:text(pad, yy, spec.y_label, C.text, ts) end
  if spec.x_label then
    cv:text(math.max(pad, right - font.width(spec.x_label, ts)), H - legend_h - pad - th + 1, spec.x_label, C.text, ts)
  end

  -- inf bands, grid, ticks
  if inf_y then
    cv:fill(left, inf_y - band, right, inf_y + band, C.inf_band)
    cv:text(left - 6 - font.width("inf", ts), inf_y - math.floor(th / 2), "inf", C.text, ts)
  end
  if ninf_y then
    cv:fill(left, ninf_y - band, right, ninf_y + band, C.inf_band)
    cv:text(left - 6 - font.width("-inf", ts), ninf_y - math.floor(th / 2), "-inf", C.text, ts)
  end
  for i, v in ipairs(yticks) do
    local y = py(v)
    cv:fill(left + 1, y, right, y, C.grid)
    cv:fill(left - 4, y, left, y, C.axis)
    cv:text(left - 6 - font.width(ylabels[i], ts), y - math.floor(th / 2), ylabels[i], C.text, ts)
  end
  for _, v in ipairs(xticks) do
    local x = px(v)
    cv:fill(x, top, x, bottom - 1, C.grid)
    cv:fill(x, bottom, x, bottom + 4, C.axis)
    local s = chart.format_tick(v, xs)
    cv:text(x - math.floor(font.width(s, ts) / 2), bottom + 7, s, C.text, ts)
  end
  cv:fill(left, top, left, bottom, C.axis)
  cv:fill(left, bottom, right, bottom, C.axis)

  -- lines, then labels, then points (points stay visible)
  for i, s in ipairs(spec.series) do
    if s.line and #s.points > 1 then
      local prev
      for _, p in ipairs(s.points) do
        if p.y == p.y then
          local cur = {px(p.x), py(p.y)}
          if prev then cv:line(prev[1], prev[2], cur[1], cur[2], color_of(i, s), 2) end
          prev = cur
        end
      end
    end
  end
  local boxes = {}
  local lh = font.height(ls)
  local function free(b)
    if b[1] < left + 1 or b[3] > W - 1 or b[2] < 1 or b[4] > H - 1 then return false end
    for _, o in ipairs(boxes) do
      if b[1] <= o[3] and o[1] <= b[3] and b[2] <= o[4] and o[2] <= b[4] then return false end
    end
    return true
  end
  for i, s in ipairs(spec.series) do
    for _, p in ipairs(s.points) do
      if p.label and p.label ~= "" and p.y == p.y then
        local x, y = px(p.x), py(p.y)
        local w = font.width(p.label, ls)
        local d = radius + 3
        local tries = {{x + d, y - math.floor(lh / 2)}, {x - d - w, y - math.floor(lh / 2)},
                       {x - math.floor(w / 2), y - d - lh}, {x - math.floor(w / 2), y + d}}
        local pick
        for _, t in ipairs(tries) do
          local b = {t[1] - 1, t[2] - 1, t[1] + w, t[2] + lh}
          if free(b) then pick = t; boxes[#boxes + 1] = b; break end
        end
        pick = pick or tries[1]
        local c = color_of(i, s)
        cv:text(pick[1], pick[2], p.label, {math.floor(c[1] * 0.6), math.floor(c[2] * 0.6), math.floor(c[3] * 0.6)}, ls)
      end
    end
  end
  for i, s in ipairs(spec.series) do
    for _, p in ipairs(s.points) do
      if p.y == p.y then cv:disc(px(p.x), py(p.y), radius, color_of(i, s), C.outline) end
    end
  end

  local legend
  if #legend_items > 0 then
    local y0 = H - legend_h + 1
    legend = {y = y0, row = th + 6, swatch = th, items = legend_items}
    for _, it in ipairs(legend_items) do
      local y = y0 + it.row * (th + 6)
      it.y = y
      cv:fill(it.x, y, it.x + th - 1, y + th - 1, it.color)
      cv:text(it.x + th + 4, y, it.name, C.text, ts)
    end
  end

  local frame = {left = left, right = right, top = top, bottom = bottom, x_lo = x_lo, x_hi = x_hi, y_lo = y_lo,
                 y_hi = y_hi, inf_y = inf_y, ninf_y = ninf_y, px = px, py = py, x_ticks = xticks, y_ticks = yticks,
                 legend = legend}
  return cv:tensor(), frame
end

return chart
