-- The HunyuanVideo DiT (lua/adaspa/models/hunyuan.lua) against an independent float64 reference
-- written plainly in Lua from ../shared/reference/hunyuan.md: conditioning vector, patch embed,
-- text refiner, double- and single-stream blocks with 3D RoPE and joint masked attention, final
-- layer and unpatchify, on a tiny random configuration. Also: padded text is ignored, valid text
-- matters, RoPE makes the output position-dependent, forwards are deterministic.

local hy = require "adaspa.models.hunyuan"

local flat, rel_l2 = spec_flat, spec_rel_l2

-- ---- a tiny configuration and random weights ----------------------------------------------------

local CFG = hy.config("small", {
  hidden = 32, heads = 2, head_dim = 16, mlp_ratio = 4, rope_axes = {2, 6, 8},
  layers = {double = 1, single = 1, refiner = 1}, text_dim = 24, pooled_dim = 12, text_len = 5,
})
local LATENT = {16, 2, 4, 6}   -- grid 2 x 2 x 3 = 12 image tokens (non-square, so h and w differ)
local VALID = 3
local TSTEP, GUIDANCE = 637.25, 6.0

-- Weights: linears ~ N(0, 1/in) (O(1) activations), biases and vectors ~ 0.2 N(0, 1), norm
-- weights 1 + 0.2 N(0, 1); every tensor its own seed.
local function make_weights(cfg)
  local names = {}
  for name in pairs(hy.weight_shapes(cfg)) do names[#names + 1] = name end
  table.sort(names)
  local shapes, w = hy.weight_shapes(cfg), {}
  for i, name in ipairs(names) do
    local shape = shapes[name]
    local r = adaspa.randn(shape, {seed = 1000 + i})
    if name:match("norm") and name:match("weight$") then
      w[name] = adaspa.add(adaspa.scale(r, 0.2), adaspa.ones(shape))
    elseif #shape == 1 then
      w[name] = adaspa.scale(r, 0.2)
    else
      local fan_in = 1
      for d = 2, #shape do fan_in = fan_in * shape[d] end
      w[name] = adaspa.scale(r, 1 / math.sqrt(fan_in))
    end
  end
  return w
end

local WEIGHTS = make_weights(CFG)
local MODEL = hy.new(CFG, WEIGHTS)

local function make_text(seed)
  return {
    states = adaspa.randn({CFG.text_len, CFG.text_dim}, {seed = seed}),
    valid = VALID,
    pooled = adaspa.randn({1, CFG.pooled_dim}, {seed = seed + 1}),
  }
end

local X = adaspa.randn(LATENT, {seed = 7})
local TEXT = make_text(11)

-- ---- the float64 reference ----------------------------------------------------------------------
-- Matrices are lists of rows; vectors are lists. Weights come from the f32 tensors (exact in double).

local W = {}   -- name -> nested Lua table, converted once
local function wt(name)
  if not W[name] then W[name] = WEIGHTS[name]:totable() end
  return W[name]
end

local function linear(X_, name)
  local w, b = wt(name .. ".weight"), wt(name .. ".bias")
  local Y = {}
  for i, x in ipairs(X_) do
    local y = {}
    for o = 1, #w do
      local row, s = w[o], b[o]
      for j = 1, #x do s = s + row[j] * x[j] end
      y[o] = s
    end
    Y[i] = y
  end
  return Y
end

local function map(X_, f)
  local Y = {}
  for i, x in ipairs(X_) do
    local y = {}
    for j = 1, #x do y[j] = f(x[j]) end
    Y[i] = y
  end
  return Y
end

local function silu(v) return v / (1 + math.exp(-v)) end
local function gelu_tanh(v) return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ^ 3))) end

local function vadd(a, b) local c = {} for j = 1, #a do c[j] = a[j] + b[j] end return c end
local function slice(v, from, n) local c = {} for j = 1, n do c[j] = v[from + j - 1] end return c end

