-- A short tour of adaspa tensors:  build/adaspa recipes/examples/tour.lua
-- Runs on the CPU, and on the GPU too when one is present.
local t = adaspa.randn({4, 6}, {seed = 1})
print(adaspa.pretty(t))
print("sum", t:sum(), "max", t:max(), "norm", t:norm())

-- q, k, v out of one [S, 3, H, D] projection: strided views, no copies
local S, H, D = 10, 2, 8
local qkv = adaspa.randn({S, 3, H, D}, {seed = 2, dtype = "bf16"})
local q = qkv:narrow(2, 1, 1):reshape({S, H, D})
print("q", q:dtype(), table.concat(q:shape(), "x"), "strides", table.concat(q:stride(), ","),
  "shares storage:", q:shares_storage(qkv))

if adaspa.cuda.available() then
  local g = t:to("cuda")
  print("on", g:device(), "same numbers:", g:to("cpu"):sum() == t:sum())
  local mem = adaspa.cuda.memory()
  print(string.format("GPU memory: %d bytes allocated, %d cached, peak %d", mem.allocated, mem.cached, mem.peak))
else
  print("no GPU (" .. adaspa.cuda.reason() .. ")")
end
