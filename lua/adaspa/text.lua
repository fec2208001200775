-- adaspa.text: text conditioning: states [L, text_dim] (right-padded, `valid` leading tokens) and,
-- for HunyuanVideo, pooled [1, pooled_dim]. Either from a file computed by the real text encoders
-- elsewhere (safetensors with text_states [L, D], text_mask [L], text_pooled [P], and optionally
-- negative_text_states / negative_text_mask / negative_text_pooled for classifier-free
-- guidance's unconditional branch), or deterministic synthetic embeddings derived from the
-- prompt string. text.read is the shared reader any model's conditioning uses.
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

-- The branch of an embeddings file under prefix ("" or "negative_"): {states [L, D], valid,
-- pooled [1, P] or nil} checked against L, D and P (P nil: no pooled vector). With opts.optional,
-- a file without <prefix>text_states gives nil. opts: dtype, device, L, D, P, optional.
function text.read(path, opts)
  local p = opts.prefix or ""
  local okinfo, info = pcall(adaspa.safetensors.info, path)
  if not okinfo then error("text.embeds: " .. tostring(info), 0) end
  local have = {}
  for _, e in ipairs(info) do have[e.name] = e end
  local names = {p .. "text_states", p .. "text_mask"}
  if opts.P then names[3] = p .. "text_pooled" end
  if not have[names[1]] and opts.optional then return nil end
  for _, n in ipairs(names) do
    if not have[n] then
      error(string.format("text.embeds: %s: no tensor %s (the file holds %s)", path, n, (function()
        local ks = {}
        for _, e in ipairs(info) do ks[#ks + 1] = e.name end
        return #ks > 0 and table.concat(ks, ", ") or "nothing"
      end)()), 0)
    end
  end
  local ok, t = pcall(adaspa.safetensors.load, path, {names = names})
  if not ok then error("text.embeds: " .. tostring(t), 0) end
  local L, D, P = opts.L, opts.D, opts.P
  local function want(name, shape)
    local got = t[name]:shape()
    if table.concat(got, ",") ~= table.concat(shape, ",") then
      error(string.format("text.embeds: %s: %s has shape [%s], expected [%s]", path, name,
        table.concat(got, ", "), table.concat(shape, ", ")), 0)
    end
  end
  want(names[1], {L, D}); want(names[2], {L})
  if P then want(names[3], {P}) end
  local mask = t[names[2]]:to("f32"):totable()
  local valid = 0
  for i = 1, L do
    if mask[i] ~= 0 then
      if valid ~= i - 1 then error(string.format("text.embeds: %s: %s is not right-padded (1s then 0s)", path, names[2]), 0) end
      valid = i
    end
  end
  if valid == 0 then error(string.format("text.embeds: %s: %s has no valid token", path, names[2]), 0) end
  local dt, dev = opts.dtype or "f32", opts.device or "cpu"
  return {
    states = t[names[1]]:to(dt):to(dev),
    pooled = P and t[names[3]]:reshape({1, P}):to(dt):to(dev) or nil,
    valid = valid,
  }
end

-- HunyuanVideo's embeddings from a file (text_states [text_len, text_dim], text_mask, text_pooled
-- [pooled_dim]); checks names, shapes and that the mask is 1s then 0s. opts.prefix = "negative_"
-- reads the unconditional branch's entries.
function text.load(path, cfg, opts)
  opts = opts or {}
  local r = text.read(path, {prefix = opts.prefix, L = cfg.text_len, D = cfg.text_dim, P = cfg.pooled_dim,
                             dtype = opts.dtype, device = opts.device, optional = opts.optional})
  if not r then return nil end
  r.source = string.format("%s (%s%d valid tokens)", path, opts.prefix and opts.prefix ~= "" and (opts.prefix .. "text: ") or "",
    r.valid)
  return r
end

return text
