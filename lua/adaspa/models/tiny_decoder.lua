-- adaspa.models.tiny_decoder: the tiny model's latent decoder (recipes/tools/tinyvideo/model.py,
-- Decoder), run with adaspa's ops. Model-space latent [C, T, h, w] -> frames [4T - 3, 8h, 8w, 3]
-- (RGB, about -1..1; clamp before showing). Per latent token: lin_in; `mix` blocks
-- x += sum over 7 taps of Linear_tap(GELU(LN(x))) read at the (t, h, w) neighbour of the tap (zero
-- outside the grid); MLP blocks x += fc2(GELU(fc1(LN(x)))); lin_out(LN(x)) = 4 frames x 8 x 8
-- pixels x RGB; the first three frames of the result are the encoder's padding and are dropped.
--
--   local td = require "adaspa.models.tiny_decoder"
--   local dec = td.new(weights, {dim=, mix=, mlp=})   -- weights: name -> tensor (keys under decoder.)
--   local frames = dec:decode(latent)
local adaspa = require "adaspa"

local td = {}
local EPS = 1e-6
-- (dt, dh, dw) read offsets of the taps, in the order of model.py's TAPS
td.TAPS = {{0, 0, 0}, {-1, 0, 0}, {1, 0, 0}, {0, -1, 0}, {0, 1, 0}, {0, 0, -1}, {0, 0, 1}}

local Dec = {}
Dec.__index = Dec

function td.new(weights, cfg)
  local self = setmetatable({w = weights, cfg = cfg}, Dec)
  for _, n in ipairs({"lin_in.weight", "lin_out.weight", "norm.weight"}) do
    if not weights[n] then error("tiny_decoder: missing weight decoder." .. n, 2) end
  end
  self.channels = weights["lin_in.weight"]:shape()[2]
  return self
end

function Dec:lin(x, name, opts)
  return adaspa.linear(x, self.w[name .. ".weight"], self.w[name .. ".bias"], opts)
end

function Dec:ln(x, name)
  return adaspa.layernorm(x, EPS, self.w[name .. ".weight"], self.w[name .. ".bias"])
end

-- y [n1, a, b, D]: out[i] = y[i + d] along dimension 1 (d = -1 or 1), zero outside; nil when all zero.
local function shift1(y, d)
  local s = y:shape()
  if s[1] == 1 then return nil end
  local z = adaspa.zeros({1, s[2], s[3], s[4]}, {dtype = y:dtype(), device = y:device()})
  if d < 0 then return adaspa.concat({z, y:narrow(1, 1, s[1] - 1)}) end
  return adaspa.concat({y:narrow(1, 2, s[1] - 1), z})
end

-- y [T, h, w, D] read at offset (dt, dh, dw): one of them is nonzero.
local function shifted(y, tap)
  if tap[1] ~= 0 then return shift1(y, tap[1]) end
  if tap[2] ~= 0 then
    local r = shift1(y:permute({2, 1, 3, 4}):contiguous(), tap[2])
    return r and r:permute({2, 1, 3, 4}):contiguous()
  end
  local r = shift1(y:permute({3, 1, 2, 4}):contiguous(), tap[3])
  return r and r:permute({2, 3, 1, 4}):contiguous()
end

function Dec:decode(latent)
  local cfg = self.cfg
  local shape = latent:shape()
  if #shape ~= 4 or shape[1] ~= self.channels then
    error(string.format("tiny_decoder: latent must be [%d, T, h, w], got [%s]", self.channels,
      table.concat(shape, ", ")), 2)
  end
  local C, T, h, w = unpack(shape)
  local N = T * h * w
  local x = self:lin(latent:permute({2, 3, 4, 1}):contiguous():reshape({N, C}), "lin_in")
  local D = x:shape()[2]
  for i = 0, cfg.mix - 1 do
    local p = "mix." .. i .. "."
    local y = adaspa.gelu_tanh(self:ln(x, p .. "norm"))
    local acc = self:lin(y, p .. "taps.0")
    for k = 2, #td.TAPS do
      local yk = adaspa.linear(y, self.w[p .. "taps." .. (k - 1) .. ".weight"], nil):reshape({T, h, w, D})
      local s = shifted(yk, td.TAPS[k])
      if s then adaspa.add(acc, s:reshape({N, D}), {out = acc}) end
    end
    x = adaspa.add(x, acc)
  end
  for i = 0, cfg.mlp - 1 do
    local p = "mlp." .. i .. "."
    x = adaspa.add(x, self:lin(self:lin(self:ln(x, p .. "norm"), p .. "fc1", {act = "gelu_tanh"}), p .. "fc2"))
  end
  local px = self:lin(self:ln(x, "norm"), "lin_out")                            -- [N, 4 x 8 x 8 x 3]
  -- (T, h, w, f, py*px*c) -> (T, f, h, w, py*px*c) -> (F, h, py, w, px*c) -> [F, 8h, 8w, 3]
  local a = px:reshape({T, h, w, 4, 192}):permute({1, 4, 2, 3, 5}):contiguous()
  local b = a:reshape({4 * T, h, w, 8, 24}):permute({1, 2, 4, 3, 5}):contiguous()
  return b:reshape({4 * T, 8 * h, 8 * w, 3}):narrow(1, 4, 4 * T - 3):contiguous()
end

return td
