-- GPU layout selection benchmark at HunyuanVideo 720p-129f's block grid (24 heads x 1,861 x 1,861
-- blocks of 64): row-wise top-k at densities 0.1 and 0.01, the cumulative threshold (recall 0.9,
-- 20..600 blocks a row), recall of a layout, the device->host copy of as many int32 indices as
-- the 0.1 layout holds, and, for comparison, copying the mass to the host plus top-k on the CPU.
-- Each selection includes building the host CSR and the device mirror.
--   build/adaspa recipes/bench/select.lua
-- Times: median of several runs after a warm-up, with a device synchronize around each.
if not adaspa.cuda.available() then
  print("select bench: no GPU (" .. adaspa.cuda.reason() .. "); nothing to time")
  return
end
local H, n = 24, 1861
local x = adaspa.randn({H, n, n}, {seed = 11, device = "cuda"})
local gm = adaspa.mul(x, x)
x:free()
local force = {cols = {{1, 4}}, rows = {{1, 4}}, diagonal = true}
local o = {density = 0.1, row_wise = true, force = force}
local th = {recall = 0.9, min_blocks = 20, max_blocks = 600, force = force}
-- milliseconds of f(), its result freed
local function time(f, reps) return require("adaspa.bench").time(function() f():free() end, reps) * 1e3 end
local l = adaspa.layout.topk(gm, o)
local rows = {
  {"row-wise top-k, density 0.1 (nnz " .. l:nnz() .. ")", time(function() return adaspa.layout.topk(gm, o) end, 5)},
  {"row-wise top-k, density 0.01", time(function() return adaspa.layout.topk(gm, {density = 0.01, row_wise = true}) end, 5)},
  {"threshold, recall 0.9", time(function() return adaspa.layout.threshold(gm, th) end, 3)},
  {"recall of the 0.1 layout", time(function() l:recall(gm); return {free = function() end} end, 5)},
}
local buf = adaspa.zeros({l:nnz()}, {dtype = "i32", device = "cuda"})
rows[#rows + 1] = {"device->host copy of nnz int32", time(function() return buf:to("cpu") end, 5)}
buf:free()
local t0 = adaspa.now()
local cm = gm:to("cpu")
local t_copy = (adaspa.now() - t0) * 1e3
t0 = adaspa.now()
adaspa.layout.topk(cm, o):free()
rows[#rows + 1] = {"CPU path: mass to the host + top-k", t_copy + (adaspa.now() - t0) * 1e3}
print(string.format("select bench on %s: %d heads x %d x %d blocks", adaspa.cuda.devices()[1].name, H, n, n))
print("| step | ms |")
print("| --- | --- |")
for _, r in ipairs(rows) do print(string.format("| %s | %.2f |", r[1], r[2])) end
