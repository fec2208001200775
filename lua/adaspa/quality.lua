-- adaspa.quality: how far a sparse run is from the dense run of the same seed.
--   psnr(a, b [, range])      10 log10(range^2 / MSE); range defaults to the span of b (the reference)
--   ssim(a, b [, range])      mean SSIM over 8x8 windows (stride 4) of the last two dimensions,
--                             averaged over the leading ones (channels, frames); K1 = 0.01, K2 = 0.03
--   rel_l2(a, b)              ||a - b|| / ||b||
-- a, b: tensors of one shape (any dtype or device); b is the reference.
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

function quality.rel_l2(a, b)
  local x, y = values(a), values(b)
  local num, den = 0, 0
  for i = 1, #y do
    local d = x[i] - y[i]
    num, den = num + d * d, den + y[i] * y[i]
  end
  return math.sqrt(num / math.max(den, 1e-300))
end

return quality
