-- adaspa.models.hunyuan: HunyuanVideo's DiT (../shared/reference/hunyuan.md) built from core ops,
-- and its entry in the model registry (adaspa.models: the interface is described there).
--
--   local hy = require "adaspa.models.hunyuan"
--   local cfg = hy.config("small", {layers = {double = 1}})   -- a preset plus overrides
--   local model = hy.new(cfg, weights)                          -- weights: name -> tensor
--   local c = hy.conditioning(cfg, {prompt = "a fox", guidance = 6.0})
--   local v = model:forward(x, t, c.cond, ctx)                  -- x [16, T, H, W] -> velocity
--   (the older form model:forward(x, t, text, guidance, ctx) still works)
--
-- Weights use the original checkpoint's names (adaspa.weights converts diffusers' layout).
-- Attention goes through ctx:attention(q, k, v, info), info = {layer=, kind=, kv_valid=,
-- n_img=, n_txt=, grid=}, so a policy can make it sparse without touching the model.
-- With ctx.sp (adaspa.parallel, several processes) each rank holds a slice of the video tokens
-- and all the text tokens; the joint attention exchanges through sp:attention (text split by
-- heads there) and the output rows are gathered, so every rank gets the same velocity.
local adaspa = require "adaspa"
local parallel = require "adaspa.parallel"

local hy = {}

hy.name = "hunyuan"
hy.doc = "HunyuanVideo text-to-video (13B DiT: double- and single-stream blocks, joint text tokens, embedded guidance)"
hy.default_preset = "720p"
hy.cpu_preset = "small"
hy.sampler_defaults = {shift = 7.0, steps = 50, guidance = {kind = "embedded", scale = 6.0}}
hy.fps = 24
-- Runs sequence-parallel over several processes (adaspa.parallel: ctx.sp; adaspa launch -n N).
hy.sequence_parallel = true

hy.presets = {
  ["720p"] = {
    hidden = 3072, heads = 24, head_dim = 128, mlp_ratio = 4, layers = {double = 20, single = 40, refiner = 2},
    in_channels = 16, text_dim = 4096, text_len = 256, pooled_dim = 768, rope_axes = {16, 56, 56},
    rope_theta = 256, eps = 1e-6, video = {width = 1280, height = 720, frames = 129},
    fused_norm_rope = true,
  },
  small = {
    hidden = 256, heads = 2, head_dim = 128, mlp_ratio = 4, layers = {double = 2, single = 2, refiner = 1},
    in_channels = 16, text_dim = 4096, text_len = 32, pooled_dim = 768, rope_axes = {16, 56, 56},
    rope_theta = 256, eps = 1e-6, video = {width = 320, height = 256, frames = 17},
    fused_norm_rope = true,
  },
}

local common = require "adaspa.models.common"
local deep_copy, merge = common.deep_copy, common.merge

