-- adaspa.text: the text conditioning HunyuanVideo takes: states [L, text_dim] (right-padded,
-- `valid` leading tokens), pooled [1, pooled_dim]. Either from a file computed by the real text
-- encoders elsewhere (safetensors with text_states [L, D], text_mask [L], text_pooled [P]), or
-- deterministic synthetic embeddings derived from the prompt string.
local adaspa = require "adaspa"

local text = {}

-- 32-bit FNV-1a of a string (a stable seed on every machine).
function text.hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = bit.tobit(h * 16777619 % 2 ^ 32)
  end
  return h % 2 ^ 32
end

-- Synthetic embeddings: seeded by the prompt; valid = number of words + 2 (clamped to [1, L]).
function text.synthetic(prompt, cfg, opts)
  opts = opts or {}
  local seed = text.hash(prompt)
  local words = 0
  for _ in prompt:gmatch("%S+") do words = words + 1 end
  local L = cfg.text_len
  local o = {dtype = opts.dtype or "f32", device = opts.device or "cpu"}
  return {
    states = adaspa.randn({L, cfg.text_dim}, {seed = seed, dtype = o.dtype, device = o.device}),
    pooled = adaspa.randn({1, cfg.pooled_dim}, {seed = seed + 1, dtype = o.dtype, device = o.device}),
    valid = math.max(1, math.min(L, words + 2)),
    source = string.format("synthetic from the prompt %q (seed %d)", prompt, seed),
  }
end

-- Embeddings from a file; checks names, shapes and that the mask is 1s then 0s.
function text.load(path, cfg, opts)
  opts = opts or {}
  local ok, t = pcall(adaspa.safetensors.load, path, {names = {"text_states", "text_mask", "text_pooled"}})
  if not ok then error("text.embeds: " .. tostring(t), 0) end
  local L, D, P = cfg.text_len, cfg.text_dim, cfg.pooled_dim
  local function want(name, shape)
    local got = t[name]:shape()
    if table.concat(got, ",") ~= table.concat(shape, ",") then
      error(string.format("text.embeds: %s: %s has shape [%s], expected [%s]", path, name,
        table.concat(got, ", "), table.concat(shape, ", ")), 0)
    end
  end
  want("text_states", {L, D}); want("text_mask", {L}); want("text_pooled", {P})
  local mask = t.text_mask:to("f32"):totable()
  local valid = 0
  for i = 1, L do
    if mask[i] ~= 0 then
      if valid ~= i - 1 then error(string.format("text.embeds: %s: text_mask is not right-padded (1s then 0s)", path), 0) end
      valid = i
    end
  end
  if valid == 0 then error(string.format("text.embeds: %s: text_mask has no valid token", path), 0) end
  local dt, dev = opts.dtype or "f32", opts.device or "cpu"
  return {
    states = t.text_states:to(dt):to(dev),
    pooled = t.text_pooled:reshape({1, P}):to(dt):to(dev),
    valid = valid,
    source = string.format("%s (%d valid tokens)", path, valid),
  }
end

return text
