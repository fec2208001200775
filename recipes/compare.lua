-- Attention policies compared on equal terms: one model, one text, one seed, one dense reference.
--   adaspa recipe recipes/compare.lua [field=value ...]
-- Writes table.txt / table.md / results.csv / results.json, chart.png (quality against speed),
-- gallery.png (the masks each run used) and previews.png under output.dir (default
-- out/compare-<time>). Model, video, text and sampler fields are those of recipes/hunyuan.lua.
-- Every field can be set from the command line, e.g.
--   adaspa recipe compare sweep.sparsity=0.5,0.7,0.8,0.9 sampler.steps=20 attention.warmup=4 attention.search=4,12
--   adaspa recipe compare policies=dense,adaspa policies.2.recall=0.9 chart.x=flops gallery.layers=1,3
return {
  job = "compare",
  model = {name = "hunyuan", preset = "auto", device = "auto"},   -- auto: 720p on a GPU, small on a CPU
  video = {},
  text = {prompt = "a red fox running through fresh snow at dawn"},
  sampler = {steps = 50, seed = 42},   -- shift and guidance: the model's (HunyuanVideo 7 and embedded 6, Wan 5 and cfg 5, tiny 3)
  -- the dense reference always runs (once); "dense" here only names its row
  policies = {
    "dense",
    "adaspa",                                        -- paper tiers, swept over sparsity below
    {"adaspa", recall = 0.9, sweep = false},          -- a recall target instead of tiers (not swept)
    {"window", sweep = false},                       -- STA: static 3D window (its paper's size), planned once
    {"spatial_temporal", sweep = false},             -- Sparse VideoGen: spatial or temporal per head, probed
    {"estimate", sweep = false},                     -- SpargeAttn / XAttention: pooled estimate, threshold 0.9
  },
  -- every entry with a sparsity option it does not set, unless sweep = false: adaspa here. window,
  -- spatial_temporal and estimate have one too (the window scaled; a token band and a temporal
  -- width sized; the estimate's top blocks per row): for all of them at AdaSpa's sparsities,
  -- policies=dense,adaspa,window,spatial_temporal,estimate
  sweep = {sparsity = {0.5, 0.8, 0.9}},
  attention = {},                                    -- options for every policy that has them (block = 128, ...)
  gallery = {layers = {1, 3}, heads = {1, 2}},       -- step: default the last step
  chart = {x = "attention_speedup", y = "latent_psnr"},
  output = {previews = true, upscale = 2, error_steps = {}},
}