-- A preset's configuration with overrides merged in (nested tables merge field by field).
function hy.config(preset, overrides)
  local p = hy.presets[preset]
  if not p then
    local names = {}
    for k in pairs(hy.presets) do names[#names + 1] = k end
    table.sort(names)
    error(string.format("hunyuan: unknown preset %q (presets: %s)", tostring(preset), table.concat(names, ", ")), 2)
  end
  local cfg = merge(deep_copy(p), overrides)
  cfg.preset, cfg.model = preset, hy.name
  if cfg.hidden ~= cfg.heads * cfg.head_dim then
    error(string.format("hunyuan: hidden (%d) must equal heads (%d) x head_dim (%d)", cfg.hidden, cfg.heads, cfg.head_dim), 2)
  end
  local a = cfg.rope_axes
  if a[1] + a[2] + a[3] ~= cfg.head_dim then
    error(string.format("hunyuan: rope_axes {%d, %d, %d} must sum to head_dim %d", a[1], a[2], a[3], cfg.head_dim), 2)
  end
  return cfg
end

-- The latent grid and token counts of a video size: latent [16, T, H/8, W/8], tokens
-- T x H/16 x W/16 (patch 1x2x2), with T = (frames - 1)/4 + 1. (cfg is not needed: the VAE and
-- the patch are fixed.)
function hy.grid(video, cfg)
  local T = (video.frames - 1) / 4 + 1
  return {T, video.height / 16, video.width / 16}, {16, T, video.height / 8, video.width / 8}
end

-- Every weight of the model: name -> shape (original checkpoint layout; linears as
-- name.weight [out, in] and name.bias [out]).
function hy.weight_shapes(cfg)
  local h, mlp, pd = cfg.hidden, cfg.hidden * cfg.mlp_ratio, cfg.head_dim
  local shapes = {}
  local function lin(name, out, inp)
    shapes[name .. ".weight"] = {out, inp}
    shapes[name .. ".bias"] = {out}
  end
  shapes["img_in.proj.weight"] = {h, cfg.in_channels, 1, 2, 2}
  shapes["img_in.proj.bias"] = {h}
  lin("time_in.mlp.0", h, 256); lin("time_in.mlp.2", h, h)
  lin("guidance_in.mlp.0", h, 256); lin("guidance_in.mlp.2", h, h)
  lin("vector_in.in_layer", h, cfg.pooled_dim); lin("vector_in.out_layer", h, h)
  lin("txt_in.input_embedder", h, cfg.text_dim)
  lin("txt_in.t_embedder.mlp.0", h, 256); lin("txt_in.t_embedder.mlp.2", h, h)
  lin("txt_in.c_embedder.linear_1", h, cfg.text_dim); lin("txt_in.c_embedder.linear_2", h, h)
  for i = 0, cfg.layers.refiner - 1 do
    local p = "txt_in.individual_token_refiner.blocks." .. i
    for _, n in ipairs({"norm1", "norm2"}) do
      shapes[p .. "." .. n .. ".weight"] = {h}
      shapes[p .. "." .. n .. ".bias"] = {h}
    end
    lin(p .. ".self_attn_qkv", 3 * h, h); lin(p .. ".self_attn_proj", h, h)
    lin(p .. ".mlp.fc1", mlp, h); lin(p .. ".mlp.fc2", h, mlp)
    lin(p .. ".adaLN_modulation.1", 2 * h, h)
  end
  for i = 0, cfg.layers.double - 1 do
    local p = "double_blocks." .. i
    for _, s in ipairs({"img", "txt"}) do
      lin(p .. "." .. s .. "_mod.linear", 6 * h, h)
      lin(p .. "." .. s .. "_attn_qkv", 3 * h, h)
      shapes[p .. "." .. s .. "_attn_q_norm.weight"] = {pd}
      shapes[p .. "." .. s .. "_attn_k_norm.weight"] = {pd}
      lin(p .. "." .. s .. "_attn_proj", h, h)
      lin(p .. "." .. s .. "_mlp.fc1", mlp, h); lin(p .. "." .. s .. "_mlp.fc2", h, mlp)
    end
  end
  for i = 0, cfg.layers.single - 1 do
    local p = "single_blocks." .. i
    lin(p .. ".linear1", 3 * h + mlp, h); lin(p .. ".linear2", h, h + mlp)
    shapes[p .. ".q_norm.weight"] = {pd}
    shapes[p .. ".k_norm.weight"] = {pd}
    lin(p .. ".modulation.linear", 3 * h, h)
  end
  lin("final_layer.linear", cfg.in_channels * 4, h)
  lin("final_layer.adaLN_modulation.1", 2 * h, h)
  return shapes
end

-- ---- the model ----------------------------------------------------------------------------------

local Model = {}
Model.__index = Model

function hy.new(cfg, weights)
  local shapes = hy.weight_shapes(cfg)
  for name, shape in pairs(shapes) do
    local w = weights[name]
    if not w then error("hunyuan: missing weight " .. name, 2) end
    local got = w:shape()
    if table.concat(got, ",") ~= table.concat(shape, ",") then
      error(string.format("hunyuan: weight %s has shape [%s], expected [%s]", name, table.concat(got, ", "),
        table.concat(shape, ", ")), 2)
    end
  end
  local m = setmetatable({cfg = cfg, w = weights}, Model)
  -- the patch embedding is a linear over 64 inputs per token (input index c*4 + kh*2 + kw)
  m.patch_w = weights["img_in.proj.weight"]:reshape({cfg.hidden, cfg.in_channels * 4})
  return m
end

function Model:lin(x, name, opts)
  return adaspa.linear(x, self.w[name .. ".weight"], self.w[name .. ".bias"], opts)
end

-- Linear(SiLU(Linear(x))): the embedders of time, guidance, pooled text.
function Model:mlp2(x, a, b)
  return self:lin(adaspa.silu(self:lin(x, a)), b)
end

-- Modulation vectors: n chunks of Linear(SiLU(vec)), each [hidden].
function Model:mod(vec_silu, name, n)
  local all = self:lin(vec_silu, name):reshape({n * self.cfg.hidden})
  local out = {}
  for i = 1, n do out[i] = all:narrow(1, (i - 1) * self.cfg.hidden + 1, self.cfg.hidden) end
  return out
end

-- modulate(LayerNorm(x), shift, scale): one fused pass on the GPU.
function Model:ln_mod(x, shift, scale)
  return adaspa.layernorm_modulate(x, self.cfg.eps, nil, nil, shift, scale)
end

-- x = x + gate * y (in place), then ln_mod(x, shift, scale): a block's residual update and the
-- next input norm in one pass over the stream (adaspa.gated_add_layernorm_modulate); with
-- cfg.fused_add_norm = false the two ops in turn. The same bits on the CPU either way.
function Model:add_ln_mod(x, gate, y, shift, scale)
  if self.cfg.fused_add_norm == false then
    adaspa.gated_add(x, gate, y, {out = x})
    return self:ln_mod(x, shift, scale)
  end
  return (adaspa.gated_add_layernorm_modulate(x, gate, y, self.cfg.eps, nil, nil, shift, scale, {x_out = x}))
end

-- qkv [S, 3*hidden] -> q, k, v views [S, heads, head_dim] (q and k RMS-normalized when norms given;
-- with rope = {grid = {T, H, W}, n = T*H*W}, the first n tokens of q and k also get the 3D RoPE, in
-- the same pass: adaspa.rmsnorm_rope3d). With norms, qo and ko (optional, contiguous [S, heads,
-- head_dim]) receive the normalized q and k (and are returned), else they are new tensors.
function Model:split_qkv(qkv, qn, kn, rope, qo, ko)
  local S, H, D = qkv:shape()[1], self.cfg.heads, self.cfg.head_dim
  -- every view holds its storage until freed or collected: the temporary ones are freed here
  local r = qkv:reshape({S, 3, H, D})
  local function part(i)
    local n = r:narrow(2, i, 1)
    local t = n:reshape({S, H, D})
    n:free()
    return t
  end
  local q, k, v = part(1), part(2), part(3)
  r:free()
  if qn then
    local qr, kr = q, k
    local c = self.cfg
    local qopt, kopt = qo and {out = qo}, ko and {out = ko}
    if rope then
      q = adaspa.rmsnorm_rope3d(qr, self.w[qn], c.eps, rope.grid, c.rope_axes, c.rope_theta, rope.n, qopt)
      k = adaspa.rmsnorm_rope3d(kr, self.w[kn], c.eps, rope.grid, c.rope_axes, c.rope_theta, rope.n, kopt)
    else
      q = adaspa.rmsnorm(qr, self.w[qn], c.eps, qopt)
      k = adaspa.rmsnorm(kr, self.w[kn], c.eps, kopt)
    end
    qr:free()
    kr:free()
  end
  return q, k, v
end

-- Text refiner: raw text states [L, text_dim] with `valid` leading tokens -> [L, hidden].
function Model:refine(text, valid, temb)
  local cfg = self.cfg
  local mean = adaspa.matmul(adaspa.full({1, valid}, 1 / valid, {dtype = text:dtype(), device = text:device()}),
    text:narrow(1, 1, valid))                                                   -- masked mean [1, text_dim]
  local c = adaspa.add(self:mlp2(temb, "txt_in.t_embedder.mlp.0", "txt_in.t_embedder.mlp.2"),
    self:mlp2(mean, "txt_in.c_embedder.linear_1", "txt_in.c_embedder.linear_2"))
  local c_silu = adaspa.silu(c)
  local x = self:lin(text, "txt_in.input_embedder")
  local L = x:shape()[1]
  for i = 0, cfg.layers.refiner - 1 do
    local p = "txt_in.individual_token_refiner.blocks." .. i
    local g = self:mod(c_silu, p .. ".adaLN_modulation.1", 2)
    local n1 = adaspa.layernorm(x, cfg.eps, self.w[p .. ".norm1.weight"], self.w[p .. ".norm1.bias"])
    local q, k, v = self:split_qkv(self:lin(n1, p .. ".self_attn_qkv"))
    local a = adaspa.attention(q, k, v, {kv_valid = valid})
    x = adaspa.gated_add(x, g[1], self:lin(a:reshape({L, cfg.hidden}), p .. ".self_attn_proj"), {out = x})
    local n2 = adaspa.layernorm(x, cfg.eps, self.w[p .. ".norm2.weight"], self.w[p .. ".norm2.bias"])
    local h = self:lin(adaspa.silu(self:lin(n2, p .. ".mlp.fc1")), p .. ".mlp.fc2")
    x = adaspa.gated_add(x, g[2], h, {out = x})
  end
  return x
end

-- One velocity evaluation. x: latent [16, T, H/8, W/8]; t: timestep (0..1000);
-- text = {states [L, text_dim], valid = n, pooled [1, pooled_dim], guidance = the embedded
-- guidance scale, e.g. 6.0} (hy.conditioning's cond or uncond);
-- ctx: {attention = function(ctx, q, k, v, info) -> out [S, H, D]} or nil for dense.
-- The older form forward(x, t, text, guidance, ctx) gives the scale apart.
function Model:forward(x, t, text, a4, a5)
  local guidance, ctx
  if type(a4) == "number" then
    guidance, ctx = a4, a5
  else
    guidance, ctx = text.guidance, a4
    if type(guidance) ~= "number" then
      error("hunyuan: forward(x, t, cond, ctx): cond.guidance (the embedded guidance scale) must be a number, got "
        .. type(guidance) .. " (build cond with hunyuan.conditioning, or call forward(x, t, text, guidance, ctx))", 2)
    end
  end
  local cfg = self.cfg
  local C, T, Hl, Wl = unpack(x:shape())
  local grid = {T, Hl / 2, Wl / 2}
  local n_img = grid[1] * grid[2] * grid[3]
  local L, valid = text.states:shape()[1], text.valid
  local dev, dt = x:device(), x:dtype()
  local function scalar(v) return adaspa.tensor({v}, {dtype = "f32", device = dev}) end
  local temb = adaspa.timestep_embedding(scalar(t), 256, 10000):to(dt)
  local gemb = adaspa.timestep_embedding(scalar(guidance * 1000), 256, 10000):to(dt)
  local vec = adaspa.add(adaspa.add(self:mlp2(temb, "time_in.mlp.0", "time_in.mlp.2"),
    self:mlp2(text.pooled, "vector_in.in_layer", "vector_in.out_layer")),
    self:mlp2(gemb, "guidance_in.mlp.0", "guidance_in.mlp.2"))
  local vs = adaspa.silu(vec)

  -- sequence parallelism (ctx.sp, adaspa.parallel): this rank holds a contiguous slice of the
  -- video tokens (rows of n_img) and every text token; the text's per-token layers run on every
  -- rank (they are small, and the same inputs give the same bits on each), and its attention
  -- rows are split by heads inside sp:attention
  local sp = parallel.of(ctx)
  local img, rows = parallel.embed_patches(sp, x, self.patch_w, self.w["img_in.proj.bias"])  -- [rows, hidden]
  local txt = self:refine(text.states, valid, temb)                                          -- [L, hidden]
  local kv_valid = n_img + valid
  local rotate -- defined below
  local attend = function(q, k, v, info)
    info.kv_valid, info.n_img, info.n_txt, info.grid = kv_valid, n_img, L, grid
    if sp then return sp:attention(ctx, q, k, v, info, rotate) end
    if ctx and ctx.attention then return ctx:attention(q, k, v, info) end
    return (adaspa.attention(q, k, v, {kv_valid = kv_valid}))
  end
  local layer = 0
  local h = cfg.hidden

  -- Intermediates are freed as soon as they are used (t:free()), so GPU memory holds about one
  -- block's activations instead of waiting for Lua's collector.
  local function drop(...)
    for j = 1, select("#", ...) do
      local t = select(j, ...)
      if t then t:free() end
    end
  end
  -- fused_norm_rope (default on; its GPU parity specs passed on an H200): q and k normalized and
  -- rotated in one pass (adaspa.rmsnorm_rope3d); the CPU results are the same either way
  -- With sequence parallelism the positions are whole only after the exchange: RoPE runs there
  -- (sp:attention's prepare), as a separate pass (on the CPU the fused pass is rmsnorm then the
  -- same rope3d, so the bits do not change).
  local rope = (cfg.fused_norm_rope and not sp) and {grid = grid, n = n_img} or nil
  rotate = function(q, k) -- the separate RoPE pass, when not fused
    if rope then return end
    adaspa.rope3d(q, grid, cfg.rope_axes, cfg.rope_theta, n_img, {out = q})
    adaspa.rope3d(k, grid, cfg.rope_axes, cfg.rope_theta, n_img, {out = k})
  end
  -- A residual update x_ = x_ + gate * y is kept pending as {gate, y} until x_ is next read: a
  -- ln_mod there applies it in the same pass (norm_after), anything else applies it first
  -- (settle). y is freed once applied; a pending update never spans an attention.
  local function settle(x_, pend)
    if not pend then return end
    adaspa.gated_add(x_, pend[1], pend[2], {out = x_})
    drop(pend[2])
  end
  local function norm_after(x_, pend, shift, scale)
    if not pend then return self:ln_mod(x_, shift, scale) end
    local xm = self:add_ln_mod(x_, pend[1], pend[2], shift, scale)
    drop(pend[2])
    return xm
  end
  local function proj_qkv(x_, m, pend, name, qn, kn, rope_, qo, ko, qkv_out)
    local xm = norm_after(x_, pend, m[1], m[2])
    local qkv = self:lin(xm, name, {out = qkv_out})
    drop(xm)
    local q, k, v = self:split_qkv(qkv, qn, kn, rope_, qo, ko)
    drop(qkv) -- v stays valid: a view keeps the storage
    return q, k, v
  end

  local img_pend, txt_pend -- the MLP updates of the previous double block
  for i = 0, cfg.layers.double - 1 do
    local p = "double_blocks." .. i
    local im = self:mod(vs, p .. ".img_mod.linear", 6)
    local tm = self:mod(vs, p .. ".txt_mod.linear", 6)
    -- both streams' QKV GEMMs write their row ranges of one joint [rows + L, 3 hidden] tensor,
    -- and the norms write q and k straight into their row ranges of the joint [rows + L, heads,
    -- head_dim] tensors (image rows normalized, and rotated when RoPE is fused, then the text
    -- rows), so v is a strided view of the joint qkv and nothing is concatenated; the separate
    -- RoPE pass, when there is one, rotates the image rows of the joint tensors (rope3d takes the
    -- first n_img)
    local dt = {dtype = img:dtype(), device = img:device()}
    local q = adaspa.empty({rows + L, cfg.heads, cfg.head_dim}, dt)
    local k = adaspa.empty({rows + L, cfg.heads, cfg.head_dim}, dt)
    local qkv = adaspa.empty({rows + L, 3 * h}, dt)
    local qkv_i, qkv_t = qkv:narrow(1, 1, rows), qkv:narrow(1, rows + 1, L)
    local iq, ik, iv = proj_qkv(img, im, img_pend, p .. ".img_attn_qkv", p .. ".img_attn_q_norm.weight",
      p .. ".img_attn_k_norm.weight", rope, q:narrow(1, 1, rows), k:narrow(1, 1, rows), qkv_i)
    local tq, tk, tv = proj_qkv(txt, tm, txt_pend, p .. ".txt_attn_qkv", p .. ".txt_attn_q_norm.weight",
      p .. ".txt_attn_k_norm.weight", nil, q:narrow(1, rows + 1, L), k:narrow(1, rows + 1, L), qkv_t)
    img_pend, txt_pend = nil, nil
    local vq, vk, v = self:split_qkv(qkv) -- v: a view of the joint qkv's v columns
    drop(iq, ik, iv, tq, tk, tv, qkv_i, qkv_t, vq, vk, qkv) -- the row views; v keeps the storage
    if not sp then rotate(q, k) end
    layer = layer + 1
    local a = attend(q, k, v, {layer = layer, kind = "double", index = i})
    drop(q, k, v)
    local a2 = a:reshape({rows + L, h})
    local ai, at = a2:narrow(1, 1, rows), a2:narrow(1, rows + 1, L)
    local pi = self:lin(ai, p .. ".img_attn_proj")
    local pt = self:lin(at, p .. ".txt_attn_proj")
    drop(a, a2, ai, at)
    -- the attention's residual update (gate 3) applied in the MLP's input norm; the MLP's own
    -- update (gate 6) left pending for the next block's first norm
    local function mlp(x_, m, s, proj)
      local xm = norm_after(x_, {m[3], proj}, m[4], m[5])
      local y = self:lin(xm, p .. "." .. s .. "_mlp.fc1", {act = "gelu_tanh"}) -- GELU in the GEMM's epilogue
      drop(xm)
      local z = self:lin(y, p .. "." .. s .. "_mlp.fc2")
      drop(y)
      return {m[6], z}
    end
    img_pend = mlp(img, im, "img", pi)
    txt_pend = mlp(txt, tm, "txt", pt)
  end
  settle(img, img_pend) -- the concatenation reads the streams
  settle(txt, txt_pend)

  local xs = adaspa.concat({img, txt})                                                       -- [rows + L, hidden]
  drop(img, txt)
  local S = rows + L
  local mlp_w = h * cfg.mlp_ratio
  local xs_pend -- the previous single block's update
  for i = 0, cfg.layers.single - 1 do
    local p = "single_blocks." .. i
    local m = self:mod(vs, p .. ".modulation.linear", 3)
    local xm = norm_after(xs, xs_pend, m[1], m[2])
    xs_pend = nil
    -- linear1 [3h + mlp, h] as two GEMMs over its row ranges (views of the weight and bias): the
    -- q, k, v part [S, 3h], and the MLP part [S, mlp] with the GELU in its epilogue (after the
    -- attention, so xm [S, h] rather than the activation is held across it)
    local w1, b1 = self.w[p .. ".linear1.weight"], self.w[p .. ".linear1.bias"]
    local w1q, b1q = w1:narrow(1, 1, 3 * h), b1:narrow(1, 1, 3 * h)
    local qkv = adaspa.linear(xm, w1q, b1q)                                                 -- [S, 3h]
    drop(w1q, b1q)
    -- q, k, v read in place from qkv (strided rows): no copy
    local q, k, v = self:split_qkv(qkv, p .. ".q_norm.weight", p .. ".k_norm.weight", rope)
    drop(qkv) -- v stays valid: a view keeps the storage
    if not sp then rotate(q, k) end
    layer = layer + 1
    local a = attend(q, k, v, {layer = layer, kind = "single", index = i})
    drop(q, k, v)
    local a2 = a:reshape({S, h})
    local w1m, b1m = w1:narrow(1, 3 * h + 1, mlp_w), b1:narrow(1, 3 * h + 1, mlp_w)
    local act = adaspa.linear(xm, w1m, b1m, {act = "gelu_tanh"})                           -- [S, mlp]
    drop(xm, w1m, b1m)
    -- linear2 over [attention, activation]: the attention half, then the MLP half accumulated
    -- onto it in the GEMM (no temporary, no separate add)
    local w2 = self.w[p .. ".linear2.weight"]
    local w2a, w2m = w2:narrow(2, 1, h), w2:narrow(2, h + 1, mlp_w)
    local y = adaspa.linear(a2, w2a, self.w[p .. ".linear2.bias"])
    drop(a, a2)
    adaspa.linear(act, w2m, nil, {out = y, accumulate = true})
    drop(act, w2a, w2m)
    xs_pend = {m[3], y}
  end

  -- the final layer reads the image rows only: the last update is applied to them alone, in its norm
  local fm = self:mod(vs, "final_layer.adaLN_modulation.1", 2)                              -- shift, scale
  local xs_img = xs:narrow(1, 1, rows)
  local xm
  if xs_pend then
    xm = norm_after(xs_img, {xs_pend[1], xs_pend[2]:narrow(1, 1, rows)}, fm[1], fm[2])
    drop(xs_pend[2])
  else
    xm = self:ln_mod(xs_img, fm[1], fm[2])
  end
  drop(xs, xs_img)
  local out = self:lin(xm, "final_layer.linear")
  drop(xm)
  out = parallel.gather_rows(sp, out, n_img)                                                 -- [n_img, out]
  local velocity = adaspa.unpatchify(out, {T, Hl, Wl})
  drop(out)
  return velocity
end

-- ---- the registry entry (adaspa.models) -------------------------------------------------------------

local C = require "adaspa.check"

-- Self-attention calls through ctx:attention per forward: every double and single block.
function hy.attention_layers(cfg) return cfg.layers.double + cfg.layers.single end

-- Tokens of each self-attention call: the latent tokens, then the text tokens joined to them.
function hy.tokens(cfg, video)
  local g = hy.grid(video, cfg)
  return {n_img = g[1] * g[2] * g[3], n_txt = cfg.text_len}
end

-- One line for progress lines and reports.
function hy.describe(cfg)
  return string.format("HunyuanVideo %s, %d double + %d single blocks, %d heads x %d", cfg.preset, cfg.layers.double,
    cfg.layers.single, cfg.heads, cfg.head_dim)
end

-- The recipe's model.* fields of HunyuanVideo (beyond the shared name, preset, weights, ...).
hy.schema = {
  hidden = C.integer{min = 1, max = 65536, doc = "model width (default: the preset's; heads x head_dim)", extra = function(v, root)
    local m = root.model
    if C.finite(m.heads) and C.finite(m.head_dim) and v ~= m.heads * m.head_dim then
      return string.format("must equal model.heads x model.head_dim (%d x %d = %d)", m.heads, m.head_dim, m.heads * m.head_dim)
    end
  end},
  heads = C.integer{min = 1, max = 1024, doc = "attention heads (default: the preset's)"},
  head_dim = C.integer{min = 128, max = 128, doc = "channels per head: 128, the sum of the 3D RoPE axes 16 + 56 + 56"},
  mlp_ratio = C.integer{min = 1, max = 64, doc = "MLP width / model width (default: the preset's, 4)"},
  text_len = C.integer{min = 1, max = 4096, doc = "text tokens (default: the preset's; with text.embeds, the file's)"},
  fused_norm_rope = C.boolean{default = true,
    doc = "q and k RMSNorm + RoPE in one pass (adaspa.rmsnorm_rope3d; same results as the two passes)"},
  fused_add_norm = C.boolean{default = true,
    doc = "each residual update and the next LayerNorm + modulation in one pass (adaspa.gated_add_layernorm_modulate; "
      .. "same results on the CPU as the two passes)"},
  layers = {double = C.integer{min = 0, max = 1000, doc = "double-stream blocks (default: the preset's)"},
            single = C.integer{min = 0, max = 1000, doc = "single-stream blocks (default: the preset's)"},
            refiner = C.integer{min = 0, max = 1000, doc = "text refiner blocks (default: the preset's)"}},
}

-- hy.config overrides from the recipe's model table (its hy.schema fields).
function hy.overrides(m, preset)
  local over = {}
  for _, k in ipairs({"hidden", "heads", "head_dim", "mlp_ratio", "text_len", "fused_norm_rope", "fused_add_norm"}) do
    over[k] = m[k]
  end
  over.layers = {}
  for k, v in pairs(m.layers or {}) do over.layers[k] = v end
  if over.hidden == nil and (over.heads or over.head_dim) then
    local p = hy.presets[preset]
    over.hidden = (over.heads or p.heads) * (over.head_dim or p.head_dim)
  end
  return over
end

-- Weights from a checkpoint: one file, shards or a folder; original or diffusers keys
-- (adaspa.weights); opts = {device, dtype, prefix}.
function hy.load_weights(source, cfg, opts)
  return require("adaspa.weights").load(source, cfg, opts)
end

-- Deterministic synthetic weights whose attention has a video DiT's structure (hunyuan_synth).
function hy.synthetic_weights(cfg, opts)
  return require("adaspa.models.hunyuan_synth").weights(cfg, opts)
end

-- The conditioning of one run: cond (and uncond when opts.cfg asks for classifier-free guidance),
-- each {states, valid, pooled, guidance}. opts: embeds (a file: text_states, text_mask,
-- text_pooled, and negative_* for uncond), prompt, negative (the unconditional prompt of synthetic
-- embeddings; default ""), guidance (the embedded scale both branches carry), cfg, device, dtype.
function hy.conditioning(cfg, opts)
  local text = require "adaspa.text"
  local o = {device = opts.device, dtype = opts.dtype}
  local g = opts.guidance or hy.sampler_defaults.guidance.scale
  local cond, uncond
  if opts.embeds then
    cond = text.load(opts.embeds, cfg, o)
    if opts.cfg then
      uncond = text.load(opts.embeds, cfg, {device = o.device, dtype = o.dtype, prefix = "negative_", optional = true})
      if not uncond then
        error(string.format("text.embeds: %s has no negative_text_states: classifier-free guidance needs the unconditional " ..
          "branch's embeddings (negative_text_states, negative_text_mask, negative_text_pooled), or sampler.guidance_kind=embedded",
          opts.embeds), 0)
      end
    end
  else
    cond = text.synthetic(opts.prompt or "", cfg, o)
    if opts.cfg then uncond = text.synthetic(opts.negative or "", cfg, o) end
  end
  cond.guidance = g
  local source = cond.source
  if uncond then
    uncond.guidance = g
    source = string.format("%s; unconditional: %s", cond.source, uncond.source)
  end
  return {cond = cond, uncond = uncond, source = source}
end

-- Numbers for adaspa.footprint's estimate (see adaspa.models): S = n_img + text_len tokens, width
-- h, MLP width m; the widest moment of a block is the single block's: the stream [S, h], its first
-- linear [S, 3h + m], normalized q and k [S, h] each, the MLP activation [S, m], the attention
-- output and two projections [S, h] each: 7h + 2m values per token, times hy.SLACK (measured on
-- the CPU: a step's peak holds about 2.5 times it), plus the f32 latents. (An upper bound since
-- linear1 runs as two GEMMs: q, k, v [S, 3h] and, after the attention, the activation [S, m].)
hy.SLACK = 2.5
function hy.estimate(cfg, video, dtype)
  local bytes = dtype == "f32" and 4 or 2
  local grid, latent = hy.grid(video, cfg)
  local n_img = grid[1] * grid[2] * grid[3]
  local S = n_img + cfg.text_len
  local h, m = cfg.hidden, cfg.hidden * cfg.mlp_ratio
  local layers = hy.attention_layers(cfg)
  local params, largest = 0, 0
  for _, shape in pairs(hy.weight_shapes(cfg)) do
    local n = 1
    for _, d in ipairs(shape) do n = n * d end
    params, largest = params + n, math.max(largest, n)
  end
  local latent_n = latent[1] * latent[2] * latent[3] * latent[4]
  return {tokens = S, image_tokens = n_img, params = params, largest = largest, heads = cfg.heads, layers = layers,
          activation_bytes = hy.SLACK * S * (7 * h + 2 * m) * bytes + 6 * latent_n * 4,
          linear_flops = 2 * S * (4 * h * h + 2 * h * m) * layers + 2 * n_img * h * cfg.in_channels * 4 * 2,
          attention_flops = 4 * S * S * h * layers, output_bytes = S * h * bytes}
end

return hy
