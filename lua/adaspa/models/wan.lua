-- adaspa.models.wan: the Wan2.1 text-to-video and image-to-video transformer (diffusers'
-- WanTransformer3DModel) built from core ops.
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
--
-- Image-to-video (cfg.image_dim > 0: the I2V presets): the input is the noisy latent [16, T, H, W]
-- with the condition latents [in_channels - 16, T, H, W] (4 mask channels, 1 on the first latent
-- frame, and the VAE latents of the first frame followed by zero frames, as diffusers'
-- WanImageToVideoPipeline builds them) concatenated on channels before the patch embedding; the
-- image embedder (LayerNorm eps 1e-5 -> Linear -> exact GELU -> Linear -> LayerNorm eps 1e-5, all
-- affine) maps the CLIP image states [257, image_dim] to [257, dim]; in each block's
-- cross-attention the same normalized query also attends to them through add_k_proj (RMSNorm
-- norm_added_k over the whole width) and add_v_proj, and that attention's output is added to the
-- text attention's before to_out. Both guidance branches see the same image.
local adaspa = require "adaspa"
local parallel = require "adaspa.parallel"

local M = {}

M.name = "wan"
M.doc = "Wan2.1 text-to-video (1.3B, 14B) and image-to-video (14B 480P, 720P) transformer (diffusers' " ..
  "WanTransformer3DModel), true CFG"

