-- adaspa.models.hunyuan_synth: deterministic synthetic HunyuanVideo weights whose attention has
-- the structure of a trained video DiT (local in time and space, a different reach per head,
-- text keys as sinks, the same pattern across denoising steps, some dependence on the input).
--
--   local synth = require "adaspa.models.hunyuan_synth"
--   local w = synth.weights(cfg, {seed = 1, device = "cpu", dtype = "f32"})   -- name -> tensor
--   local plan = synth.plan(cfg)        -- plan[layer][head] = {kind=, reach=, sink=, ...}
--
-- Every tensor of hy.weight_shapes(cfg) comes from adaspa.randn with a seed hashed from (seed,
-- name), then deterministic whole-tensor edits (scale, narrow + copy / fill, matmul), so the
-- same seed gives the same weights on any machine, device and thread count.
--
-- The construction (see synth.plan for the mix of head kinds):
-- * Each head's q and k rows of the attention projection get a bias that, after the qk RMSNorm,
--   dominates the input-dependent part x W; RoPE then turns q_i . k_j into a kernel of relative
--   position, sum_p |b_p|^2 cos(theta_p (pos_i - pos_j)), peaked at distance 0. The rotation
--   pairs carrying the energy set the head's kind: t pairs -> spatial (own / nearby frames),
--   h and w pairs -> temporal (the same place in every frame), all three -> local 3D window,
--   slow pairs only -> wide. The band of pairs sets the reach; a share of k's energy moved to a
--   "dump" pair that q leaves empty lowers the head's sharpness without touching the shared
--   qk-norm weights.
-- * Text sinks: the slowest pair of each axis (barely rotated over the grid) is reserved as
--   the sink direction. Image queries put a per-head share s of their energy there; image keys
--   put none. Text keys point along it: in double blocks through the text stream's own qkv bias
--   and k-norm weight; in single blocks (shared linear1 and k norm) through a text-flag
--   direction u of the residual stream (txt_in's input_embedder bias puts u on every text
--   token; every projection writing into the image stream has u projected out, so image tokens
--   carry none), which linear1's k rows map onto the sink pairs.
-- * Numerics: linears ~ N(0, 1/fan_in) unless said; modulation linears small with gate biases
--   scaled by 1/sqrt(depth), so the residual stream stays O(1) and the velocity is O(1) per
--   element at any depth.
local adaspa = require "adaspa"
local hy = require "adaspa.models.hunyuan"

local synth = {}

-- 32-bit FNV-1a of a string (adaspa.text's): the per-tensor seed, the same on every machine.
synth.hash = require("adaspa.text").hash

local function seed_of(seed, name) return synth.hash(string.format("hunyuan_synth/%d/%s", seed, name)) end

-- ---- the plan: which kind of head where ---------------------------------------------------------

-- A fixed cycle of 8 kinds (3 local-3D, 2 spatial, 2 temporal, 1 wide); head h (0-based) of
-- layer l (0-based, double blocks first) takes cycle[(h + 3 l) mod 8], so every layer has a mix
-- and the mix shifts from layer to layer. Reach (1 narrow .. 3 broad) and sink strength
-- (weak / medium / strong) cycle with other strides, so kinds, reaches and sinks combine freely.
synth.cycle = {"local", "spatial", "temporal", "local", "wide", "spatial", "temporal", "local"}
synth.sink_levels = {weak = 0.02, medium = 0.14, strong = 0.26}   -- q's energy share on the sink pairs
local sink_cycle = {"weak", "strong", "medium", "weak", "medium"}
local content_levels = {0.3, 0.5, 0.8}   -- std of x W per q/k dim (the bias has RMS 1)

-- Sharpness of each reach level: the share of k's bias kept on the kernel pairs (the rest goes
-- to the dump pair).
local reach_keep = {1.0, 0.8, 0.62}

-- Within-axis pair bands (0-based, 0 = fastest) per kind and reach: {t = {lo, hi}, hw = {lo, hi}}.
local bands = {
  spatial = {{t = {0, 2}}, {t = {0, 3}}, {t = {1, 4}, hw = {10, 14}, hw_weight = 0.35}},
  temporal = {{hw = {0, 5}}, {hw = {0, 8}}, {hw = {2, 11}}},
  ["local"] = {{t = {0, 2}, hw = {0, 5}}, {t = {0, 3}, hw = {0, 8}}, {t = {1, 4}, hw = {2, 11}}},
  wide = {{t = {3, 4}, hw = {14, 19}}, {t = {3, 5}, hw = {16, 21}}, {t = {4, 5}, hw = {18, 23}}},
}

