-- adaspa.models.tiny: the small trained video model of recipes/tools/tinyvideo (text encoder,
-- HunyuanVideo DiT, latent decoder) from ONE safetensors file: the DiT under the original
-- checkpoint's names, the text encoder under text_encoder., the decoder under decoder.; its
-- configuration in flat metadata entries "tiny.<path>" (and the vocabulary in "tiny.vocab").
--
--   local tiny = require "adaspa.models.tiny"
--   local m = tiny.load(path)                   -- {cfg=, meta=, vocab=, text=, decoder=, dit=}
--   local text = m.text:encode(prompt)          -- for m.dit:forward(x, t, text, guidance, ctx)
--   local frames = m.decoder:decode(latent)     -- [F, H, W, 3]
local adaspa = require "adaspa"
local hy = require "adaspa.models.hunyuan"
local tt = require "adaspa.models.tiny_text"
local td = require "adaspa.models.tiny_decoder"

local tiny = {}

-- The "tiny.*" metadata entries as a nested table (numbers converted, comma lists split).
function tiny.config(meta)
  local cfg = {}
  for k, v in pairs(meta) do
    local path = k:match("^tiny%.(.+)$")
    if path and path ~= "vocab" then
      local t, parts = cfg, {}
      for p in path:gmatch("[^%.]+") do parts[#parts + 1] = p end
      for i = 1, #parts - 1 do
        t[parts[i]] = t[parts[i]] or {}
        t = t[parts[i]]
      end
      local val
      if v:find(",") then
        val = {}
        for x in v:gmatch("[^,]+") do val[#val + 1] = tonumber(x) or x end
      else
        val = tonumber(v) or v
      end
      t[parts[#parts]] = val
    end
  end
  return cfg
end

local function sub(weights, prefix)
  local out = {}
  for k, v in pairs(weights) do
    if k:sub(1, #prefix) == prefix then out[k:sub(#prefix + 1)] = v end
  end
  return out
end

-- load(path [, {dtype = "f32", device = "cpu"}])
function tiny.load(path, opts)
  opts = opts or {}
  local raw, meta = adaspa.safetensors.load(path)
  if meta.format ~= "adaspa-tiny-1" then
    error(string.format("tiny.load: %s is not a tiny model export (metadata format %s, expected adaspa-tiny-1;"
      .. " write one with recipes/tools/tinyvideo/train.py)", path, tostring(meta.format)), 2)
  end
  local dtype, device = opts.dtype or "f32", opts.device or "cpu"
  local w = {}
  for k, t in pairs(raw) do
    local u = t:to(dtype)
    w[k] = u:to(device)
  end
  local c = tiny.config(meta)
  local vocab = {}
  for word in (meta["tiny.vocab"] or ""):gmatch("%S+") do vocab[#vocab + 1] = word end
  local d = c.dit
  local cfg = hy.config("small", {
    hidden = d.hidden, heads = d.heads, head_dim = d.head_dim, mlp_ratio = d.mlp_ratio,
    layers = {double = d.layers.double, single = d.layers.single, refiner = d.layers.refiner},
    in_channels = d.in_channels, text_dim = d.text_dim, text_len = d.text_len, pooled_dim = d.pooled_dim,
    rope_axes = d.rope_axes, rope_theta = d.rope_theta, eps = d.eps,
    video = {width = c.video.width, height = c.video.height, frames = c.video.frames},
  })
  local dit_w = {}
  for k, t in pairs(w) do
    if not k:find("^text_encoder%.") and not k:find("^decoder%.") then dit_w[k] = t end
  end
  return {
    cfg = cfg, tiny = c, meta = meta, vocab = vocab, weights = w,
    text = tt.new(sub(w, "text_encoder."), {dim = c.text.dim, layers = c.text.layers, heads = c.text.heads,
      max_len = c.text.max_len, text_len = d.text_len}, vocab),
    decoder = td.new(sub(w, "decoder."), {dim = c.ae.dec_dim, mix = c.ae.dec_mix, mlp = c.ae.dec_mlp}),
    dit = hy.new(cfg, dit_w),
  }
end

return tiny
