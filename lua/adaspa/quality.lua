-- adaspa.quality: how far a sparse run is from the dense run of the same seed.
--   psnr(a, b [, range])      10 log10(range^2 / MSE); range defaults to the span of b (the reference)
--   ssim(a, b [, range])      mean SSIM over 8x8 windows (stride 4) of the last two dimensions,
--                             averaged over the leading ones (channels, frames); K1 = 0.01, K2 = 0.03
--   rel_l2(a, b [, absolute]) ||a - b|| / ||b||, in f32 on b's device (only row sums travel
--                             to the host); when ||b|| is 0: ||a - b|| with absolute, else
--                             ||a - b|| / 1e-150
-- a, b: tensors of one shape (any dtype or device); b is the reference.
local adaspa = require "adaspa"

local quality = {}

local function values(t) return t:to("cpu"):to("f32"):contiguous():reshape({-1}):totable() end

function quality.psnr(a, b, range)
  local x, y = values(a), values(b)
  assert(#x == #y, "quality.psnr: shapes differ")
  local mse, lo, hi = 0, math.huge, -math.huge
  for i = 1, #x do
    local d = x[i] - y[i]
    mse = mse + d * d
    lo, hi = math.min(lo, y[i]), math.max(hi, y[i])
  end
  mse = mse / #x
  range = range or (hi - lo)
  if mse == 0 then return math.huge end
  return 10 * math.log10(range * range / mse)
end

function quality.ssim(a, b, range)
  local shape = b:shape()
  assert(#shape >= 2, "quality.ssim: need at least 2 dimensions")
  local x, y = values(a), values(b)
  assert(#x == #y, "quality.ssim: shapes differ")
  local H, W = shape[#shape - 1], shape[#shape]
  local planes = #y / (H * W)
  if not range then
    local lo, hi = math.huge, -math.huge
    for i = 1, #y do lo, hi = math.min(lo, y[i]), math.max(hi, y[i]) end
    range = hi - lo
  end
  local c1, c2 = (0.01 * range) ^ 2, (0.03 * range) ^ 2
  local win = math.min(8, H, W)
  local stride = math.max(1, math.floor(win / 2))
  local total, count = 0, 0
  for p = 0, planes - 1 do
    local base = p * H * W
    for i0 = 0, H - win, stride do
      for j0 = 0, W - win, stride do
        local sx, sy, sxx, syy, sxy = 0, 0, 0, 0, 0
        for i = i0, i0 + win - 1 do
          local row = base + i * W
          for j = j0, j0 + win - 1 do
            local u, v = x[row + j + 1], y[row + j + 1]
            sx, sy, sxx, syy, sxy = sx + u, sy + v, sxx + u * u, syy + v * v, sxy + u * v
          end
        end
        local n = win * win
        local mx, my = sx / n, sy / n
        local vx, vy, cxy = sxx / n - mx * mx, syy / n - my * my, sxy / n - mx * my
        total = total + ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        count = count + 1
      end
    end
  end
  return total / count
end

-- Sum of squares of a tensor, reduced on its device. On the host: t:norm() (accumulated in
-- double). On a GPU, where tensor reductions would copy the whole tensor to the host, the squares
-- are summed per row there (a product with a ones vector) and only the row sums travel.
local function sumsq(t)
  if t:device() == "cpu" then
    local n = t:norm()
    return n * n
  end
  local c = t:is_contiguous() and t or t:contiguous()
  local shape = c:shape()
  local rows = #shape >= 2 and shape[1] or 1
  local x = c:reshape({rows, c:numel() / rows})
  local sq = adaspa.mul(x, x)
  local ones = adaspa.ones({x:shape()[2], 1}, {device = c:device()})
  local r = adaspa.matmul(sq, ones)
  local total = r:sum()
  x:free(); sq:free(); ones:free(); r:free()
  if c ~= t then c:free() end
  return total
end

function quality.rel_l2(a, b, absolute)
  assert(a:numel() == b:numel(), "quality.rel_l2: shapes differ")
  local x = a:to("f32", b:device())   -- a itself when it is f32 on b's device already
  local y = b:to("f32")               -- b itself when it is f32
  local neg = adaspa.scale(y, -1)
  local d = adaspa.add(x, neg)
  local num, den = sumsq(d), sumsq(y)
  neg:free(); d:free()
  if x ~= a then x:free() end
  if y ~= b then y:free() end
  if absolute and den == 0 then return math.sqrt(num) end
  return math.sqrt(num / math.max(den, 1e-300))
end

return quality
