-- adaspa.models.wan_synth: deterministic synthetic Wan2.1 weights (diffusers' names) whose
-- activations stay O(1) through any depth and whose self-attention is local in time and space,
-- like a trained video DiT, so sparse attention has structure to find.
--
--   local w = require("adaspa.models.wan_synth").weights(cfg, {seed = 1, device = "cpu", dtype = "f32"})
--
-- Every tensor comes from adaspa.randn with a seed hashed from (seed, name), then whole-tensor
-- edits, so a seed gives the same weights on any machine, device and thread count.
-- * Linears ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2); the time projection (all modulation) is
--   small (0.3 / sqrt(dim)); each block's scale_shift_table is N(0, 0.1^2) with its two gate rows
--   (self-attention, feed-forward) set to 0.3 sqrt(4 / layers), so the residual stream stays O(1).
-- * Image-to-video configs: the image embedder's norms are the identity, its linears as above,
--   and each block's added key/value linears N(0, 1/dim), norm_added_k 1.
-- * Structure (opts.structure, default true): every self-attention head gets the same bias b on
--   its q and k rows, with RMS 1 on chosen RoPE pairs; after the RMSNorm it dominates the
--   input-dependent part (rows scaled to std 0.5), so q_i . k_j ~ sum_p |b_p|^2 cos(theta_p
--   (pos_i - pos_j)), a kernel of relative position peaked at 0. The pairs set the head's kind, in
--   a cycle over heads and layers: local (fast t, h and w pairs: a 3D window), spatial (t pairs:
--   its own and nearby frames), temporal (h and w pairs: the same place in every frame), wide
--   (slow pairs). The q/k norm weight (2.0) sets the sharpness.
local adaspa = require "adaspa"
local wan = require "adaspa.models.wan"

local synth = {}

local hash = require("adaspa.text").hash
local function seed_of(seed, name) return hash(string.format("wan_synth/%d/%s", seed, name)) end

synth.cycle = {"local", "spatial", "temporal", "local", "wide", "temporal", "spatial", "local"}
synth.constants = {qk_norm = 2.0, content = 0.5, mod_std = 0.3, gate = 0.3, table_std = 0.1}

-- within-axis pair bands {t = {lo, hi}, hw = {lo, hi}} (0 = the fastest pair of the axis)
local BANDS = {
  ["local"] = {t = {0, 1}, hw = {0, 1}},
  spatial = {t = {0, 2}},
  temporal = {hw = {0, 2}},
  wide = {t = {2, 3}, hw = {3, 5}},
}

