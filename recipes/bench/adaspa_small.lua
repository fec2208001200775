-- AdaSpa against dense on the small preset (CPU or GPU), the same seed, sparsity 0.5 / 0.8 / 0.9:
--   build/adaspa recipes/bench/adaspa_small.lua [sparsities=0.5,0.8,0.9] [field=value ...]
-- Runs recipes/hunyuan.lua with output.compare_dense=true for each sparsity and prints one
-- table: time (sampling and attention, AdaSpa vs dense), density kept, recall at the searches,
-- PSNR/SSIM of latents and previews against dense. The weights are synthetic.
local recipe = require "adaspa.recipe"
local video = require "adaspa.jobs.video"

local sparsities = {0.5, 0.8, 0.9}
local extra = {}
for _, a in ipairs(arg) do
  local list = a:match("^sparsities=(.*)$")
  if list then
    sparsities = recipe.parse_value(list)
    if type(sparsities) ~= "table" then sparsities = {sparsities} end
  else
    extra[#extra + 1] = a
  end
end

local rows = {}
for _, s in ipairs(sparsities) do
  local cfg = recipe.load("recipes/hunyuan.lua", adaspa)
  local dir = os.tmpname()
  os.remove(dir)
  for _, a in ipairs({"attention.sparsity=" .. s, "output.compare_dense=true", "output.error_steps=20,40",
                      "output.quiet=true", "output.pictures=false", "output.dir=" .. dir, unpack(extra)}) do
    local keys, value = recipe.parse_override(a)
    assert(keys, value)
    recipe.set_path(cfg, keys, value)
  end
  recipe.validate(cfg, video.schema, "recipes/hunyuan.lua")
  io.write(string.format("sparsity %.2f ...\n", s))
  io.flush()
  local _, r = video.run(cfg, {recipe = "recipes/hunyuan.lua", name = "bench"})
  rows[#rows + 1] = {s = s, r = r}
  os.execute("rm -rf '" .. dir .. "'")
end

-- Medians per step mode are robust to a busy machine; the schedule's time is estimated from
-- them: sum over modes of (steps in the mode x median step time).
local function estimate(med)
  local t, a = 0, 0
  for _, m in pairs(med) do t, a = t + m.steps * m.step, a + m.steps * m.attention end
  return t, a
end

local r0 = rows[1].r
print(string.format("adaspa %s, HunyuanVideo %s with SYNTHETIC weights, %s, %s, %d threads; %d steps, %d tokens",
  adaspa.version, r0.model.preset, r0.device, r0.dtype, r0.threads, r0.sampler.steps, r0.tokens))
print("step and attention times: medians per step mode, summed over the schedule (measured totals in parentheses)")
print(string.format("%-8s %-7s %-7s %-18s %-18s %-8s %-8s %-8s %-9s %-8s %-9s %-8s", "sparsity", "density",
  "recall", "adaspa s (total)", "dense s (total)", "speedup", "attn s", "dense", "attn x", "lat PSNR", "lat SSIM", "prev PSNR"))
for _, row in ipairs(rows) do
  local r, q = row.r, row.r.quality
  local ts, as = estimate(q.timing.median_step)
  local td, ad = estimate(q.timing.dense_median_step)
  print(string.format("%-8.2f %-7.3f %-7.3f %-18s %-18s %-8.2f %-8.2f %-8.2f %-9.2f %-8.2f %-9.4f %-8.2f", row.s,
    r.sparsity.density_mean, r.sparsity.recall_mean or 0 / 0,
    string.format("%.1f (%.1f)", ts, q.timing.sampling_seconds), string.format("%.1f (%.1f)", td, q.timing.dense_sampling_seconds),
    td / ts, as, ad, ad / as, q.latents.psnr, q.latents.ssim, q.previews.psnr))
end
print(string.format("preview SSIM: %s", (function()
  local t = {}
  for _, row in ipairs(rows) do t[#t + 1] = string.format("%.2f: %.4f", row.s, row.r.quality.previews.ssim) end
  return table.concat(t, ", ")
end)()))
