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

local r0 = rows[1].r
print(string.format("adaspa %s, HunyuanVideo %s with SYNTHETIC weights, %s, %s, %d threads; %d steps, %d tokens",
  adaspa.version, r0.model.preset, r0.device, r0.dtype, r0.threads, r0.sampler.steps, r0.tokens))
print(string.format("%-8s %-8s %-8s %-10s %-10s %-8s %-10s %-10s %-8s %-10s %-8s %-10s %-8s", "sparsity", "density",
  "recall", "sample s", "dense s", "speedup", "attn s", "dense attn", "attn x", "lat PSNR", "lat SSIM", "prev PSNR", "prev SSIM"))
for _, row in ipairs(rows) do
  local r, q = row.r, row.r.quality
  print(string.format("%-8.2f %-8.3f %-8.3f %-10.1f %-10.1f %-8.2f %-10.1f %-10.1f %-8.2f %-10.2f %-8.4f %-10.2f %-8.4f", row.s,
    r.sparsity.density_mean, r.sparsity.recall_mean or 0 / 0, q.timing.sampling_seconds, q.timing.dense_sampling_seconds,
    q.timing.dense_sampling_seconds / q.timing.sampling_seconds, q.timing.attention_seconds, q.timing.dense_attention_seconds,
    q.timing.dense_attention_seconds / q.timing.attention_seconds, q.latents.psnr, q.latents.ssim, q.previews.psnr,
    q.previews.ssim))
end