-- The kind of head h (0-based) of block l (0-based).
function synth.kind(l, h) return synth.cycle[(h + 3 * l) % #synth.cycle + 1] end

-- A head's bias: a Lua table of head_dim numbers with RMS 1 on its kind's pairs.
local function head_bias(cfg, kind)
  local a = cfg.rope_axes
  local first = {0, a[1] / 2, (a[1] + a[2]) / 2}        -- first pair of each axis
  local count = {a[1] / 2, a[2] / 2, a[3] / 2}
  local pairs_ = {}
  local b = BANDS[kind]
  local function band(axis, r)
    if not r then return end
    for i = r[1], math.min(r[2], count[axis] - 1) do pairs_[#pairs_ + 1] = first[axis] + i end
  end
  band(1, b.t); band(2, b.hw); band(3, b.hw)
  if #pairs_ == 0 then pairs_ = {0} end                  -- a tiny head: its fastest pair
  local D = cfg.head_dim
  local v = {}
  for d = 1, D do v[d] = 0 end
  local amp = math.sqrt(D / #pairs_)
  for _, p in ipairs(pairs_) do v[2 * p + 1] = amp end
  return v
end

function synth.weights(cfg, opts)
  local so = require("adaspa.models.common").synth_options("wan: synthetic_weights", opts, synth.constants)
  local seed, C = so.seed, so.C
  local dev, dt = so.device, so.dtype
  local o = {dtype = dt, device = dev}
  local shapes = wan.weight_shapes(cfg)
  local d = cfg.dim
  local W = {}
  local rnd, lin = require("adaspa.models.common").seeded_normal(W, shapes,
    function(name) return seed_of(seed, name) end, dt, dev)
  rnd("patch_embedding.weight", 1 / math.sqrt(cfg.in_channels * 4))
  rnd("patch_embedding.bias", 0.1)
  lin("condition_embedder.time_embedder.linear_1", 1 / math.sqrt(cfg.freq_dim / 2), 0.1)
  lin("condition_embedder.time_embedder.linear_2", 0.5 / math.sqrt(d))
  lin("condition_embedder.time_proj", C.mod_std / math.sqrt(d), 0)
  lin("condition_embedder.text_embedder.linear_1", 1 / math.sqrt(cfg.text_dim), 0.1)
  lin("condition_embedder.text_embedder.linear_2", 1 / math.sqrt(d))
  local gate = C.gate * math.sqrt(4 / math.max(cfg.layers, 1))
  for i = 0, cfg.layers - 1 do
    local p = "blocks." .. i .. "."
    for _, a in ipairs({"attn1", "attn2"}) do
      for _, l in ipairs({"to_q", "to_k", "to_v", "to_out.0"}) do lin(p .. a .. "." .. l, 1 / math.sqrt(d)) end
      W[p .. a .. ".norm_q.weight"] = adaspa.ones({d}, o)
      W[p .. a .. ".norm_k.weight"] = adaspa.ones({d}, o)
    end
    if cfg.cross_attn_norm then
      W[p .. "norm2.weight"] = adaspa.ones({d}, o)
      W[p .. "norm2.bias"] = adaspa.zeros({d}, o)
    end
    lin(p .. "ffn.net.0.proj", 1 / math.sqrt(d))
    lin(p .. "ffn.net.2", 1 / math.sqrt(cfg.ffn))
    local tb = rnd(p .. "scale_shift_table", C.table_std)
    local rows = tb:reshape({6, d})
    rows:narrow(1, 3, 1):fill(gate)
    rows:narrow(1, 6, 1):fill(gate)
  end
  lin("proj_out", 1 / math.sqrt(d))
  rnd("scale_shift_table", C.table_std)
  if wan.is_i2v(cfg) then
    -- image-to-video: the image embedder (identity norms, linears as above) and each block's added
    -- key/value of the cross-attention (its output joins the text attention's, O(1) like it)
    local e, pre = cfg.image_dim, "condition_embedder.image_embedder."
    for _, nrm in ipairs({{"norm1", e}, {"norm2", d}}) do
      W[pre .. nrm[1] .. ".weight"] = adaspa.ones({nrm[2]}, o)
      W[pre .. nrm[1] .. ".bias"] = adaspa.zeros({nrm[2]}, o)
    end
    lin(pre .. "ff.net.0.proj", 1 / math.sqrt(e), 0.1)
    lin(pre .. "ff.net.2", 1 / math.sqrt(e))
    for i = 0, cfg.layers - 1 do
      local p = "blocks." .. i .. ".attn2."
      lin(p .. "add_k_proj", 1 / math.sqrt(d))
      lin(p .. "add_v_proj", 1 / math.sqrt(d))
      W[p .. "norm_added_k.weight"] = adaspa.ones({d}, o)
    end
  end
  for name, shape in pairs(shapes) do
    if not W[name] then
      error(string.format("wan: synthetic_weights: no rule for weight %s [%s]", name, table.concat(shape, ", ")), 0)
    end
  end
  if not so.structure then return W end

  for i = 0, cfg.layers - 1 do
    local p = "blocks." .. i .. ".attn1."
    local bias = {}
    for h = 0, cfg.heads - 1 do
      local v = head_bias(cfg, synth.kind(i, h))
      for _, x in ipairs(v) do bias[#bias + 1] = x end
    end
    local bt = adaspa.tensor(bias, o)
    for _, l in ipairs({"to_q", "to_k"}) do
      adaspa.scale(W[p .. l .. ".weight"], C.content, {out = W[p .. l .. ".weight"]})
      W[p .. l .. ".bias"]:copy(bt)
    end
    W[p .. "norm_q.weight"]:fill(C.qk_norm)
    W[p .. "norm_k.weight"]:fill(C.qk_norm)
  end
  return W
end

return synth
