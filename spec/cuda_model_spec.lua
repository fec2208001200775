-- A small HunyuanVideo step on the GPU (bf16) against the same step on the CPU (f32), dense and
-- with AdaSpa's search and sparse passes. Skipped without a GPU.
local hy = require "adaspa.models.hunyuan"
local synth = require "adaspa.models.hunyuan_synth"
local text = require "adaspa.text"
local attention = require "adaspa.attention"
local adaspa_policy = require "adaspa.policy.adaspa"

describe("the model on the GPU", function()
  it_gpu("a bf16 GPU step matches the f32 CPU step, dense and sparse", function()
    local cfg = hy.config("small", {layers = {double = 1, single = 1, refiner = 1}})
    local w = synth.weights(cfg, {seed = 3})
    local wg = {}
    for k, t in pairs(w) do wg[k] = t:to("bf16"):to("cuda") end
    local mc, mg = hy.new(cfg, w), hy.new(cfg, wg)
    local _, shape = hy.grid({width = 320, height = 256, frames = 9})
    local x = adaspa.randn(shape, {seed = 4})
    local c = text.synthetic("a fox", cfg)
    local cg = {states = c.states:to("bf16"):to("cuda"), pooled = c.pooled:to("bf16"):to("cuda"), valid = c.valid}
    local vc = mc:forward(x, 900, c, 6.0)
    local vg = mg:forward(x:to("bf16"):to("cuda"), 900, cg, 6.0)
    assert.equal("cuda:0", vg:device())
    local err = spec_rel_l2(spec_flat(vg), spec_flat(vc))
    assert.is_true(err < 3e-2, "dense step: relative L2 " .. err)
    -- AdaSpa: dense, search, sparse on both devices; the sparse outputs agree too
    local function run(model, xx, cond)
      local ctx = attention.new(adaspa_policy.new({sparsity = 0.7, warmup = 1, search = {1}}, 3), {layers = 2})
      local v
      for step = 0, 2 do
        ctx:begin_step(step)
        v = model:forward(xx, 900 - 100 * step, cond, 6.0, ctx)
        ctx:end_step()
      end
      return v, ctx
    end
    local sc, ctxc = run(mc, x, c)
    local sg, ctxg = run(mg, x:to("bf16"):to("cuda"), cg)
    err = spec_rel_l2(spec_flat(sg), spec_flat(sc))
    assert.is_true(err < 5e-2, "sparse step: relative L2 " .. err)
    local dc, dg = ctxc.cache:density(1), ctxg.cache:density(1)
    for h = 1, #dc do assert.is_true(math.abs(dc[h] - dg[h]) < 0.05, "density of head " .. h) end
  end)

  it_gpu("with fused_norm_rope (adaspa.rmsnorm_rope3d), a bf16 GPU step still matches the f32 CPU step", function()
    local cfg = hy.config("small", {layers = {double = 1, single = 1, refiner = 1}})
    local w = synth.weights(cfg, {seed = 5})
    local wg = {}
    for k, t in pairs(w) do wg[k] = t:to("bf16"):to("cuda") end
    local fused = hy.config("small", {layers = {double = 1, single = 1, refiner = 1}, fused_norm_rope = true})
    local _, shape = hy.grid({width = 320, height = 256, frames = 9})
    local x = adaspa.randn(shape, {seed = 6})
    local c = text.synthetic("a heron", cfg)
    local cg = {states = c.states:to("bf16"):to("cuda"), pooled = c.pooled:to("bf16"):to("cuda"), valid = c.valid}
    local vc = hy.new(cfg, w):forward(x, 700, c, 6.0)
    local vg = hy.new(fused, wg):forward(x:to("bf16"):to("cuda"), 700, cg, 6.0)
    local err = spec_rel_l2(spec_flat(vg), spec_flat(vc))
    assert.is_true(err < 3e-2, "fused step: relative L2 " .. err)
  end)

  it_gpu("with fused_add_norm (adaspa.gated_add_layernorm_modulate), a bf16 GPU step matches the f32 CPU step and the unfused GPU step", function()
    local layers = {double = 2, single = 2, refiner = 1}
    local cfg = hy.config("small", {layers = layers})
    local w = synth.weights(cfg, {seed = 7})
    local wg = {}
    for k, t in pairs(w) do wg[k] = t:to("bf16"):to("cuda") end
    local unfused = hy.config("small", {layers = layers, fused_add_norm = false})
    local _, shape = hy.grid({width = 320, height = 256, frames = 9})
    local x = adaspa.randn(shape, {seed = 8})
    local c = text.synthetic("a heron", cfg)
    local cg = {states = c.states:to("bf16"):to("cuda"), pooled = c.pooled:to("bf16"):to("cuda"), valid = c.valid}
    local xg = x:to("bf16"):to("cuda")
    local vc = hy.new(cfg, w):forward(x, 700, c, 6.0)
    local vg = hy.new(cfg, wg):forward(xg, 700, cg, 6.0)
    local vu = hy.new(unfused, wg):forward(xg, 700, cg, 6.0)
    local err = spec_rel_l2(spec_flat(vg), spec_flat(vc))
    assert.is_true(err < 3e-2, "fused_add_norm step against the CPU: relative L2 " .. err)
    local eu = spec_rel_l2(spec_flat(vg), spec_flat(vu))
    assert.is_true(eu < 1e-2, "fused_add_norm step against the unfused GPU step: relative L2 " .. eu)
  end)
end)
