-- adaspa.models.wan: the Wan2.1 text-to-video transformer (diffusers' WanTransformer3DModel)
-- built from core ops.
--
--   local wan = require "adaspa.models.wan"
--   local cfg = wan.config("small", {layers = 1})                 -- a preset plus overrides
--   local w = wan.load_weights("wan.safetensors", cfg)            -- or wan.synthetic_weights(cfg)
--   local c = wan.conditioning(cfg, {prompt = "a fox", guidance = 5})
--   local model = wan.new(cfg, w)
--   local v = model:forward(x, t, c.cond, ctx)                    -- x [16, T, H, W] -> velocity
--
-- Weights use diffusers' names (the original release's names are converted: wan.convert_keys).
-- Per block: self-attention (LayerNorm without affine, modulated by the time projection plus the
-- block's scale_shift_table; q, k, v linears; RMSNorm over the whole width on q and k; 3D RoPE,
-- theta 10000, head_dim split t/h/w as head_dim - 4 (head_dim // 6), 2 (head_dim // 6) twice;
-- gated residual), cross-attention to the embedded text (affine LayerNorm, RMSNorm on q and k, no
-- RoPE, dense, plain residual), feed-forward (GELU tanh, modulated and gated). Self-attention
-- goes through ctx:attention(q, k, v, info), info = {layer = block + 1, kind = "self", index =
-- block, kv_valid = n, n_img = n, n_txt = 0, grid = {T, H, W}}; cross-attention never does.
local adaspa = require "adaspa"
local parallel = require "adaspa.parallel"

local M = {}

M.name = "wan"
M.doc = "Wan2.1 text-to-video transformer (1.3B, 14B; diffusers' WanTransformer3DModel), true CFG"

local common = {
  in_channels = 16, out_channels = 16, text_dim = 4096, text_len = 512, freq_dim = 256, eps = 1e-6,
  rope_theta = 10000, cross_attn_norm = true,
}

local function with_common(p)
  for k, v in pairs(common) do if p[k] == nil then p[k] = v end end
  return p
end

M.presets = {
  ["1.3B"] = with_common {dim = 1536, heads = 12, layers = 30, ffn = 8960, shift = 3.0,
    video = {width = 832, height = 480, frames = 81}},
  ["14B"] = with_common {dim = 5120, heads = 40, layers = 40, ffn = 13824, shift = 5.0,
    video = {width = 1280, height = 720, frames = 81}},
  small = with_common {dim = 128, heads = 2, layers = 2, ffn = 256, shift = 5.0,
    video = {width = 256, height = 192, frames = 9}},
}
-- model.preset = "auto" (adaspa.models): the real 14B on a GPU, small on the CPU
M.default_preset = "14B"
M.cpu_preset = "small"

-- Flow matching (Euler) with Wan's shift, 50 steps, true classifier-free guidance 5.0. Wan's
-- recommended shift is 5.0 at 720p and 3.0 at 480p (cfg.shift of each preset).
M.sampler_defaults = {shift = 5.0, steps = 50, guidance = {kind = "cfg", scale = 5.0}}
M.fps = 16
-- Runs sequence-parallel over several processes (adaspa.parallel: ctx.sp; adaspa launch -n N).
M.sequence_parallel = true

-- Errors say "wan: " and what is wrong, without a Lua position (they reach users through jobs).
local function fail(fmt, ...) error("wan: " .. string.format(fmt, ...), 0) end

local deep_copy = require("adaspa.models.common").deep_copy

local function is_int(v, lo) return type(v) == "number" and v % 1 == 0 and v >= (lo or 1) end

-- The RoPE axes of a head size, as diffusers splits it: h = w = 2 (head_dim // 6), t the rest.
function M.rope_axes(head_dim)
  local hw = 2 * math.floor(head_dim / 6)
  return {head_dim - 2 * hw, hw, hw}
end

local INT_FIELDS = {"dim", "heads", "layers", "ffn", "in_channels", "out_channels", "text_dim", "text_len", "freq_dim"}

-- A preset's configuration with overrides merged in (video merges field by field); no preset:
-- "small".
function M.config(preset, overrides)
  preset = preset or M.cpu_preset
  local p = M.presets[preset]
  if not p then
    local names = {}
    for k in pairs(M.presets) do names[#names + 1] = k end
    table.sort(names)
    fail("unknown preset %q (presets: %s)", tostring(preset), table.concat(names, ", "))
  end
  if overrides ~= nil and type(overrides) ~= "table" then fail("overrides must be a table, got %s", type(overrides)) end
  local cfg = deep_copy(p)
  for k, v in pairs(overrides or {}) do
    if k == "video" and type(v) == "table" then
      for vk, vv in pairs(v) do cfg.video[vk] = vv end
    elseif cfg[k] == nil and k ~= "head_dim" then
      fail("unknown config field %q", tostring(k))
    else
      cfg[k] = deep_copy(v)
    end
  end
  cfg.preset = preset
  for _, f in ipairs(INT_FIELDS) do
    if not is_int(cfg[f]) then fail("%s must be a positive integer, got %s", f, tostring(cfg[f])) end
  end
  if cfg.dim % cfg.heads ~= 0 then fail("dim (%d) must be a multiple of heads (%d)", cfg.dim, cfg.heads) end
  local hd = cfg.dim / cfg.heads
  if cfg.head_dim ~= nil and cfg.head_dim ~= hd then
    fail("head_dim (%s) must equal dim / heads (%d / %d = %d)", tostring(cfg.head_dim), cfg.dim, cfg.heads, hd)
  end
  cfg.head_dim = hd
  if hd % 2 ~= 0 or hd < 6 then fail("head_dim (dim / heads = %d) must be even and at least 6 (3D RoPE)", hd) end
  cfg.rope_axes = M.rope_axes(hd)
  if type(cfg.eps) ~= "number" or cfg.eps <= 0 then fail("eps must be a positive number, got %s", tostring(cfg.eps)) end
  if type(cfg.shift) ~= "number" or cfg.shift <= 0 then fail("shift must be a positive number, got %s", tostring(cfg.shift)) end
  if type(cfg.cross_attn_norm) ~= "boolean" then fail("cross_attn_norm must be a boolean") end
  return cfg
end

-- Token grid {T, H, W} and latent shape {C, T, H, W} of a video {width, height, frames}: the VAE
-- divides time by 4 (T = (frames - 1) / 4 + 1) and space by 8, the patch is 1 x 2 x 2.
function M.grid(video, cfg)
  if type(video) ~= "table" then fail("video must be a table {width=, height=, frames=}, got %s", type(video)) end
  local w, h, f = video.width, video.height, video.frames
  if not (is_int(w) and is_int(h) and w % 16 == 0 and h % 16 == 0) then
    fail("video width and height must be positive multiples of 16 (VAE 8 x patch 2), got %sx%s", tostring(w), tostring(h))
  end
  if not (is_int(f) and (f - 1) % 4 == 0) then
    fail("video frames must be 4k + 1 (1, 5, 9, ..., 81), got %s", tostring(f))
  end
  local T = (f - 1) / 4 + 1
  local C = cfg and cfg.in_channels or 16
  return {T, h / 16, w / 16}, {C, T, h / 8, w / 8}
end

function M.attention_layers(cfg) return cfg.layers end

function M.tokens(cfg, video)
  local g = M.grid(video or cfg.video, cfg)
  return {n_img = g[1] * g[2] * g[3], n_txt = 0}
end

-- Every weight: diffusers' name -> shape.
function M.weight_shapes(cfg)
  local d, shapes = cfg.dim, {}
  local function lin(name, out, inp)
    shapes[name .. ".weight"] = {out, inp}
    shapes[name .. ".bias"] = {out}
  end
  shapes["patch_embedding.weight"] = {d, cfg.in_channels, 1, 2, 2}
  shapes["patch_embedding.bias"] = {d}
  lin("condition_embedder.time_embedder.linear_1", d, cfg.freq_dim)
  lin("condition_embedder.time_embedder.linear_2", d, d)
  lin("condition_embedder.time_proj", 6 * d, d)
  lin("condition_embedder.text_embedder.linear_1", d, cfg.text_dim)
  lin("condition_embedder.text_embedder.linear_2", d, d)
  for i = 0, cfg.layers - 1 do
    local p = "blocks." .. i .. "."
    for _, a in ipairs({"attn1", "attn2"}) do
      for _, l in ipairs({"to_q", "to_k", "to_v", "to_out.0"}) do lin(p .. a .. "." .. l, d, d) end
      shapes[p .. a .. ".norm_q.weight"] = {d}
      shapes[p .. a .. ".norm_k.weight"] = {d}
    end
    if cfg.cross_attn_norm then
      shapes[p .. "norm2.weight"] = {d}
      shapes[p .. "norm2.bias"] = {d}
    end
    lin(p .. "ffn.net.0.proj", cfg.ffn, d)
    lin(p .. "ffn.net.2", d, cfg.ffn)
    shapes[p .. "scale_shift_table"] = {1, 6, d}
  end
  lin("proj_out", cfg.out_channels * 4, d)
  shapes["scale_shift_table"] = {1, 2, d}
  return shapes
end

-- ---- key layouts -------------------------------------------------------------------------------

-- original release stem -> diffusers stem (top level)
local TOP = {
  ["time_embedding.0"] = "condition_embedder.time_embedder.linear_1",
  ["time_embedding.2"] = "condition_embedder.time_embedder.linear_2",
  ["text_embedding.0"] = "condition_embedder.text_embedder.linear_1",
  ["text_embedding.2"] = "condition_embedder.text_embedder.linear_2",
  ["time_projection.1"] = "condition_embedder.time_proj",
  ["head.head"] = "proj_out",
  ["patch_embedding"] = "patch_embedding",
  -- image-to-video parts (not run by this module; named so the error says what they are)
  ["img_emb.proj.0"] = "condition_embedder.image_embedder.norm1",
  ["img_emb.proj.1"] = "condition_embedder.image_embedder.ff.net.0.proj",
  ["img_emb.proj.3"] = "condition_embedder.image_embedder.ff.net.2",
  ["img_emb.proj.4"] = "condition_embedder.image_embedder.norm2",
}
-- inside blocks.N: original stem -> diffusers stem
local BLOCK = {
  ["self_attn.q"] = "attn1.to_q", ["self_attn.k"] = "attn1.to_k", ["self_attn.v"] = "attn1.to_v",
  ["self_attn.o"] = "attn1.to_out.0", ["self_attn.norm_q"] = "attn1.norm_q", ["self_attn.norm_k"] = "attn1.norm_k",
  ["cross_attn.q"] = "attn2.to_q", ["cross_attn.k"] = "attn2.to_k", ["cross_attn.v"] = "attn2.to_v",
  ["cross_attn.o"] = "attn2.to_out.0", ["cross_attn.norm_q"] = "attn2.norm_q", ["cross_attn.norm_k"] = "attn2.norm_k",
  ["cross_attn.k_img"] = "attn2.add_k_proj", ["cross_attn.v_img"] = "attn2.add_v_proj",
  ["cross_attn.norm_k_img"] = "attn2.norm_added_k",
  norm3 = "norm2",            -- the original's norm3 is the cross-attention norm (diffusers' norm2)
  norm2 = "norm3",            -- and its norm2 the feed-forward one (no affine: never stored)
  ["ffn.0"] = "ffn.net.0.proj", ["ffn.2"] = "ffn.net.2",
}

local ORIGINAL_MARKS = {"head.", "time_embedding.", "text_embedding.", "time_projection.", "img_emb."}
local DIFFUSERS_MARKS = {"condition_embedder.", "proj_out.", "scale_shift_table"}

local function starts(s, p) return s:sub(1, #p) == p end

-- The layout of a list of key names: "original" | "diffusers", or nil and the reason.
local function detect(names)
  local n = {original = 0, diffusers = 0}
  for _, name in ipairs(names) do
    local bare = starts(name, "model.diffusion_model.") and name:sub(23) or name
    for _, m in ipairs(ORIGINAL_MARKS) do if starts(bare, m) then n.original = n.original + 1 end end
    for _, m in ipairs(DIFFUSERS_MARKS) do if starts(bare, m) then n.diffusers = n.diffusers + 1 end end
    if bare:find("%.self_attn%.") or bare:find("%.cross_attn%.") or bare:find("%.modulation$") then
      n.original = n.original + 1
    elseif bare:find("%.attn[12]%.") or bare:find("%.scale_shift_table$") then
      n.diffusers = n.diffusers + 1
    end
  end
  return require("adaspa.weights").pick_layout(n, names, "blocks.N.self_attn.q, head.head, time_embedding.0, ...",
    "blocks.N.attn1.to_q, proj_out, condition_embedder, ...")
end

-- One original name -> its diffusers name (nil when it has none).
local function original_to_diffusers(name)
  if name == "head.modulation" then return "scale_shift_table" end
  local idx, inner = name:match("^blocks%.(%d+)%.(.+)$")
  if idx then
    if inner == "modulation" then return "blocks." .. idx .. ".scale_shift_table" end
    local stem, suffix = inner:match("^(.+)%.(%w+)$")
    local m = stem and BLOCK[stem]
    return m and ("blocks." .. idx .. "." .. m .. "." .. suffix) or nil
  end
  local stem, suffix = name:match("^(.+)%.(%w+)$")
  local m = stem and TOP[stem]
  return m and (m .. "." .. suffix) or nil
end

-- Key names of a checkpoint -> (list of the same length: each key's diffusers name, or the key
-- itself where no rule applies), layout ("original" | "diffusers"). A "model.diffusion_model."
-- prefix (ComfyUI's files) is removed first. Errors when the layout cannot be told.
function M.convert_keys(names)
  local layout, why = detect(names)
  if not layout then error("wan: " .. why, 0) end
  local out = {}
  for i, name in ipairs(names) do
    local bare = starts(name, "model.diffusion_model.") and name:sub(23) or name
    out[i] = layout == "original" and (original_to_diffusers(bare) or bare) or bare
  end
  return out, layout
end

-- ---- weights -----------------------------------------------------------------------------------

local FLOAT = {f32 = true, bf16 = true, f16 = true}
local function shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end
local function same_shape(a, b) return table.concat(a, ",") == table.concat(b, ",") end

local function cfg_str(cfg)
  return string.format("config %s: dim %d, heads %d, layers %d, ffn %d, in %d, text %d", tostring(cfg.preset or "custom"),
    cfg.dim, cfg.heads, cfg.layers, cfg.ffn, cfg.in_channels, cfg.text_dim)
end

local function readable(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local ok = f:read(0) ~= nil or f:seek("end") ~= nil
  f:close()
  return ok
end

-- The shard files of an index json (the distinct values of its weight_map), beside it.
local function index_files(path)
  local f, err = io.open(path, "rb")
  if not f then fail("cannot read %s: %s", path, tostring(err)) end
  local s = f:read("*a")
  f:close()
  local map = s:match('"weight_map"%s*:%s*(%b{})')
  if not map then fail("%s has no weight_map (a diffusers *.safetensors.index.json)", path) end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local files, seen = {}, {}
  for v in map:gmatch('"[^"]*"%s*:%s*"([^"]*)"') do
    if not seen[v] then
      seen[v] = true
      files[#files + 1] = dir .. "/" .. v
    end
  end
  table.sort(files)
  if #files == 0 then fail("%s lists no files in its weight_map", path) end
  return files
end

-- source -> list of safetensors files: a file, a list of files, an index json, or a folder with
-- diffusion_pytorch_model.safetensors.index.json or diffusion_pytorch_model.safetensors.
local function source_files(source)
  if type(source) == "table" then
    if #source == 0 then fail("weights: the list of files is empty") end
    for i, p in ipairs(source) do
      if type(p) ~= "string" then fail("weights: file %d of the list must be a path, got %s", i, type(p)) end
    end
    return source
  end
  if type(source) ~= "string" then fail("weights: source must be a path or a list of paths, got %s", type(source)) end
  if source:match("%.json$") then return index_files(source) end
  if source:match("%.safetensors$") then return {source} end
  local base = source:gsub("/+$", "") .. "/diffusion_pytorch_model.safetensors"
  if readable(base .. ".index.json") then return index_files(base .. ".index.json") end
  if readable(base) then return {base} end
  fail("weights: %s is not a .safetensors file, an index .json or a folder holding " ..
    "diffusion_pytorch_model.safetensors[.index.json]", source)
end

-- load_weights(source, cfg [, {device=, dtype=}]) -> diffusers name -> tensor
function M.load_weights(source, cfg, opts)
  opts = opts or {}
  if type(cfg) ~= "table" or type(cfg.dim) ~= "number" then fail("load_weights: cfg must be a wan config (wan.config)") end
  for k in pairs(opts) do
    if k ~= "device" and k ~= "dtype" and k ~= "prefix" then
      fail("load_weights: unknown option '%s' (options: device, dtype, prefix)", tostring(k))
    end
  end
  local prefix = opts.prefix
  if prefix ~= nil and (type(prefix) ~= "string" or prefix == "") then
    fail("load_weights: prefix must be a non-empty string, got %s", tostring(prefix))
  end
  if opts.dtype ~= nil and not FLOAT[opts.dtype] then fail("load_weights: dtype must be f32, bf16 or f16, got %s", tostring(opts.dtype)) end
  local device = opts.device or "cpu"
  local files = source_files(source)
  local entries, names = {}, {}
  for _, path in ipairs(files) do
    local ok, info = pcall(adaspa.safetensors.info, path)
    if not ok then fail("%s", tostring(info)) end
    for _, e in ipairs(info) do
      if not prefix or starts(e.name, prefix) then        -- with a prefix, other keys are ignored
        local key = prefix and e.name:sub(#prefix + 1) or e.name
        if entries[key] then fail("key '%s' is in both %s and %s", e.name, entries[key].path, path) end
        e.path, e.stored = path, e.name
        entries[key] = e
        names[#names + 1] = key
      end
    end
  end
  if #names == 0 then
    fail("%s: no key %s", type(source) == "string" and source or files[1],
      prefix and string.format("starts with the prefix '%s'", prefix) or "(an empty file)")
  end
  table.sort(names)
  local what = #files == 1 and files[1] or string.format("%s (%d files)", tostring(type(source) == "string" and source or files[1]), #files)
  local ok, canon, layout = pcall(M.convert_keys, names)
  if not ok then fail("%s: %s", what, tostring(canon):gsub("^wan: ", "")) end
  local expected = M.weight_shapes(cfg)
  local bad = {shape = {}, missing = {}, unexpected = {}, dtype = {}}
  local by_canon = {}
  for i, name in ipairs(names) do
    local e, c = entries[name], canon[i]
    local shown = c ~= name and string.format("'%s' (%s)", name, c) or string.format("'%s'", name)
    if not expected[c] then
      local note = (c:find("image_embedder") or c:find("add_[kv]_proj") or c:find("norm_added_k"))
        and ", an image-to-video weight: this module runs text-to-video only" or ""
      bad.unexpected[#bad.unexpected + 1] = string.format("unexpected key %s (%s %s%s)", shown, e.dtype, shape_str(e.shape), note)
    elseif not same_shape(expected[c], e.shape) then
      bad.shape[#bad.shape + 1] = string.format("key %s has shape %s, expected %s", shown, shape_str(e.shape),
        shape_str(expected[c]))
    elseif not FLOAT[e.dtype] then
      bad.dtype[#bad.dtype + 1] = string.format("key %s has dtype %s, expected f32, bf16 or f16", shown, e.dtype)
    end
    by_canon[c] = e
  end
  local want = {}
  for c in pairs(expected) do want[#want + 1] = c end
  table.sort(want)
  for _, c in ipairs(want) do
    if not by_canon[c] then
      bad.missing[#bad.missing + 1] = string.format("missing key '%s' (expected shape %s)", c, shape_str(expected[c]))
    end
  end
  local n_bad = #bad.shape + #bad.missing + #bad.unexpected + #bad.dtype
  if n_bad > 0 then
    local first = bad.shape[1] or bad.missing[1] or bad.unexpected[1] or bad.dtype[1]
    local all = n_bad > 1 and string.format(" (in all: %d wrong shape, %d missing, %d unexpected, %d not float)",
      #bad.shape, #bad.missing, #bad.unexpected, #bad.dtype) or ""
    fail("%s (%s layout): %s%s; expected the keys of %s", what, layout, first, all, cfg_str(cfg))
  end
  -- read file by file, only the needed names
  local per_file = {}
  for _, c in ipairs(want) do
    local e = by_canon[c]
    per_file[e.path] = per_file[e.path] or {names = {}, canon = {}}
    local pf = per_file[e.path]
    pf.names[#pf.names + 1] = e.stored
    pf.canon[e.stored] = c
  end
  local out = {}
  for _, path in ipairs(files) do
    local pf = per_file[path]
    if pf then
      local raw = adaspa.safetensors.load(path, {names = pf.names})
      for name, t in pairs(raw) do
        local u = opts.dtype and t:to(opts.dtype) or t
        local v = u:to(device)
        if u ~= t and u ~= v then u:free() end
        if t ~= v then t:free() end
        out[pf.canon[name]] = v
      end
    end
  end
  return out
end

function M.synthetic_weights(cfg, opts)
  return require("adaspa.models.wan_synth").weights(cfg, opts)
end

-- ---- conditioning ------------------------------------------------------------------------------

local text_hash = require("adaspa.text").hash

-- Synthetic text states [text_len, text_dim] from a prompt: N(0, 1) rows for the words + 1 (the
-- end token), zeros after them (Wan's pipeline pads the encoder's output with zeros).
local function synthetic_states(prompt, cfg, dt, dev)
  local words = 0
  for _ in prompt:gmatch("%S+") do words = words + 1 end
  local valid = math.max(1, math.min(cfg.text_len, words + 1))
  local seed = text_hash("wan/" .. prompt)
  local s = adaspa.randn({cfg.text_len, cfg.text_dim}, {seed = seed, dtype = dt, device = dev})
  if valid < cfg.text_len then s:narrow(1, valid + 1, cfg.text_len - valid):fill(0) end
  return {states = s, valid = valid, source = string.format("synthetic from %q (seed %d)", prompt, seed)}
end

-- States from a file: [L, text_dim] with L <= text_len, zero-padded to text_len; rows the mask
-- marks 0 are zeroed (as Wan's pipeline does).
local function file_states(t, path, prefix, cfg, dt, dev)
  local st, mask = t[prefix .. "text_states"], t[prefix .. "text_mask"]
  local shp = st:shape()
  if #shp ~= 2 or shp[2] ~= cfg.text_dim or shp[1] < 1 or shp[1] > cfg.text_len then
    fail("%s: %stext_states has shape %s, expected [L, %d] with 1 <= L <= %d", path, prefix, shape_str(shp),
      cfg.text_dim, cfg.text_len)
  end
  local L = shp[1]
  local s = st:to("f32")
  if mask then
    local ms = mask:shape()
    if #ms ~= 1 or ms[1] ~= L then
      fail("%s: %stext_mask has shape %s, expected [%d] (one per row of %stext_states)", path, prefix, shape_str(ms), L, prefix)
    end
    if s == st then s = st:clone() end
    local m = mask:to("f32"):totable()
    for i = 1, L do if m[i] == 0 then s:narrow(1, i, 1):fill(0) end end
  end
  local kept = L
  if mask then
    kept = 0
    for _, v in ipairs(mask:to("f32"):totable()) do if v ~= 0 then kept = kept + 1 end end
  end
  local full = adaspa.zeros({cfg.text_len, cfg.text_dim}, {dtype = "f32"})
  full:narrow(1, 1, L):copy(s)
  local out = full:to(dt):to(dev)
  local what = kept < L and string.format("%d rows, %d kept by %stext_mask", L, kept, prefix) or string.format("%d rows", L)
  return {states = out, valid = L, source = string.format("%stext_states: %s", prefix, what)}
end

-- (model: the built model, which the jobs pass to every entry's conditioning; Wan's text comes
-- from the embeddings file or is synthetic, so it is not used)
local COND_OPTS = {embeds = true, prompt = true, negative = true, guidance = true, cfg = true, device = true, dtype = true,
  model = true}

-- conditioning(cfg, {embeds=, prompt=, negative=, guidance=, device=, dtype=}) ->
-- {cond = {states [text_len, text_dim], valid=}, uncond = {...} or nil, source = string}.
-- The unconditional branch is built when opts.cfg is true (when nil: when guidance ~= 1); a file
-- must then hold negative_text_states (an error otherwise); synthetic runs derive it from the
-- negative prompt ("" by default, as Wan's pipeline). A file's negative states are read whenever
-- present.
function M.conditioning(cfg, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not COND_OPTS[k] then fail("conditioning: unknown option '%s'", tostring(k)) end
  end
  local dt, dev = opts.dtype or "f32", opts.device or "cpu"
  local guidance = opts.guidance or M.sampler_defaults.guidance.scale
  if type(guidance) ~= "number" then fail("conditioning: guidance must be a number, got %s", type(guidance)) end
  local need_uncond = opts.cfg
  if need_uncond == nil then need_uncond = guidance ~= 1 end
  if opts.embeds then
    local path = opts.embeds
    if type(path) ~= "string" then fail("conditioning: embeds must be a path, got %s", type(path)) end
    local ok, t = pcall(adaspa.safetensors.load, path)
    if not ok then fail("embeds: %s", tostring(t)) end
    if not t.text_states then fail("%s: no tensor 'text_states' ([L, %d] text encoder states)", path, cfg.text_dim) end
    local cond = file_states(t, path, "", cfg, dt, dev)
    local uncond
    if t.negative_text_states then
      uncond = file_states(t, path, "negative_", cfg, dt, dev)
    elseif t.negative_text_mask then
      fail("%s: negative_text_mask without negative_text_states", path)
    elseif need_uncond then
      fail("%s: no negative_text_states, needed for classifier-free guidance (scale %g): the unconditional branch's " ..
        "text encoder states (negative_text_states [L, %d], optional negative_text_mask [L])", path, guidance, cfg.text_dim)
    end
    return {cond = cond, uncond = uncond,
      source = string.format("%s (%s%s)", path, cond.source, uncond and "; " .. uncond.source or "")}
  end
  local prompt = opts.prompt or ""
  if type(prompt) ~= "string" then fail("conditioning: prompt must be a string, got %s", type(prompt)) end
  local negative = opts.negative or ""
  if type(negative) ~= "string" then fail("conditioning: negative must be a string, got %s", type(negative)) end
  local cond = synthetic_states(prompt, cfg, dt, dev)
  local uncond = need_uncond and synthetic_states(negative, cfg, dt, dev) or nil
  return {cond = cond, uncond = uncond, source = cond.source .. (uncond and ", negative " .. uncond.source or "")}
end

-- ---- the model ---------------------------------------------------------------------------------

local Model = {}
Model.__index = Model
M.Model = Model

function M.new(cfg, weights)
  if type(weights) ~= "table" then fail("new: weights must be a table name -> tensor, got %s", type(weights)) end
  local shapes = M.weight_shapes(cfg)
  local names = {}
  for name in pairs(shapes) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local w = weights[name]
    if not w then fail("missing weight %s (shape %s)", name, shape_str(shapes[name])) end
    if not same_shape(w:shape(), shapes[name]) then
      fail("weight %s has shape %s, expected %s", name, shape_str(w:shape()), shape_str(shapes[name]))
    end
  end
  local m = setmetatable({cfg = cfg, w = weights, text_cache = setmetatable({}, {__mode = "k"})}, Model)
  local d, C = cfg.dim, cfg.out_channels
  -- the patch embedding is a linear over C*4 inputs per token (input index c*4 + kh*2 + kw)
  m.patch_w = weights["patch_embedding.weight"]:reshape({d, cfg.in_channels * 4})
  -- proj_out's rows are (kh, kw, c) with c fastest; adaspa.unpatchify reads (c, kh, kw)
  m.proj_w = weights["proj_out.weight"]:reshape({4, C, d}):permute({2, 1, 3}):contiguous():reshape({4 * C, d})
  m.proj_b = weights["proj_out.bias"]:reshape({4, C}):permute({2, 1}):contiguous():reshape({4 * C})
  m.tables = {}
  for i = 0, cfg.layers - 1 do m.tables[i] = weights["blocks." .. i .. ".scale_shift_table"]:reshape({6 * d}) end
  m.out_table = weights["scale_shift_table"]:reshape({2 * d})
  return m
end

function Model:lin(x, name, opts)
  return adaspa.linear(x, self.w[name .. ".weight"], self.w[name .. ".bias"], opts)
end

-- The parts that run in f32 whatever the weights' dtype, as diffusers' Wan does: the time
-- embedding, the modulation tables, cross-attention's norm and the output head. With f32 weights
-- they are the weights themselves; with bf16 or f16 weights f32 copies, made at the first forward
-- and kept (0.75 GB at 14B).
function Model:f32_parts()
  if self.f32 then return self.f32 end
  local function f(t) return t:dtype() == "f32" and t or t:to("f32") end
  local P = {w = {}, tables = {}, out_table = f(self.out_table), proj_w = f(self.proj_w), proj_b = f(self.proj_b)}
  for i = 0, self.cfg.layers - 1 do P.tables[i] = f(self.tables[i]) end
  for name, t in pairs(self.w) do
    if name:find("^condition_embedder%.time_") or name:find("%.norm2%.") then P.w[name] = f(t) end
  end
  function P.lin(x, name) return adaspa.linear(x, P.w[name .. ".weight"], P.w[name .. ".bias"]) end
  self.f32 = P
  return P
end

local function drop(...)
  for j = 1, select("#", ...) do
    local t = select(j, ...)
    if t then t:free() end
  end
end

-- n chunks [dim] of a flat [n * dim] vector
local function chunks(v, n, d)
  local out = {}
  for i = 1, n do out[i] = v:narrow(1, (i - 1) * d + 1, d) end
  return out
end

-- The text embedder's output [text_len, dim] of a conditioning branch (kept while its states live).
function Model:embed_text(states)
  local e = self.text_cache[states]
  if e then return e end
  local h = self:lin(states, "condition_embedder.text_embedder.linear_1")
  adaspa.gelu_tanh(h, {out = h})
  e = self:lin(h, "condition_embedder.text_embedder.linear_2")
  drop(h)
  self.text_cache[states] = e
  return e
end

-- One velocity evaluation. x: latent [C, T, H, W] (H, W even); t: timestep in [0, 1000];
-- cond = {states [L, text_dim]} (wan.conditioning's cond or uncond); ctx: an attention context
-- (ctx:attention(q, k, v, info)) or nil for dense attention.
function Model:forward(x, t, cond, ctx)
  local cfg = self.cfg
  local shp = x:shape()
  if #shp ~= 4 or shp[1] ~= cfg.in_channels or shp[3] % 2 ~= 0 or shp[4] % 2 ~= 0 then
    fail("forward: x must have shape [%d, T, H, W] with H and W even, got %s", cfg.in_channels, shape_str(shp))
  end
  if type(cond) ~= "table" or not adaspa.is_tensor(cond.states) then
    fail("forward: cond must be a table with states [L, %d] (wan.conditioning's cond)", cfg.text_dim)
  end
  local st = cond.states:shape()
  if #st ~= 2 or st[2] ~= cfg.text_dim then
    fail("forward: cond.states has shape %s, expected [L, %d]", shape_str(st), cfg.text_dim)
  end
  local _, T, Hl, Wl = unpack(shp)
  local grid = {T, Hl / 2, Wl / 2}
  local n = grid[1] * grid[2] * grid[3]
  local d, H, D, eps = cfg.dim, cfg.heads, cfg.head_dim, cfg.eps
  local dev, dt = x:device(), x:dtype()
  local w = self.w

  -- time: sinusoidal (cos first) -> Linear-SiLU-Linear = temb; SiLU -> Linear = 6 modulation rows
  -- With bf16 or f16 weights the time embedding, the modulation, the norms and the residual stream
  -- run in f32 (as diffusers' Wan does); the linears and attention in the weights' dtype.
  local low = dt ~= "f32"
  local function narrow_dt(y) -- a linear's input in the weights' dtype
    if not low then return y end
    local r = y:to(dt)
    drop(y)
    return r
  end
  local function wide(y) -- a linear's output into the f32 stream
    if not low then return y end
    local r = y:to("f32")
    drop(y)
    return r
  end
  local P = self:f32_parts()
  local tsin = adaspa.timestep_embedding(adaspa.tensor({t}, {dtype = "f32", device = dev}), cfg.freq_dim, 10000)
  local h1 = P.lin(tsin, "condition_embedder.time_embedder.linear_1")
  adaspa.silu(h1, {out = h1})
  local temb = P.lin(h1, "condition_embedder.time_embedder.linear_2"):reshape({d})         -- [dim] f32
  local tproj = P.lin(adaspa.silu(temb:reshape({1, d})), "condition_embedder.time_proj"):reshape({6 * d})
  drop(tsin, h1)
  local text = self:embed_text(cond.states)                                                 -- [L, dim]
  local L = text:shape()[1]

  -- sequence parallelism (ctx.sp, adaspa.parallel): this rank's contiguous rows of the tokens
  local sp = parallel.of(ctx)
  local img, rows = parallel.embed_patches(sp, x, self.patch_w, w["patch_embedding.bias"])   -- [rows, dim]
  img = wide(img)                                                                             -- the f32 stream
  local function heads(y, r) return y:reshape({r, H, D}) end
  local function rotate(q3, k3) -- RoPE of whole sequences (with sp: after the exchange)
    adaspa.rope3d(q3, grid, cfg.rope_axes, cfg.rope_theta, n, {out = q3})
    adaspa.rope3d(k3, grid, cfg.rope_axes, cfg.rope_theta, n, {out = k3})
  end

  for i = 0, cfg.layers - 1 do
    local p = "blocks." .. i .. "."
    local mod = adaspa.add(P.tables[i], tproj)
    local shift, scale, gate, c_shift, c_scale, c_gate = unpack(chunks(mod, 6, d))
    -- self-attention
    local xm = narrow_dt(adaspa.layernorm_modulate(img, eps, nil, nil, shift, scale))
    local q = self:lin(xm, p .. "attn1.to_q")
    local k = self:lin(xm, p .. "attn1.to_k")
    local v = self:lin(xm, p .. "attn1.to_v")
    drop(xm)
    adaspa.rmsnorm(q, w[p .. "attn1.norm_q.weight"], eps, {out = q})
    adaspa.rmsnorm(k, w[p .. "attn1.norm_k.weight"], eps, {out = k})
    local q3, k3, v3 = heads(q, rows), heads(k, rows), heads(v, rows)
    local info = {layer = i + 1, kind = "self", index = i, kv_valid = n, n_img = n, n_txt = 0, grid = grid}
    local a
    if sp then
      a = sp:attention(ctx, q3, k3, v3, info, rotate)
    else
      rotate(q3, k3)
      if ctx and ctx.attention then a = ctx:attention(q3, k3, v3, info) else a = adaspa.attention(q3, k3, v3) end
    end
    drop(q, k, v, q3, k3, v3)
    local a2 = a:reshape({rows, d})
    local o = wide(self:lin(a2, p .. "attn1.to_out.0"))
    drop(a, a2)
    adaspa.gated_add(img, gate, o, {out = img})
    drop(o)
    -- cross-attention (dense)
    local xn = cfg.cross_attn_norm and narrow_dt(adaspa.layernorm(img, eps, P.w[p .. "norm2.weight"], P.w[p .. "norm2.bias"]))
      or (low and img:to(dt) or img)
    q = self:lin(xn, p .. "attn2.to_q")
    if xn ~= img then drop(xn) end
    k = self:lin(text, p .. "attn2.to_k")
    v = self:lin(text, p .. "attn2.to_v")
    adaspa.rmsnorm(q, w[p .. "attn2.norm_q.weight"], eps, {out = q})
    adaspa.rmsnorm(k, w[p .. "attn2.norm_k.weight"], eps, {out = k})
    q3, k3, v3 = heads(q, rows), heads(k, L), heads(v, L)
    a = adaspa.attention(q3, k3, v3)
    drop(q, k, v, q3, k3, v3)
    a2 = a:reshape({rows, d})
    o = wide(self:lin(a2, p .. "attn2.to_out.0"))
    drop(a, a2)
    adaspa.add(img, o, {out = img})
    drop(o)
    -- feed-forward
    xm = narrow_dt(adaspa.layernorm_modulate(img, eps, nil, nil, c_shift, c_scale))
    local y = self:lin(xm, p .. "ffn.net.0.proj")
    drop(xm)
    adaspa.gelu_tanh(y, {out = y})
    local z = wide(self:lin(y, p .. "ffn.net.2"))
    drop(y)
    adaspa.gated_add(img, c_gate, z, {out = img})
    drop(z, mod, shift, scale, gate, c_shift, c_scale, c_gate)
  end

  -- output: LayerNorm modulated by (table + temb), proj_out, unpatchify
  local fmod = adaspa.add(P.out_table, adaspa.concat({temb, temb}))
  local f_shift, f_scale = unpack(chunks(fmod, 2, d))
  local xm = adaspa.layernorm_modulate(img, eps, nil, nil, f_shift, f_scale)
  drop(img)
  local out = adaspa.linear(xm, P.proj_w, P.proj_b) -- f32: the velocity is not rounded to the weights' dtype
  drop(xm)
  out = parallel.gather_rows(sp, out, n)                                                     -- [n, out]
  local velocity = adaspa.unpatchify(out, {T, Hl, Wl})
  drop(out, fmod, f_shift, f_scale, temb, tproj)
  return velocity
end

-- ---- estimate, describe, recipe fields --------------------------------------------------------

-- Numbers for adaspa.footprint (see adaspa.models) and a quick look: n latent tokens, width d,
-- FFN width f, L text tokens. The widest moment of a block: the stream, q, k, v, the attention
-- output [n, d] each and the FFN activation [n, f], plus the embedded text and its cross k, v
-- [L, d] and the raw text states [L, text_dim]; times M.SLACK (allocator slack and temporaries, as
-- measured for HunyuanVideo), plus the f32 latents. FLOPs of one forward: linears 2 n (8 d^2 +
-- 2 d f) per block plus the cross k, v 4 L d^2, dense self-attention 4 n^2 d, cross-attention
-- 4 n L d; flops_per_step counts the two forwards of a CFG step.
M.SLACK = 2.5
function M.estimate(cfg, video, dtype)
  local bytes = (dtype == "f32" or dtype == nil) and 4 or 2
  local params, largest = 0, 0
  for _, s in pairs(M.weight_shapes(cfg)) do
    local c = 1
    for _, v in ipairs(s) do c = c * v end
    params, largest = params + c, math.max(largest, c)
  end
  local g, lat = M.grid(video or cfg.video, cfg)
  local n, d, L, f = g[1] * g[2] * g[3], cfg.dim, cfg.text_len, cfg.ffn
  local latent_n = lat[1] * lat[2] * lat[3] * lat[4]
  local act = M.SLACK * (n * (5 * d + f) + L * (cfg.text_dim + 3 * d)) * bytes + 6 * latent_n * 4
  -- bf16 / f16: the residual stream is f32 (n x d at 4 bytes instead of 2), and the f32 copies of
  -- the time embedding, the modulation tables, the norms and the output head are kept with the
  -- weights
  local w32 = 0
  if bytes ~= 4 then
    act = act + M.SLACK * n * d * 2
    w32 = 4 * (cfg.freq_dim * d + d * d + 6 * d * d + 8 * d + cfg.layers * (6 * d + 2 * d) + 2 * d
      + (cfg.out_channels * 4 + 1) * (d + 1))
  end
  local linear = cfg.layers * (2 * n * (8 * d * d + 2 * d * f) + 4 * L * d * d + 4 * n * L * d)
    + 2 * L * d * (cfg.text_dim + d) + 2 * n * d * cfg.in_channels * 4 * 2
  local attn = cfg.layers * 4 * n * n * d
  return {tokens = n, image_tokens = n, params = params, largest = largest, heads = cfg.heads, layers = cfg.layers,
          activation_bytes = act, linear_flops = linear, attention_flops = attn, output_bytes = n * d * bytes,
          weights_bytes = params * bytes + w32, flops_per_step = 2 * (linear + attn)}
end

-- One line for progress lines and reports.
function M.describe(cfg)
  return string.format("Wan2.1 %s, %d blocks, %d heads x %d, ffn %d", tostring(cfg.preset), cfg.layers, cfg.heads,
    cfg.head_dim, cfg.ffn)
end

local C = require "adaspa.check"
-- The recipe's model.* fields of Wan (beyond the shared name, preset, weights, ...).
M.schema = {
  dim = C.integer{min = 6, max = 65536, doc = "model width (default: the preset's; a multiple of model.heads)"},
  heads = C.integer{min = 1, max = 1024, doc = "attention heads (default: the preset's; dim / heads even, >= 6)"},
  layers = C.integer{min = 1, max = 1000, doc = "transformer blocks (default: the preset's: 30 for 1.3B, 40 for 14B)"},
  ffn = C.integer{min = 1, max = 262144, doc = "feed-forward width (default: the preset's)"},
  text_len = C.integer{min = 1, max = 4096, doc = "text tokens of the cross-attention (default 512, the encoder's)"},
}

-- wan.config overrides from the recipe's model table (its M.schema fields).
function M.overrides(m, preset)
  local over = {}
  for k in pairs(M.schema) do over[k] = m[k] end
  return over
end

return M
