-- Block 64 vs 128 through the trace replay (kernels/testbed/BLOCKS.md): the AdaSpa policy at
-- sparsity 0.5 / 0.8 / 0.9, window (STA) and estimate (SpargeAttn/XAttention), each at block 64
-- and 128, on the paper's schedule (dense before step 10, search at 10 and 30), one dense
-- reference for all. Record steps 9, 10, 11, 30, 31 so that 11 and 31 replay reused layouts:
--   build/adaspa recipes/tools/record_trace.lua T.safetensors steps=9,10,11,30,31 ...
--   build/adaspa recipe kernels/testbed/blocks_replay.lua trace=T.safetensors [output.dir=DIR]
local policies = require "adaspa.policy"

local steps = 50 -- record_trace's default schedule
local list = {"dense"}
for _, B in ipairs({64, 128}) do
  for _, s in ipairs({0.5, 0.8, 0.9}) do
    local p = policies.new("adaspa", {sparsity = s, block = B, warmup = 10, search = {10, 30}}, steps)
    p.name = string.format("adaspa-s%.1f-b%d", s, B)
    list[#list + 1] = p
  end
  local w = policies.new("window", {block = B, warmup = 10}, steps)
  w.name = "window-b" .. B
  list[#list + 1] = w
  local e = policies.new("estimate", {block = B, warmup = 10}, steps)
  e.name = "estimate-b" .. B
  list[#list + 1] = e
end

return {
  job = "replay",
  policies = list,
  warmup = 10,
  search = {10, 30},
  stability = {enabled = false},
  output = {pictures = false},
}