-- image_dim 0: text-to-video (no image embedder, no added key/value); image_len: the CLIP image
-- tokens of synthetic image states (a file's image_embeds may have any count)
local common = {
  in_channels = 16, out_channels = 16, text_dim = 4096, text_len = 512, freq_dim = 256, eps = 1e-6,
  rope_theta = 10000, cross_attn_norm = true, image_dim = 0, image_len = 257,
}

local function with_common(p)
  for k, v in pairs(common) do if p[k] == nil then p[k] = v end end
  return p
end

-- image-to-video: the latent's 16 channels plus 4 mask and 16 image-latent channels; CLIP ViT-H/14
-- penultimate states (1280 wide, 257 tokens); added_kv_proj_dim = dim (the embedder's output)
local i2v = {in_channels = 36, image_dim = 1280}
local function with_i2v(p)
  for k, v in pairs(i2v) do p[k] = v end
  return with_common(p)
end

M.presets = {
  ["1.3B"] = with_common {dim = 1536, heads = 12, layers = 30, ffn = 8960, shift = 3.0,
    video = {width = 832, height = 480, frames = 81}},
  ["14B"] = with_common {dim = 5120, heads = 40, layers = 40, ffn = 13824, shift = 5.0,
    video = {width = 1280, height = 720, frames = 81}},
  small = with_common {dim = 128, heads = 2, layers = 2, ffn = 256, shift = 5.0,
    video = {width = 256, height = 192, frames = 9}},
  -- diffusers' Wan2.1-I2V-14B-480P / -720P: the 14B shapes with image conditioning; shift 3 at
  -- 480p, 5 at 720p (as Wan recommends)
  ["I2V-14B-480P"] = with_i2v {dim = 5120, heads = 40, layers = 40, ffn = 13824, shift = 3.0,
    video = {width = 832, height = 480, frames = 81}},
  ["I2V-14B-720P"] = with_i2v {dim = 5120, heads = 40, layers = 40, ffn = 13824, shift = 5.0,
    video = {width = 1280, height = 720, frames = 81}},
  small_i2v = with_i2v {dim = 128, heads = 2, layers = 2, ffn = 256, shift = 5.0,
    video = {width = 256, height = 192, frames = 9}},
}
-- model.task = "i2v" turns a text-to-video preset into its image-to-video one (so that preset =
-- auto picks the right size on the GPU and the CPU)
M.i2v_of = {["14B"] = "I2V-14B-720P", small = "small_i2v"}
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

local INT_FIELDS = {"dim", "heads", "layers", "ffn", "in_channels", "out_channels", "text_dim", "text_len", "freq_dim",
  "image_len"}

-- Whether a configuration conditions on an image (image-to-video).
function M.is_i2v(cfg) return (cfg.image_dim or 0) > 0 end

-- A preset's configuration with overrides merged in (video merges field by field); no preset:
-- "small". overrides.task = "i2v" maps a text-to-video preset to its image-to-video one
-- (M.i2v_of); "t2v" asks for a text-to-video preset.
function M.config(preset, overrides)
  preset = preset or M.cpu_preset
  if overrides ~= nil and type(overrides) == "table" and overrides.task ~= nil then
    local task = overrides.task
    local rest = {}
    for k, v in pairs(overrides) do if k ~= "task" then rest[k] = v end end
    overrides = rest
    local p = M.presets[preset]
    if task == "i2v" then
      if p and (p.image_dim or 0) == 0 then
        if not M.i2v_of[preset] then
          fail("task i2v: preset %s has no image-to-video variant (I2V presets: I2V-14B-480P, I2V-14B-720P, small_i2v)", preset)
        end
        preset = M.i2v_of[preset]
      end
    elseif task == "t2v" then
      if p and (p.image_dim or 0) > 0 then fail("task t2v: preset %s is an image-to-video one", preset) end
    else
      fail("task must be \"t2v\" or \"i2v\", got %s", tostring(task))
    end
  end
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
  if not is_int(cfg.image_dim, 0) then fail("image_dim must be a non-negative integer (0: text-to-video), got %s", tostring(cfg.image_dim)) end
  if cfg.image_dim > 0 and cfg.in_channels <= cfg.out_channels then
    fail("image-to-video (image_dim %d): in_channels (%d) must exceed out_channels (%d) by the condition latents' channels",
      cfg.image_dim, cfg.in_channels, cfg.out_channels)
  end
  return cfg
end

-- Token grid {T, H, W} and latent shape {C, T, H, W} of a video {width, height, frames}: the VAE
-- divides time by 4 (T = (frames - 1) / 4 + 1) and space by 8, the patch is 1 x 2 x 2. C is the
-- sampled latent's (out_channels; image-to-video adds its condition channels inside forward).
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
  local C = cfg and cfg.out_channels or 16
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
  if M.is_i2v(cfg) then
    local e = cfg.image_dim
    local pre = "condition_embedder.image_embedder."
    for _, nrm in ipairs({{"norm1", e}, {"norm2", d}}) do
      shapes[pre .. nrm[1] .. ".weight"] = {nrm[2]}
      shapes[pre .. nrm[1] .. ".bias"] = {nrm[2]}
    end
    lin(pre .. "ff.net.0.proj", e, e)
    lin(pre .. "ff.net.2", d, e)
    for i = 0, cfg.layers - 1 do
      local p = "blocks." .. i .. ".attn2."
      lin(p .. "add_k_proj", d, d)
      lin(p .. "add_v_proj", d, d)
      shapes[p .. "norm_added_k.weight"] = {d}
    end
  end
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
  -- image-to-video: the image embedder
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

-- forward's check of a [rows, width] input: what names it in the error, rows the letter of its rows.
local function need_rows(t, width, what, rows)
  local s = t:shape()
  if #s ~= 2 or s[2] ~= width then
    fail("forward: %s has shape %s, expected [%s, %d]", what, shape_str(s), rows, width)
  end
end
local function same_shape(a, b) return table.concat(a, ",") == table.concat(b, ",") end

local function cfg_str(cfg)
  return string.format("config %s: dim %d, heads %d, layers %d, ffn %d, in %d, text %d%s", tostring(cfg.preset or "custom"),
    cfg.dim, cfg.heads, cfg.layers, cfg.ffn, cfg.in_channels, cfg.text_dim,
    M.is_i2v(cfg) and string.format(", image %d", cfg.image_dim) or "")
end

-- source -> list of safetensors files: a file, a list of files, an index (*.safetensors.index.json:
-- its shards beside it, bounded and checked by adaspa.weights) or a folder holding
-- diffusion_pytorch_model.safetensors[.index.json] (adaspa.weights.files).
local function source_files(source)
  local ok, files = pcall(require("adaspa.weights").files, source)
  if not ok then fail("%s", tostring(files)) end
  return files
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
    if c:find("^blocks%.%d+%.attn2%.norm_added_q%.") then
      -- some I2V checkpoints carry a query norm of the image branch that the model never runs
      -- (diffusers ignores it on load too)
    elseif not expected[c] then
      local note = (not M.is_i2v(cfg) and (c:find("image_embedder") or c:find("add_[kv]_proj") or c:find("norm_added_k")))
        and ", an image-to-video weight: this is a text-to-video config (use an I2V preset, e.g. I2V-14B-720P, " ..
          "or model.task=i2v)" or ""
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

-- The text part of conditioning (opts.file: the embeddings file's tensors, or nil).
-- The unconditional branch is built when opts.cfg is true (when nil: when guidance ~= 1); a file
-- must then hold negative_text_states (an error otherwise); synthetic runs derive it from the
-- negative prompt ("" by default, as Wan's pipeline). A file's negative states are read whenever
-- present.
local function text_conditioning(cfg, opts, dt, dev)
  local guidance = opts.guidance or M.sampler_defaults.guidance.scale
  if type(guidance) ~= "number" then fail("conditioning: guidance must be a number, got %s", type(guidance)) end
  local need_uncond = opts.cfg
  if need_uncond == nil then need_uncond = guidance ~= 1 end
  if opts.embeds then
    local path = opts.embeds
    if type(path) ~= "string" then fail("conditioning: embeds must be a path, got %s", type(path)) end
    local t = opts.file
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

-- The channels of the condition latents (image-to-video): in_channels - out_channels (20 = 4
-- mask + 16 VAE latents).
function M.condition_channels(cfg) return cfg.in_channels - cfg.out_channels end

-- Synthetic condition latents [Cc, T, H, W] as diffusers' pipeline lays them out: the 4 mask
-- channels 1 on the first latent frame and 0 after it; the image latents N(0, 1) (seeded) on the
-- first frame, zeros after it (a stand-in for the VAE latents of the zero frames).
function M.synthetic_condition_latents(cfg, T, H, W, seed, dt, dev)
  local Cc = M.condition_channels(cfg)
  local masks = math.min(4, Cc)
  local z = adaspa.zeros({Cc, T, H, W}, {dtype = "f32"})
  local first = z:narrow(2, 1, 1)
  first:narrow(1, 1, masks):fill(1)
  if Cc > masks then first:narrow(1, masks + 1, Cc - masks):copy(adaspa.randn({Cc - masks, 1, H, W}, {seed = seed})) end
  if dt == "f32" and dev == "cpu" then return z end
  local out = z:to(dt):to(dev)
  z:free()
  return out
end

-- A tensor of a file, [n1, n2, ...] or with a leading batch of 1 (as diffusers' pipelines keep
-- them), without the batch.
local function unbatch(t, dims)
  local s = t:shape()
  if #s == dims + 1 and s[1] == 1 then
    local r = {}
    for i = 2, #s do r[i - 1] = s[i] end
    t = t:reshape(r)
  end
  return t
end

-- The image conditioning of an image-to-video config: {embeds = [N, image_dim], latents =
-- [Cc, T, H, W] or nil (then synthetic for whatever latent forward gets: seed), source =}.
local function image_conditioning(cfg, t, path, prompt, dt, dev)
  local img, parts = {}, {}
  local seed = text_hash("wan-image/" .. prompt)
  if t and t.image_embeds then
    local e = unbatch(t.image_embeds, 2)
    local s = e:shape()
    if #s ~= 2 or s[2] ~= cfg.image_dim or s[1] < 1 then
      fail("%s: image_embeds has shape %s, expected [N, %d] (the image encoder's states; CLIP: N = 257)", path,
        shape_str(t.image_embeds:shape()), cfg.image_dim)
    end
    if not FLOAT[e:dtype()] then fail("%s: image_embeds has dtype %s, expected a float type", path, e:dtype()) end
    img.embeds = e:to(dt):to(dev)
    parts[#parts + 1] = string.format("image_embeds [%d, %d]", s[1], s[2])
  else
    img.embeds = adaspa.randn({cfg.image_len, cfg.image_dim}, {seed = seed, dtype = dt, device = dev})
    parts[#parts + 1] = string.format("SYNTHETIC image states [%d, %d] from %q (seed %d)", cfg.image_len, cfg.image_dim,
      prompt, seed)
  end
  local Cc = M.condition_channels(cfg)
  if t and t.image_latents then
    local l = unbatch(t.image_latents, 4)
    local s = l:shape()
    if #s ~= 4 or s[1] ~= Cc then
      fail("%s: image_latents has shape %s, expected [%d, T, H, W] (%d mask channels and the VAE latents of the first " ..
        "frame then zero frames, as diffusers' WanImageToVideoPipeline builds them)", path, shape_str(t.image_latents:shape()),
        Cc, math.min(4, Cc))
    end
    if not FLOAT[l:dtype()] then fail("%s: image_latents has dtype %s, expected a float type", path, l:dtype()) end
    img.latents = l:to(dt):to(dev)
    img.latents_from = path
    parts[#parts + 1] = string.format("image_latents %s", shape_str(s))
  else
    img.seed = seed
    parts[#parts + 1] = string.format("SYNTHETIC condition latents (mask + N(0, 1) first frame, seed %d)", seed)
  end
  img.synthetic = not (t and t.image_embeds and t.image_latents)
  img.source = table.concat(parts, ", ")
  return img
end

-- conditioning(cfg, {embeds=, prompt=, negative=, guidance=, device=, dtype=}) ->
-- {cond = {states [text_len, text_dim], valid=, image=}, uncond = {...} or nil, source = string}.
-- Image-to-video configs add image = {embeds [N, image_dim], latents [Cc, T, H, W] or nil (then
-- synthetic, made by forward for its latent's size), source=}, the same table in both branches:
-- from the embeddings file's image_embeds ([257, 1280], CLIP's penultimate states; a leading
-- batch of 1 is allowed) and image_latents ([20, T, H, W]: mask and first-frame latents), or
-- synthetic ones seeded by the prompt (and said so in source).
function M.conditioning(cfg, opts)
  opts = opts or {}
  for k in pairs(opts) do
    if not COND_OPTS[k] then fail("conditioning: unknown option '%s'", tostring(k)) end
  end
  local dt, dev = opts.dtype or "f32", opts.device or "cpu"
  local file
  if opts.embeds then
    if type(opts.embeds) ~= "string" then fail("conditioning: embeds must be a path, got %s", type(opts.embeds)) end
    local ok, t = pcall(adaspa.safetensors.load, opts.embeds)
    if not ok then fail("embeds: %s", tostring(t)) end
    file = t
  end
  local topts = {}
  for k, v in pairs(opts) do topts[k] = v end
  topts.file = file
  local r = text_conditioning(cfg, topts, dt, dev)
  if M.is_i2v(cfg) then
    local prompt = opts.prompt or ""
    if type(prompt) ~= "string" then fail("conditioning: prompt must be a string, got %s", type(prompt)) end
    local img = image_conditioning(cfg, file, opts.embeds, prompt, dt, dev)
    r.cond.image = img
    if r.uncond then r.uncond.image = img end
    r.image = img
    r.source = r.source .. "; image: " .. img.source
  elseif file and (file.image_embeds or file.image_latents) then
    r.source = r.source .. "; image_embeds / image_latents in the file not used (a text-to-video config)"
  end
  return r
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
  local m = setmetatable({cfg = cfg, w = weights, text_cache = setmetatable({}, {__mode = "k"}),
    image_cache = setmetatable({}, {__mode = "k"})}, Model)
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

-- The image embedder's output [N, dim] of an image conditioning (kept while its embeds live):
-- LayerNorm (eps 1e-5, affine) -> Linear -> exact GELU -> Linear -> LayerNorm (eps 1e-5, affine).
M.IMAGE_EPS = 1e-5   -- the embedder's norms are PyTorch LayerNorms with their default eps
function Model:embed_image(embeds)
  local e = self.image_cache[embeds]
  if e then return e end
  local w, pre = self.w, "condition_embedder.image_embedder."
  local h0 = adaspa.layernorm(embeds, M.IMAGE_EPS, w[pre .. "norm1.weight"], w[pre .. "norm1.bias"])
  local h = self:lin(h0, pre .. "ff.net.0.proj")
  adaspa.gelu(h, {out = h})
  local h2 = self:lin(h, pre .. "ff.net.2")
  e = adaspa.layernorm(h2, M.IMAGE_EPS, w[pre .. "norm2.weight"], w[pre .. "norm2.bias"])
  drop(h0, h, h2)
  self.image_cache[embeds] = e
  return e
end

-- The condition latents [Cc, T, H, W] of an image conditioning for a latent of T x H x W: the
-- file's (checked against the latent's size) or synthetic ones (made once per size and kept).
function Model:condition_latents(image, T, H, W, dt, dev)
  local cfg = self.cfg
  local Cc = M.condition_channels(cfg)
  if image.latents then
    local s = image.latents:shape()
    if s[2] ~= T or s[3] ~= H or s[4] ~= W then
      fail("forward: image_latents%s have shape %s, the latent is [%d, %d, %d, %d]: they were made for another video size",
        image.latents_from and (" of " .. image.latents_from) or "", shape_str(s), cfg.out_channels, T, H, W)
    end
    if image.latents:dtype() == dt and image.latents:device() == dev then return image.latents end
    -- another dtype or device than the latent's: a converted copy, made once
    image.converted = image.converted or {}
    local key = dt .. "/" .. dev
    if not image.converted[key] then image.converted[key] = image.latents:to(dt):to(dev) end
    return image.converted[key]
  end
  if type(image.seed) ~= "number" then
    fail("forward: cond.image has neither latents [%d, T, H, W] nor a seed for synthetic ones", Cc)
  end
  image.synthetic_latents = image.synthetic_latents or {}
  local key = table.concat({T, H, W, dt, dev}, "/")
  local l = image.synthetic_latents[key]
  if not l then
    l = M.synthetic_condition_latents(cfg, T, H, W, image.seed, dt, dev)
    image.synthetic_latents[key] = l
  end
  return l
end

-- One velocity evaluation. x: latent [C, T, H, W] (H, W even); t: timestep in [0, 1000];
-- cond = {states [L, text_dim]} (wan.conditioning's cond or uncond); ctx: an attention context
-- (ctx:attention(q, k, v, info)) or nil for dense attention. Image-to-video: cond.image =
-- {embeds [N, image_dim], latents [Cc, T, H, W] or seed} (wan.conditioning's), and x is the noisy
-- latent [out_channels, T, H, W] (the condition latents are concatenated here) or already the
-- whole input [in_channels, T, H, W]; the velocity has out_channels.
function Model:forward(x, t, cond, ctx)
  local cfg = self.cfg
  local i2v = M.is_i2v(cfg)
  local shp = x:shape()
  local ok_c = shp[1] == cfg.in_channels or (i2v and shp[1] == cfg.out_channels)
  if #shp ~= 4 or not ok_c or shp[3] % 2 ~= 0 or shp[4] % 2 ~= 0 then
    fail("forward: x must have shape [%s, T, H, W] with H and W even, got %s",
      i2v and string.format("%d (or %d with the condition latents)", cfg.out_channels, cfg.in_channels) or tostring(cfg.in_channels),
      shape_str(shp))
  end
  if type(cond) ~= "table" or not adaspa.is_tensor(cond.states) then
    fail("forward: cond must be a table with states [L, %d] (wan.conditioning's cond)", cfg.text_dim)
  end
  need_rows(cond.states, cfg.text_dim, "cond.states", "L")
  local img_e, x_in
  if i2v then
    local image = cond.image
    if type(image) ~= "table" or not adaspa.is_tensor(image.embeds) then
      fail("forward: image-to-video: cond.image must be a table with embeds [N, %d] (wan.conditioning's cond)", cfg.image_dim)
    end
    need_rows(image.embeds, cfg.image_dim, "cond.image.embeds", "N")
    img_e = self:embed_image(image.embeds)                                                    -- [N, dim]
    if shp[1] == cfg.out_channels then
      x_in = adaspa.concat({x, self:condition_latents(image, shp[2], shp[3], shp[4], x:dtype(), x:device())})
    end
  end
  x = x_in or x
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
    drop(k, v, k3, v3)
    if img_e then
      -- the image branch: the same normalized query over the embedded image states; its output
      -- is added to the text attention's before to_out
      local ki = self:lin(img_e, p .. "attn2.add_k_proj")
      local vi = self:lin(img_e, p .. "attn2.add_v_proj")
      adaspa.rmsnorm(ki, w[p .. "attn2.norm_added_k.weight"], eps, {out = ki})
      local Li = ki:shape()[1]
      local ki3, vi3 = heads(ki, Li), heads(vi, Li)
      local ai = adaspa.attention(q3, ki3, vi3)
      adaspa.add(a, ai, {out = a})
      drop(ki, vi, ki3, vi3, ai)
    end
    drop(q, q3)
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
  if x_in then x_in:free() end
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
  if M.is_i2v(cfg) then
    -- image-to-video: the image branch of each cross-attention (k, v of the Li image tokens and
    -- the attention over them), the image embedder, and its activations
    local Li, e = cfg.image_len, cfg.image_dim
    linear = linear + cfg.layers * (4 * Li * d * d + 4 * n * Li * d) + 2 * Li * e * (e + d)
    act = act + M.SLACK * Li * (e + 3 * d) * bytes
  end
  local attn = cfg.layers * 4 * n * n * d
  return {tokens = n, image_tokens = n, params = params, largest = largest, heads = cfg.heads, layers = cfg.layers,
          activation_bytes = act, linear_flops = linear, attention_flops = attn, output_bytes = n * d * bytes,
          weights_bytes = params * bytes + w32, flops_per_step = 2 * (linear + attn)}
end

-- One line for progress lines and reports.
function M.describe(cfg)
  return string.format("Wan2.1 %s, %d blocks, %d heads x %d, ffn %d%s", tostring(cfg.preset), cfg.layers, cfg.heads,
    cfg.head_dim, cfg.ffn, M.is_i2v(cfg) and string.format(", image-to-video (image %d, in %d)", cfg.image_dim,
    cfg.in_channels) or "")
end

local C = require "adaspa.check"
-- The recipe's model.* fields of Wan (beyond the shared name, preset, weights, ...).
M.schema = {
  dim = C.integer{min = 6, max = 65536, doc = "model width (default: the preset's; a multiple of model.heads)"},
  heads = C.integer{min = 1, max = 1024, doc = "attention heads (default: the preset's; dim / heads even, >= 6)"},
  layers = C.integer{min = 1, max = 1000, doc = "transformer blocks (default: the preset's: 30 for 1.3B, 40 for 14B)"},
  ffn = C.integer{min = 1, max = 262144, doc = "feed-forward width (default: the preset's)"},
  text_len = C.integer{min = 1, max = 4096, doc = "text tokens of the cross-attention (default 512, the encoder's)"},
  task = C.string{one_of = {"t2v", "i2v"}, doc = "i2v: the image-to-video variant of the preset (auto, 14B -> I2V-14B-720P, " ..
    "small -> small_i2v; or name an I2V preset); t2v: insist on text-to-video (default: the preset's)"},
}

-- wan.config overrides from the recipe's model table (its M.schema fields).
function M.overrides(m, preset)
  local over = {}
  for k in pairs(M.schema) do over[k] = m[k] end
  return over
end

return M
