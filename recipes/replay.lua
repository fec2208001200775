-- Attention trace replay: every policy on q, k, v recorded from a real model.
--   adaspa recipe recipes/replay.lua trace=FILE [field=value ...]
-- Record a trace inside a PyTorch pipeline with recipes/tools/dump_trace.py (HunyuanVideo or
-- Wan from diffusers); the format is described in lua/adaspa/trace.lua. The replay runs each
-- policy through the same attention context a model uses and writes table.txt, results.json
-- and mask pictures (output.dir, default out/replay-<time>). Examples:
--   adaspa recipe replay trace=fox.safetensors policies=dense,adaspa sparsity=0.9
--   adaspa recipe replay trace=fox.safetensors warmup=10 search=10,30 options.adaspa.recall=0.95
return {
  job = "replay",
  -- trace = "fox.safetensors",      -- required (on the command line: trace=FILE)
  -- policies = {"dense", "adaspa", "window", "spatial_temporal", "estimate"},  -- default: all available
  sparsity = 0.8,                    -- shared by the policies that take it; also the stability top-k (1 - sparsity)
  block = 64,                        -- 64 or 128
  warmup = "auto",                   -- auto: the first replayed step searches (its own LSE), later ones reuse
  search = "auto",                   --   or the real schedule: warmup = 10, search = {10, 30}
  options = {},                      -- per policy: {adaspa = {recall = 0.95}, window = {...}}
  -- steps = {0, 10}, layers = {1, 21},   -- replay a subset of the recorded ones
  device = "auto",                   -- auto (GPU when present) | cpu | cuda
  dtype = "auto",                    -- auto (as stored, bf16) | f32 | bf16
  stability = {enabled = true},      -- density = 0.2 to override 1 - sparsity
  output = {
    pictures = true,                 -- masks, mass heat maps and galleries
    picture_layers = nil,            -- default: the first replayed layer
    picture_heads = {1},
  },
}