-- LayerNorm over each row, eps 1e-6, optional affine.
local function layernorm(X_, weight, bias)
  local Y = {}
  for i, x in ipairs(X_) do
    local n, m, var = #x, 0, 0
    for j = 1, n do m = m + x[j] end
    m = m / n
    for j = 1, n do var = var + (x[j] - m) ^ 2 end
    local r = 1 / math.sqrt(var / n + 1e-6)
    local y = {}
    for j = 1, n do
      y[j] = (x[j] - m) * r
      if weight then y[j] = y[j] * weight[j] + bias[j] end
    end
    Y[i] = y
  end
  return Y
end

local function modulate(X_, shift, scale)
  local Y = {}
  for i, x in ipairs(X_) do
    local y = {}
    for j = 1, #x do y[j] = x[j] * (1 + scale[j]) + shift[j] end
    Y[i] = y
  end
  return Y
end

local function gated_add(X_, gate, Y_)
  for i, x in ipairs(X_) do
    for j = 1, #x do x[j] = x[j] + gate[j] * Y_[i][j] end
  end
end

-- Sinusoidal embedding: 256 values, [cos | sin], max period 10000.
local function temb_ref(t)
  local e, half = {}, 128
  for k = 0, half - 1 do
    local a = t * math.exp(-math.log(10000) * k / half)
    e[k + 1], e[half + k + 1] = math.cos(a), math.sin(a)
  end
  return e
end

local function mlp2(v, a, b) return linear(map(linear({v}, a), silu), b)[1] end

-- n modulation chunks of Linear(SiLU(vec)).
local function chunks(vs, name, n, h)
  local all = linear({vs}, name)[1]
  local out = {}
  for i = 1, n do out[i] = slice(all, (i - 1) * h + 1, h) end
  return out
end

-- Rows of [S, 3h] with [q | k | v] -> q, k, v as [S][head][D].
local function split_heads(rows, off, H, D)
  local out = {}
  for s, r in ipairs(rows) do
    out[s] = {}
    for hd = 1, H do out[s][hd] = slice(r, off + (hd - 1) * D + 1, D) end
  end
  return out
end