-- plan[layer][head] (both 1-based) = {kind=, reach=, sink=, sink_share=, keep=, content=}.
function synth.plan(cfg)
  local n = cfg.layers.double + cfg.layers.single
  local plan = {}
  for l = 0, n - 1 do
    plan[l + 1] = {}
    for h = 0, cfg.heads - 1 do
      local kind = synth.cycle[(h + 3 * l) % #synth.cycle + 1]
      local reach = (h + 2 * l) % 3 + 1
      local sink = sink_cycle[(2 * h + l) % #sink_cycle + 1]
      plan[l + 1][h + 1] = {
        kind = kind, reach = reach, sink = sink, sink_share = synth.sink_levels[sink],
        keep = reach_keep[reach],
        content = content_levels[(h + l) % #content_levels + 1],   -- std of x W per q/k dim (bias RMS is 1)
      }
    end
  end
  return plan
end

-- ---- per-head bias vectors (Lua tables of head_dim numbers) --------------------------------------

-- The rotation pairs of each axis: {first pair, count} for t, h, w.
local function axis_pairs(cfg)
  local a = cfg.rope_axes
  return {{0, a[1] / 2}, {a[1] / 2, a[2] / 2}, {(a[1] + a[2]) / 2, a[3] / 2}}
end

-- Reserved slow pairs (n = the axis's pair count, index 0 = its fastest pair):
--   sink  index n-1 of t, h and w: text keys live here; image queries put their sink share here
--   dump  index n-2 of h and w: k energy that no query reads (lowers a head's sharpness)
-- Kernel bands stop below them (t up to n-2, h and w up to n-3).
local function reserved(cfg)
  local ax = axis_pairs(cfg)
  local function at(a, back) return ax[a][1] + ax[a][2] - back end
  return {
    sink = {at(1, 1), at(2, 1), at(3, 1)},
    dump = {at(2, 2), at(3, 2)},
    top = {ax[1][2] - 2, ax[2][2] - 3, ax[3][2] - 3},    -- highest within-axis kernel index
  }
end

-- A vector with RMS 1 (squared norm D) spread over the given pairs {{pair, energy}, ...}; pair
-- i's energy goes along the direction dirs[i] = {a, b} of its two dims ({1, 0} when absent).
-- Only +, *, / and sqrt (correctly rounded), so the numbers are the same on every machine.
local function pair_vector(D, pairs, dirs)
  local v = {}
  for d = 1, D do v[d] = 0 end
  local tot = 0
  for _, e in ipairs(pairs) do tot = tot + e[2] end
  if tot == 0 then return v end
  for i, e in ipairs(pairs) do
    local amp = math.sqrt(e[2] / tot * D)
    local a, b = 1, 0
    if dirs then a, b = dirs[i][1], dirs[i][2] end
    local n = math.sqrt(a * a + b * b)
    v[2 * e[1] + 1] = v[2 * e[1] + 1] + amp * a / n
    v[2 * e[1] + 2] = v[2 * e[1] + 2] + amp * b / n
  end
  return v
end

-- The kernel pairs of a head: {{pair, energy}, ...}, energies jittered per head by `jit`.
local function kernel_pairs(cfg, head, jit)
  local ax, top = axis_pairs(cfg), reserved(cfg).top
  local b = bands[head.kind][head.reach]
  local out = {}
  local function band(axis, range, weight)
    if not range then return end
    for i = range[1], math.min(range[2], top[axis]) do
      out[#out + 1] = {ax[axis][1] + i, weight * math.max(0.25, 1 + 0.25 * jit[#out % #jit + 1])}
    end
  end
  band(1, b.t, 1)
  band(2, b.hw, b.hw_weight or 1)
  band(3, b.hw, b.hw_weight or 1)
  return out
end

local function unit_pairs(list)
  local out = {}
  for i, p in ipairs(list) do out[i] = {p, 1} end
  return out
end

-- The biases of one head as Lua tables of D numbers: q (queries: kernel plus the sink share),
-- k (image keys: kernel, part of it moved to the dump pairs), sink (the text keys' direction).
local function head_biases(cfg, head, jit)
  local D, r = cfg.head_dim, reserved(cfg)
  local kern = kernel_pairs(cfg, head, jit)
  local dirs = {}                                    -- the same in-pair directions for q and k
  for i = 1, #kern do dirs[i] = {jit[(2 * i) % #jit + 1] + 0.01, jit[(2 * i + 1) % #jit + 1]} end
  local kv = pair_vector(D, kern, dirs)
  local sv = pair_vector(D, unit_pairs(r.sink))
  local dv = pair_vector(D, unit_pairs(r.dump))
  local s, keep = head.sink_share, head.keep
  local q, k = {}, {}
  for d = 1, D do
    q[d] = math.sqrt(1 - s) * kv[d] + math.sqrt(s) * sv[d]
    k[d] = math.sqrt(keep) * kv[d] + math.sqrt(1 - keep) * dv[d]
  end
  return q, k, sv
end

-- Dims (1-based, within a head) of a list of pairs: both dims of each, or the first only.
local function pair_dims(pairs, first_only)
  local out = {}
  for _, p in ipairs(pairs) do
    out[#out + 1] = 2 * p + 1
    if not first_only then out[#out + 1] = 2 * p + 2 end
  end
  return out
end

-- ---- the weights --------------------------------------------------------------------------------

-- Constants of the construction (chosen by measurement with recipes/tools/probe_attention.lua);
-- opts.constants overrides any of them.
synth.constants = {
  qk_norm = 1.45,        -- qk RMSNorm weight: the sharpness of every head
  sink_norm = 1.4,       -- k-norm weight on the sink dims (text keys) relative to qk_norm
  text_flag = 1.0,       -- per-element size of the text flag u on text tokens
  text_key_sink = 3.0,   -- text keys' sink part relative to the image k bias (single blocks)
  mod_std = 0.3,         -- modulation linears: weight std x sqrt(hidden)
  gate = 0.3,            -- gate bias at depth 4; scaled by sqrt(4 / depth)
}

-- name -> tensor for every weight of hy.weight_shapes(cfg). opts: seed (default 1), device
-- ("cpu"), dtype ("f32"), structure (default true; false gives the same network's plain random
-- weights, the baseline), constants (overrides of synth.constants).
function synth.weights(cfg, opts)
  local so = require("adaspa.models.common").synth_options("hunyuan_synth.weights", opts, synth.constants)
  local seed, C = so.seed, so.C
  local dev, dt = so.device, so.dtype
  local structure = so.structure
  local h, H, D = cfg.hidden, cfg.heads, cfg.head_dim
  local mlp = h * cfg.mlp_ratio
  local depth = cfg.layers.double + cfg.layers.single
  local gate = C.gate * math.sqrt(4 / math.max(depth, 1))
  local shapes = hy.weight_shapes(cfg)
  local W = {}
  local o = {dtype = dt, device = dev}

  -- N(0, std^2) from the tensor's own seed (zeros for std 0)
  local rnd, lin = require("adaspa.models.common").seeded_normal(W, shapes,
    function(name) return seed_of(seed, name) end, dt, dev)
  local function vec(tbl) return adaspa.tensor(tbl, o) end
  local function modulation(name, n, gates)
    lin(name, C.mod_std / math.sqrt(h), 0)
    local b = W[name .. ".bias"]
    for _, i in ipairs(gates or {}) do b:narrow(1, (i - 1) * h + 1, h):fill(gate) end
  end

  -- embedders, refiner, blocks: N(0, 1/fan_in) linears, small biases
  rnd("img_in.proj.weight", 1 / math.sqrt(cfg.in_channels * 4))
  rnd("img_in.proj.bias", 0.1)
  lin("time_in.mlp.0", 1 / math.sqrt(128), 0.1); lin("time_in.mlp.2", 0.5 / math.sqrt(h))
  lin("guidance_in.mlp.0", 1 / math.sqrt(128), 0.1); lin("guidance_in.mlp.2", 0.5 / math.sqrt(h))
  lin("vector_in.in_layer", 1 / math.sqrt(cfg.pooled_dim), 0.1); lin("vector_in.out_layer", 0.5 / math.sqrt(h))
  lin("txt_in.input_embedder", 0.5 / math.sqrt(cfg.text_dim))
  lin("txt_in.t_embedder.mlp.0", 1 / math.sqrt(128), 0.1); lin("txt_in.t_embedder.mlp.2", 0.5 / math.sqrt(h))
  lin("txt_in.c_embedder.linear_1", 1 / math.sqrt(cfg.text_dim), 0.1)
  lin("txt_in.c_embedder.linear_2", 0.5 / math.sqrt(h))
  for i = 0, cfg.layers.refiner - 1 do
    local p = "txt_in.individual_token_refiner.blocks." .. i
    for _, n in ipairs({"norm1", "norm2"}) do
      local w = rnd(p .. "." .. n .. ".weight", 0.05)
      adaspa.add(w, adaspa.ones(w:shape(), o), {out = w})
      rnd(p .. "." .. n .. ".bias", 0.02)
    end
    lin(p .. ".self_attn_qkv", 1 / math.sqrt(h)); lin(p .. ".self_attn_proj", 1 / math.sqrt(h))
    lin(p .. ".mlp.fc1", 1 / math.sqrt(h)); lin(p .. ".mlp.fc2", 1 / math.sqrt(mlp))
    modulation(p .. ".adaLN_modulation.1", 2, {1, 2})
  end
  for i = 0, cfg.layers.double - 1 do
    local p = "double_blocks." .. i
    for _, s in ipairs({"img", "txt"}) do
      modulation(p .. "." .. s .. "_mod.linear", 6, {3, 6})
      lin(p .. "." .. s .. "_attn_qkv", 1 / math.sqrt(h))
      lin(p .. "." .. s .. "_attn_proj", 1 / math.sqrt(h))
      lin(p .. "." .. s .. "_mlp.fc1", 1 / math.sqrt(h)); lin(p .. "." .. s .. "_mlp.fc2", 1 / math.sqrt(mlp))
      W[p .. "." .. s .. "_attn_q_norm.weight"] = adaspa.ones({D}, o)
      W[p .. "." .. s .. "_attn_k_norm.weight"] = adaspa.ones({D}, o)
    end
  end
  for i = 0, cfg.layers.single - 1 do
    local p = "single_blocks." .. i
    lin(p .. ".linear1", 1 / math.sqrt(h))
    lin(p .. ".linear2", 1 / math.sqrt(h + mlp))
    W[p .. ".q_norm.weight"] = adaspa.ones({D}, o)
    W[p .. ".k_norm.weight"] = adaspa.ones({D}, o)
    modulation(p .. ".modulation.linear", 3, {3})
  end
  lin("final_layer.linear", 1 / math.sqrt(h))
  modulation("final_layer.adaLN_modulation.1", 2)
  for name, shape in pairs(shapes) do         -- the model's list and this one must agree
    if not W[name] then
      error(string.format("hunyuan_synth.weights: no rule for weight %s [%s] of hy.weight_shapes", name,
        table.concat(shape, ", ")), 2)
    end
  end
  if not structure then return W end

  -- ---- the structure ----
  -- the text flag u: alternating +-1/sqrt(h) (unit norm, zero mean, so LayerNorm keeps it)
  local ut = {}
  for d = 1, h do ut[d] = (d % 2 == 1 and 1 or -1) / math.sqrt(h) end
  local u_row = vec({ut})                                                 -- [1, h]
  local u_col = u_row:reshape({h, 1})
  -- writers: W [h, in] <- (I - u u^T) W, so nothing they write reaches the flag direction
  local function project_out(t)
    local w2 = t:reshape({h, t:numel() / h})
    adaspa.add(w2, adaspa.scale(adaspa.matmul(u_col, adaspa.matmul(u_row, w2)), -1), {out = w2})
  end
  -- readers: rows [r, h] <- rows (I - u u^T), so they ignore the flag
  local function ignore_flag(rows)
    adaspa.add(rows, adaspa.scale(adaspa.matmul(adaspa.matmul(rows, u_col), u_row), -1), {out = rows})
  end

  -- every text token carries u; no writer into the image stream has a component along it
  local eb = W["txt_in.input_embedder.bias"]
  adaspa.add(eb, adaspa.scale(u_row:reshape({h}), C.text_flag * math.sqrt(h)), {out = eb})
  project_out(W["img_in.proj.weight"])
  project_out(W["img_in.proj.bias"])
  for i = 0, cfg.layers.double - 1 do
    local p = "double_blocks." .. i
    for _, s in ipairs({"img", "txt"}) do
      project_out(W[p .. "." .. s .. "_attn_proj.weight"]); project_out(W[p .. "." .. s .. "_attn_proj.bias"])
      project_out(W[p .. "." .. s .. "_mlp.fc2.weight"]); project_out(W[p .. "." .. s .. "_mlp.fc2.bias"])
    end
    ignore_flag(W[p .. ".txt_attn_qkv.weight"]:narrow(1, 2 * h + 1, h))      -- text values
  end
  for i = 0, cfg.layers.single - 1 do
    local p = "single_blocks." .. i
    project_out(W[p .. ".linear2.weight"]); project_out(W[p .. ".linear2.bias"])
    ignore_flag(W[p .. ".linear1.weight"]:narrow(1, 2 * h + 1, h))           -- values
  end

  -- qk norm weights: qk_norm on every dim but the sink dims
  local r = reserved(cfg)
  local sink_all = pair_dims(r.sink)
  local function norm_vec(sink)
    local t = {}
    for d = 1, D do t[d] = C.qk_norm end
    for _, d in ipairs(sink_all) do t[d] = sink end
    return vec(t)
  end
  local sink_first = pair_dims(r.sink, true)          -- where text keys put their sink energy
  local plan = synth.plan(cfg)
  local flag_size = C.text_flag * math.sqrt(h) * 0.9   -- text tokens' x~ . u after LayerNorm (about)
  for l = 1, depth do
    local double = l <= cfg.layers.double
    local p = double and ("double_blocks." .. (l - 1)) or ("single_blocks." .. (l - 1 - cfg.layers.double))
    local qkv_w = double and W[p .. ".img_attn_qkv.weight"] or W[p .. ".linear1.weight"]
    local qkv_b = double and W[p .. ".img_attn_qkv.bias"] or W[p .. ".linear1.bias"]
    local k_sink = C.sink_norm * C.qk_norm
    if double then
      W[p .. ".img_attn_q_norm.weight"] = norm_vec(C.qk_norm)
      W[p .. ".img_attn_k_norm.weight"] = norm_vec(C.qk_norm)
      W[p .. ".txt_attn_q_norm.weight"] = norm_vec(C.qk_norm)
      W[p .. ".txt_attn_k_norm.weight"] = norm_vec(k_sink)
    else
      W[p .. ".q_norm.weight"] = norm_vec(C.qk_norm)
      W[p .. ".k_norm.weight"] = norm_vec(k_sink)
    end
    local jit_all = adaspa.randn({H, 64}, {seed = seed_of(seed, p .. "/jitter")}):totable()
    for hd = 1, H do
      local head = plan[l][hd]
      local qb, kb, sv = head_biases(cfg, head, jit_all[hd])
      local q0, k0 = (hd - 1) * D + 1, h + (hd - 1) * D + 1
      -- input-dependent part x W: q and k rows scaled to `content` per dim of a LayerNormed input
      for _, r0 in ipairs({q0, k0}) do
        local rows = qkv_w:narrow(1, r0, D)
        adaspa.scale(rows, head.content, {out = rows})
      end
      qkv_b:narrow(1, q0, D):copy(vec(qb))
      qkv_b:narrow(1, k0, D):copy(vec(kb))
      if double then
        -- text stream: queries like the image queries; keys along the sink direction
        local tw, tb = W[p .. ".txt_attn_qkv.weight"], W[p .. ".txt_attn_qkv.bias"]
        local rows = tw:narrow(1, q0, D)
        adaspa.scale(rows, 0.25, {out = rows})
        rows = tw:narrow(1, k0, D)
        adaspa.scale(rows, 0.25, {out = rows})
        tb:narrow(1, q0, D):copy(vec(qb))
        tb:narrow(1, k0, D):copy(vec(sv))
      else
        -- single blocks: the k rows of the sink dims read the text flag u (and nothing else)
        local beta = C.text_key_sink * math.sqrt(D / #sink_first) / flag_size
        for _, d in ipairs(sink_all) do qkv_w:narrow(1, k0 + d - 1, 1):fill(0) end
        for _, d in ipairs(sink_first) do qkv_w:narrow(1, k0 + d - 1, 1):copy(adaspa.scale(u_row, beta)) end
      end
    end
  end
  return W
end

return synth
