-- adaspa.canvas: an RGB picture as a Lua table of pixels, for charts and text labels, turned
-- into a u8 [h, w, 3] tensor at the end.
--   canvas.new(w, h [, bg = white]) -> a canvas with set(x, y, c), fill(x0, y0, x1, y1, c),
--   line(x0, y0, x1, y1, c [, thick]), disc(cx, cy, r, c [, edge]), text(x, y, s [, c, scale])
--   and tensor(); x is the column, y the row, both 1-based; colors are {r, g, b}; drawing
--   outside the canvas is clipped.
local adaspa = require "adaspa"
local font = require "adaspa.font"

local canvas = {}

local Canvas = {}
Canvas.__index = Canvas

function canvas.new(w, h, bg)
  bg = bg or {255, 255, 255}
  local px = {}
  for i = 0, w * h - 1 do px[3 * i + 1], px[3 * i + 2], px[3 * i + 3] = bg[1], bg[2], bg[3] end
  return setmetatable({w = w, h = h, px = px}, Canvas)
end

-- Pixel (x = column, y = row), 1-based; outside the canvas: ignored.
function Canvas:set(x, y, c)
  if x < 1 or y < 1 or x > self.w or y > self.h then return end
  local j = ((y - 1) * self.w + (x - 1)) * 3
  local px = self.px
  px[j + 1], px[j + 2], px[j + 3] = c[1], c[2], c[3]
end

-- Filled rectangle, corners inclusive, clipped.
function Canvas:fill(x0, y0, x1, y1, c)
  if x0 > x1 then x0, x1 = x1, x0 end
  if y0 > y1 then y0, y1 = y1, y0 end
  x0, y0 = math.max(1, math.floor(x0)), math.max(1, math.floor(y0))
  x1, y1 = math.min(self.w, math.floor(x1)), math.min(self.h, math.floor(y1))
  local px, w = self.px, self.w
  local r, g, b = c[1], c[2], c[3]
  for y = y0, y1 do
    local j = ((y - 1) * w + (x0 - 1)) * 3
    for _ = x0, x1 do
      px[j + 1], px[j + 2], px[j + 3] = r, g, b
      j = j + 3
    end
  end
end

-- A line from (x0, y0) to (x1, y1) (Bresenham), `thick` pixels wide (1).
function Canvas:line(x0, y0, x1, y1, c, thick)
  thick = thick or 1
  local lo, hi = -math.floor((thick - 1) / 2), math.floor(thick / 2)
  x0, y0, x1, y1 = math.floor(x0 + 0.5), math.floor(y0 + 0.5), math.floor(x1 + 0.5), math.floor(y1 + 0.5)
  local dx, dy = math.abs(x1 - x0), -math.abs(y1 - y0)
  local sx, sy = x0 < x1 and 1 or -1, y0 < y1 and 1 or -1
  local err = dx + dy
  while true do
    if thick == 1 then self:set(x0, y0, c) else self:fill(x0 + lo, y0 + lo, x0 + hi, y0 + hi, c) end
    if x0 == x1 and y0 == y1 then break end
    local e2 = 2 * err
    if e2 >= dy then err = err + dy; x0 = x0 + sx end
    if e2 <= dx then err = err + dx; y0 = y0 + sy end
  end
end

-- A filled disc of radius r around (cx, cy), with an outline of color `edge` if given.
function Canvas:disc(cx, cy, r, c, edge)
  for y = -r, r do
    for x = -r, r do
      local d = x * x + y * y
      if d <= r * r + r then
        local on_edge = edge and d > (r - 1) * (r - 1) + (r - 1)
        self:set(cx + x, cy + y, on_edge and edge or c)
      end
    end
  end
end

-- Text in adaspa.font's glyphs with its top-left dot at (x, y); returns the x past it.
function Canvas:text(x, y, s, c, scale) return font.draw(self, x, y, s, c or {0, 0, 0}, scale) end

function Canvas:tensor()
  return adaspa.tensor(self.px, {dtype = "u8"}):reshape({self.h, self.w, 3})
end

canvas.Canvas = Canvas

return canvas
