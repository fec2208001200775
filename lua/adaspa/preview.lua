-- adaspa.preview: HunyuanVideo latents to pictures a person can look at
-- (../shared/reference/hunyuan.md: model-space latent to RGB, one latent frame -> one picture).
--   rgb = sum_c latent[c] * F[c] + bias, clamped to [-1, 1], mapped to 0..255;
--   each latent pixel stands for 8x8 video pixels, so frames are upscaled (nearest) for viewing.
local adaspa = require "adaspa"
local font = require "adaspa.font"

local preview = {}

preview.factors = {
  {-0.0395, -0.0331, 0.0445}, {0.0696, 0.0795, 0.0518}, {0.0135, -0.0945, -0.0282}, {0.0108, -0.0250, -0.0765},
  {-0.0209, 0.0032, 0.0224}, {-0.0804, -0.0254, -0.0639}, {-0.0991, 0.0271, -0.0669}, {-0.0646, -0.0422, -0.0400},
  {-0.0696, -0.0595, -0.0894}, {-0.0799, -0.0208, -0.0375}, {0.1166, 0.1627, 0.0962}, {0.1165, 0.0432, 0.0407},
  {-0.2315, -0.1920, -0.1355}, {-0.0270, 0.0401, -0.0821}, {-0.0616, -0.0997, -0.0727}, {0.0249, -0.0469, -0.1703},
}
preview.bias = {0.0259, -0.0192, -0.0761}

-- latent [16, T, H, W] (any float dtype or device) -> list of T u8 tensors [H*up, W*up, 3].
function preview.frames(latent, up)
  up = up or 8
  local shape = latent:shape()
  assert(#shape == 4 and shape[1] == 16, "preview.frames: latent must be [16, T, H, W]")
  local C, T, H, W = shape[1], shape[2], shape[3], shape[4]
  local F = adaspa.tensor(preview.factors)                                   -- [16, 3]
  local flat = latent:to("cpu"):to("f32"):contiguous():reshape({C, T * H * W})
  local v = adaspa.matmul(flat:transpose(1, 2), F):reshape({-1}):totable()  -- [T*H*W*3]
  local b1, b2, b3 = preview.bias[1], preview.bias[2], preview.bias[3]
  for i = 1, #v, 3 do
    for c = 0, 2 do
      local x = v[i + c] + (c == 0 and b1 or c == 1 and b2 or b3)
      if x > 1 then x = 1 elseif x < -1 then x = -1 end
      v[i + c] = math.floor((x + 1) * 127.5 + 0.5)
    end
  end
  local small = adaspa.tensor(v, {dtype = "u8"}):reshape({T, H, W, 3})
  local frames = {}
  for t = 1, T do
    local f = small:narrow(1, t, 1):reshape({H, 1, W, 1, 3})
    frames[t] = f:expand({H, up, W, up, 3}):contiguous():reshape({H * up, W * up, 3})
  end
  return frames
end

-- Decoded video frames (a float tensor [F, H, W, 3], RGB about -1..1, any device) -> list of F u8
-- tensors [H, W, 3]: clamped to [-1, 1], mapped to 0..255 (rounded).
function preview.rgb_frames(video)
  local shape = video:shape()
  if #shape ~= 4 or shape[4] ~= 3 then
    error(string.format("preview.rgb_frames: frames must be [F, H, W, 3], got [%s]", table.concat(shape, ", ")), 2)
  end
  local F, H, W = shape[1], shape[2], shape[3]
  local all = video:to("cpu"):to("f32"):contiguous()
  local out = {}
  for f = 1, F do
    local v = all:narrow(1, f, 1):reshape({-1}):totable()
    for i = 1, #v do
      local x = v[i]
      if x ~= x then x = -1 elseif x > 1 then x = 1 elseif x < -1 then x = -1 end
      v[i] = math.floor((x + 1) * 127.5 + 0.5)
    end
    out[f] = adaspa.tensor(v, {dtype = "u8"}):reshape({H, W, 3})
  end
  return out
end

-- Frames side by side in a grid of `cols` columns with a 4-pixel gap: one u8 [Hs, Ws, 3].
function preview.contact_sheet(frames, cols)
  local n = #frames
  cols = cols or math.min(n, 8)
  local rows = math.ceil(n / cols)
  local s = frames[1]:shape()
  local h, w, gap = s[1], s[2], 4
  local sheet = adaspa.full({rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap, 3}, 255, {dtype = "u8"})
  for i, f in ipairs(frames) do
    local r, c = math.floor((i - 1) / cols), (i - 1) % cols
    sheet:narrow(1, gap + r * (h + gap) + 1, h):narrow(2, gap + c * (w + gap) + 1, w):copy(f)
  end
  return sheet
end

-- Draws `text` in black on a yellow banner at the top-left of img (u8 [H, W, 3], in place),
-- clipped to the image, in adaspa.font's 5x7 glyphs with one dot of margin. scale: pixels per
-- glyph dot (2).
function preview.label(img, text, scale)
  scale = scale or 2
  for i = 1, #text do
    local ch = text:sub(i, i)
    if not font.glyph(ch) then error(string.format("preview.label: no glyph for %q (byte %d)", ch, ch:byte()), 2) end
  end
  local banner = font.render(text, {scale = scale, fg = {0, 0, 0}, bg = {255, 221, 0}, pad = 1})
  local H, W = img:shape()[1], img:shape()[2]
  local s = banner:shape()
  local bh, bw = math.min(H, s[1]), math.min(W, s[2])
  img:narrow(1, 1, bh):narrow(2, 1, bw):copy(banner:narrow(1, 1, bh):narrow(2, 1, bw))
  return img
end

return preview