local function rmsnorm_heads(Q, weight)
  for _, tok in ipairs(Q) do
    for _, x in ipairs(tok) do
      local ms = 0
      for j = 1, #x do ms = ms + x[j] ^ 2 end
      local r = 1 / math.sqrt(ms / #x + 1e-6)
      for j = 1, #x do x[j] = x[j] * r * weight[j] end
    end
  end
end

-- 3D RoPE on the first n_img tokens (t-major grid order), interleaved pairs, axis order t, h, w.
local function rope_ref(Q, grid, axes, theta, n_img)
  for n = 0, n_img - 1 do
    local pos = {math.floor(n / (grid[2] * grid[3])), math.floor(n / grid[3]) % grid[2], n % grid[3]}
    for _, x in ipairs(Q[n + 1]) do
      local pair = 0
      for a = 1, 3 do
        local d = axes[a]
        for i = 0, d / 2 - 1 do
          local ang = pos[a] * theta ^ (-2 * i / d)
          local c, s = math.cos(ang), math.sin(ang)
          local x0, x1 = x[2 * pair + 1], x[2 * pair + 2]
          x[2 * pair + 1], x[2 * pair + 2] = x0 * c - x1 * s, x0 * s + x1 * c
          pair = pair + 1
        end
      end
    end
  end
end

-- Softmax attention of every query over keys 1..n_keys; returns rows [S][H*D].
local function attention_ref(Q, K, V, n_keys)
  local H, D = #Q[1], #Q[1][1]
  local scale = 1 / math.sqrt(D)
  local out = {}
  for s = 1, #Q do
    local row = {}
    for hd = 1, H do
      local q, logits, mx = Q[s][hd], {}, -math.huge
      for j = 1, n_keys do
        local k, dot = K[j][hd], 0
        for d = 1, D do dot = dot + q[d] * k[d] end
        logits[j] = dot * scale
        if logits[j] > mx then mx = logits[j] end
      end
      local den, acc = 0, {}
      for d = 1, D do acc[d] = 0 end
      for j = 1, n_keys do
        local p = math.exp(logits[j] - mx)
        den = den + p
        for d = 1, D do acc[d] = acc[d] + p * V[j][hd][d] end
      end
      for d = 1, D do row[(hd - 1) * D + d] = acc[d] / den end
    end
    out[s] = row
  end
  return out
end

local function cat(a, b) local c = {} for _, r in ipairs(a) do c[#c + 1] = r end for _, r in ipairs(b) do c[#c + 1] = r end return c end
local function rows(X_, from, n) local c = {} for i = 1, n do c[i] = X_[from + i - 1] end return c end

-- The whole forward pass; opts.rope = false leaves RoPE out. Returns the velocity as a flat list
-- in [16, T, H, W] row-major order.
local function forward_ref(cfg, x, t, text, guidance, opts)
  opts = opts or {}
  local h, H, D = cfg.hidden, cfg.heads, cfg.head_dim
  local lat = x:totable()
  local C, T, Hl, Wl = unpack(x:shape())
  local grid = {T, Hl / 2, Wl / 2}
  local n_img = grid[1] * grid[2] * grid[3]
  local states = text.states:totable()
  local L, valid = #states, text.valid
  local function rope(Q) if opts.rope ~= false then rope_ref(Q, grid, cfg.rope_axes, cfg.rope_theta, n_img) end end

  -- 1. conditioning vector
  local temb = temb_ref(t)
  local vec = vadd(vadd(mlp2(temb, "time_in.mlp.0", "time_in.mlp.2"),
    mlp2(text.pooled:totable()[1], "vector_in.in_layer", "vector_in.out_layer")),
    mlp2(temb_ref(guidance * 1000), "guidance_in.mlp.0", "guidance_in.mlp.2"))
  local vs = map({vec}, silu)[1]

  -- 2. patch embed: Conv3d (1,2,2) with the 5-D weight read directly
  local pw, pb = wt("img_in.proj.weight"), wt("img_in.proj.bias")
  local img = {}
  for ti = 0, grid[1] - 1 do
    for i = 0, grid[2] - 1 do
      for j = 0, grid[3] - 1 do
        local y = {}
        for o = 1, h do
          local s = pb[o]
          for c = 1, C do
            for kh = 0, 1 do
              for kw = 0, 1 do s = s + pw[o][c][1][kh + 1][kw + 1] * lat[c][ti + 1][2 * i + kh + 1][2 * j + kw + 1] end
            end
          end
          y[o] = s
        end
        img[#img + 1] = y
      end
    end
  end

  -- 3. text refiner
  local mean = {}
  for d = 1, cfg.text_dim do
    local s = 0
    for l = 1, valid do s = s + states[l][d] end
    mean[d] = s / valid
  end
  local c = vadd(mlp2(temb, "txt_in.t_embedder.mlp.0", "txt_in.t_embedder.mlp.2"),
    mlp2(mean, "txt_in.c_embedder.linear_1", "txt_in.c_embedder.linear_2"))
  local cs = map({c}, silu)[1]
  local txt = linear(states, "txt_in.input_embedder")
  for b = 0, cfg.layers.refiner - 1 do
    local p = "txt_in.individual_token_refiner.blocks." .. b
    local g = chunks(cs, p .. ".adaLN_modulation.1", 2, h)
    local qkv = linear(layernorm(txt, wt(p .. ".norm1.weight"), wt(p .. ".norm1.bias")), p .. ".self_attn_qkv")
    local a = attention_ref(split_heads(qkv, 0, H, D), split_heads(qkv, h, H, D), split_heads(qkv, 2 * h, H, D), valid)
    gated_add(txt, g[1], linear(a, p .. ".self_attn_proj"))
    local n2 = layernorm(txt, wt(p .. ".norm2.weight"), wt(p .. ".norm2.bias"))
    gated_add(txt, g[2], linear(map(linear(n2, p .. ".mlp.fc1"), silu), p .. ".mlp.fc2"))
  end

  -- 5. double-stream blocks
  local n_keys = n_img + valid
  for b = 0, cfg.layers.double - 1 do
    local p = "double_blocks." .. b
    local im = chunks(vs, p .. ".img_mod.linear", 6, h)
    local tm = chunks(vs, p .. ".txt_mod.linear", 6, h)
    local function qkv_of(X_, m, s)
      local r = linear(modulate(layernorm(X_), m[1], m[2]), p .. "." .. s .. "_attn_qkv")
      local q, k, v = split_heads(r, 0, H, D), split_heads(r, h, H, D), split_heads(r, 2 * h, H, D)
      rmsnorm_heads(q, wt(p .. "." .. s .. "_attn_q_norm.weight"))
      rmsnorm_heads(k, wt(p .. "." .. s .. "_attn_k_norm.weight"))
      return q, k, v
    end
    local iq, ik, iv = qkv_of(img, im, "img")
    local tq, tk, tv = qkv_of(txt, tm, "txt")
    rope(iq); rope(ik)
    local a = attention_ref(cat(iq, tq), cat(ik, tk), cat(iv, tv), n_keys)
    gated_add(img, im[3], linear(rows(a, 1, n_img), p .. ".img_attn_proj"))
    gated_add(txt, tm[3], linear(rows(a, n_img + 1, L), p .. ".txt_attn_proj"))
    local function mlp(X_, m, s)
      return linear(map(linear(modulate(layernorm(X_), m[4], m[5]), p .. "." .. s .. "_mlp.fc1"), gelu_tanh),
        p .. "." .. s .. "_mlp.fc2")
    end
    gated_add(img, im[6], mlp(img, im, "img"))
    gated_add(txt, tm[6], mlp(txt, tm, "txt"))
  end

  -- 6. single-stream blocks
  local xs = cat(img, txt)
  local mw = h * cfg.mlp_ratio
  for b = 0, cfg.layers.single - 1 do
    local p = "single_blocks." .. b
    local m = chunks(vs, p .. ".modulation.linear", 3, h)
    local l1 = linear(modulate(layernorm(xs), m[1], m[2]), p .. ".linear1")
    local q, k, v = split_heads(l1, 0, H, D), split_heads(l1, h, H, D), split_heads(l1, 2 * h, H, D)
    rmsnorm_heads(q, wt(p .. ".q_norm.weight"))
    rmsnorm_heads(k, wt(p .. ".k_norm.weight"))
    rope(q); rope(k)
    local a = attention_ref(q, k, v, n_keys)
    local both = {}
    for s = 1, #xs do
      local r = {}
      for j = 1, h do r[j] = a[s][j] end
      for j = 1, mw do r[h + j] = gelu_tanh(l1[s][3 * h + j]) end
      both[s] = r
    end
    gated_add(xs, m[3], linear(both, p .. ".linear2"))
  end

  -- 7. final layer (shift, scale) and unpatchify
  local fm = chunks(vs, "final_layer.adaLN_modulation.1", 2, h)
  local out = linear(modulate(layernorm(rows(xs, 1, n_img)), fm[1], fm[2]), "final_layer.linear")
  local vel = {}
  for n = 0, n_img - 1 do
    local ti, i, j = math.floor(n / (grid[2] * grid[3])), math.floor(n / grid[3]) % grid[2], n % grid[3]
    for ch = 0, 4 * C - 1 do
      local c_, ph, pw_ = math.floor(ch / 4), math.floor(ch / 2) % 2, ch % 2
      local idx = ((c_ * T + ti) * Hl + 2 * i + ph) * Wl + 2 * j + pw_
      vel[idx + 1] = out[n + 1][ch + 1]
    end
  end
  return vel
end

-- ---- specs --------------------------------------------------------------------------------------

-- Swaps the 2x2 latent patches of image tokens a and b (0-based token indices) in a copy of x.
local function swap_tokens(x, a, b)
  local y = x:clone()
  local _, _, _, Wl = unpack(x:shape())
  local ww = Wl / 2
  local hh = x:shape()[3] / 2
  local function at(n) return math.floor(n / (hh * ww)), math.floor(n / ww) % hh, n % ww end
  local ta, ia, ja = at(a)
  local tb, ib, jb = at(b)
  for c = 1, x:shape()[1] do
    for kh = 1, 2 do
      for kw = 1, 2 do
        local va = x:get(c, ta + 1, 2 * ia + kh, 2 * ja + kw)
        local vb = x:get(c, tb + 1, 2 * ib + kh, 2 * jb + kw)
        y:set(vb, c, ta + 1, 2 * ia + kh, 2 * ja + kw)
        y:set(va, c, tb + 1, 2 * ib + kh, 2 * jb + kw)
      end
    end
  end
  return y
end

describe("hunyuan model against a float64 reference", function()
  local got = MODEL:forward(X, TSTEP, TEXT, GUIDANCE)
  local ref = forward_ref(CFG, X, TSTEP, TEXT, GUIDANCE)

  it("config takes the tiny overrides", function()
    assert.are.equal(32, CFG.hidden)
    assert.are.equal(24, CFG.text_dim)
    assert.are.equal(12, CFG.pooled_dim)
    assert.are.equal(5, CFG.text_len)
    assert.are.same({2, 6, 8}, CFG.rope_axes)
    assert.are.same({double = 1, single = 1, refiner = 1}, CFG.layers)
  end)

  it("forward matches the reference (relative L2 < 1e-4)", function()
    assert.are.same(LATENT, got:shape())
    local e = rel_l2(flat(got), ref)
    assert(e < 1e-4, string.format("velocity: relative L2 error %.3g vs the float64 reference", e))
    -- the reference is not trivially small or constant
    local m = 0
    for _, v in ipairs(ref) do m = m + v * v end
    assert(math.sqrt(m / #ref) > 0.1, "reference velocity is nearly zero")
  end)

  it("gives the same velocity with q and k normalized and rotated in one pass (fused_norm_rope)", function()
    local cfg = {}
    for k, v in pairs(CFG) do cfg[k] = v end
    cfg.fused_norm_rope = true
    local fused = hy.new(cfg, WEIGHTS):forward(X, TSTEP, TEXT, GUIDANCE)
    assert.equal(0, spec_maxdiff(fused, got))
  end)

  it("gives the same velocity, f32 and bf16, with each residual update fused into the next norm or not (fused_add_norm)", function()
    -- two blocks of each kind: updates carried from block to block, from the last double block
    -- into the concatenation, from the last single block into the final layer
    local cfg2 = {}
    for k, v in pairs(CFG) do cfg2[k] = v end
    cfg2.layers = {double = 2, single = 2, refiner = 1}
    local w2 = make_weights(cfg2)
    local function with(cfg, weights, fused, dt)
      local c = {}
      for k, v in pairs(cfg) do c[k] = v end
      c.fused_add_norm = fused
      local w = {}
      for k, v in pairs(weights) do w[k] = v:to(dt) end
      local text = {states = TEXT.states:to(dt), valid = TEXT.valid, pooled = TEXT.pooled:to(dt)}
      return hy.new(c, w):forward(X:to(dt), TSTEP, text, GUIDANCE)
    end
    assert.is_nil(CFG.fused_add_norm) -- the default: fused
    assert.equal(0, spec_maxdiff(with(CFG, WEIGHTS, false, "f32"), got))
    local f2 = with(cfg2, w2, true, "f32")
    assert.equal(0, spec_maxdiff(f2, with(cfg2, w2, false, "f32")))
    assert.is_true(spec_maxdiff(f2, got) > 1e-3) -- the extra blocks do act
    local fb, ub = with(cfg2, w2, true, "bf16"), with(cfg2, w2, false, "bf16")
    assert.equal("bf16", fb:dtype())
    assert.equal(0, spec_maxdiff(fb, ub))
    assert.is_true(spec_maxdiff(fb, f2) > 0) -- bf16 does round differently from f32
  end)

  it("is deterministic", function()
    local again = MODEL:forward(X, TSTEP, TEXT, GUIDANCE)
    assert.are.equal(0, spec_maxdiff(got, again))
  end)

  it("ignores the states of padded text tokens", function()
    local t2 = make_text(11)
    local pad = adaspa.randn({1, CFG.text_dim}, {seed = 99})
    t2.states:narrow(1, VALID + 1, 1):copy(adaspa.scale(pad, 3))          -- token 4 (padded)
    t2.states:narrow(1, CFG.text_len, 1):copy(adaspa.scale(pad, -2))      -- token 5 (padded)
    assert(spec_maxdiff(t2.states, TEXT.states) > 1, "the padded states did not change")
    assert.are.equal(0, spec_maxdiff(MODEL:forward(X, TSTEP, t2, GUIDANCE), got))
  end)

  it("depends on the states of valid text tokens (and still matches the reference)", function()
    local t2 = make_text(11)
    t2.states:narrow(1, VALID, 1):copy(adaspa.randn({1, CFG.text_dim}, {seed = 98}))   -- last valid token
    local out = MODEL:forward(X, TSTEP, t2, GUIDANCE)
    local change = rel_l2(flat(out), flat(got))
    assert(change > 1e-3, string.format("changing a valid text token moved the output only by %.3g", change))
    local e = rel_l2(flat(out), forward_ref(CFG, X, TSTEP, t2, GUIDANCE))
    assert(e < 1e-4, string.format("relative L2 error %.3g vs the reference", e))
  end)

  it("depends on timestep, guidance and pooled text as the reference does", function()
    local t2 = make_text(11)
    t2.pooled = adaspa.randn({1, CFG.pooled_dim}, {seed = 97})
    local out = MODEL:forward(X, 120.5, t2, 3.5)
    assert(rel_l2(flat(out), flat(got)) > 1e-3, "output did not move")
    local e = rel_l2(flat(out), forward_ref(CFG, X, 120.5, t2, 3.5))
    assert(e < 1e-4, string.format("relative L2 error %.3g vs the reference", e))
  end)

  it("uses RoPE: the reference without it is far from the model", function()
    local norope = forward_ref(CFG, X, TSTEP, TEXT, GUIDANCE, {rope = false})
    local d = rel_l2(norope, ref)
    assert(d > 1e-2, string.format("RoPE changes the reference only by %.3g", d))
    assert(rel_l2(flat(got), norope) > 100 * rel_l2(flat(got), ref), "the model is not closer to the RoPE reference")
  end)

  it("is position-dependent: swapping two tokens' patches does not just swap their outputs", function()
    -- tokens 1 and 10 (0-based) differ in t, h and w
    local a, b = 1, 10
    local xs = swap_tokens(X, a, b)
    -- a position-free model is permutation-equivariant: the no-RoPE reference shows it exactly
    local function swapped_back(vel_list)
      local t = adaspa.tensor(vel_list):reshape(LATENT)
      return flat(swap_tokens(t, a, b))
    end
    local n0 = forward_ref(CFG, X, TSTEP, TEXT, GUIDANCE, {rope = false})
    local n1 = forward_ref(CFG, xs, TSTEP, TEXT, GUIDANCE, {rope = false})
    assert(rel_l2(swapped_back(n1), n0) < 1e-6, "the position-free reference is not equivariant")
    -- the model is not
    local out = MODEL:forward(xs, TSTEP, TEXT, GUIDANCE)
    local d = rel_l2(flat(swap_tokens(out, a, b)), flat(got))
    assert(d > 1e-2, string.format("swapping tokens only permuted the output (difference %.3g)", d))
    local e = rel_l2(flat(out), forward_ref(CFG, xs, TSTEP, TEXT, GUIDANCE))
    assert(e < 1e-4, string.format("relative L2 error %.3g vs the reference", e))
  end)

  it("routes every attention through ctx.attention with the documented info", function()
    local seen = {}
    local ctx = {attention = function(self, q, k, v, info)
      seen[#seen + 1] = {kind = info.kind, index = info.index, layer = info.layer, kv_valid = info.kv_valid,
        n_img = info.n_img, n_txt = info.n_txt, grid = info.grid, S = q:shape()[1]}
      return (adaspa.attention(q, k, v, {kv_valid = info.kv_valid}))
    end}
    local out = MODEL:forward(X, TSTEP, TEXT, GUIDANCE, ctx)
    assert.are.equal(0, spec_maxdiff(out, got))
    assert.are.equal(2, #seen)
    local n_img = 12
    for i, s in ipairs(seen) do
      assert.are.equal(i, s.layer)
      assert.are.equal(0, s.index)
      assert.are.equal(n_img + VALID, s.kv_valid)
      assert.are.equal(n_img, s.n_img)
      assert.are.equal(CFG.text_len, s.n_txt)
      assert.are.equal(n_img + CFG.text_len, s.S)
      assert.are.same({2, 2, 3}, s.grid)
    end
    assert.are.equal("double", seen[1].kind)
    assert.are.equal("single", seen[2].kind)
  end)
end)
