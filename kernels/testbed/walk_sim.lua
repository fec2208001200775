-- The block-64 walk's prediction (runtime/walk.h, kernels/testbed/NOTES.md): on the attention
-- bench's layouts (recipes/bench/attention.lua: row-wise top-k of random mass, text rows and columns
-- kept, 24 heads, blocks of 64), the time the sm90 kernel's persistent CTAs take to finish, over the
-- ideal (all work / CTAs), with the items in the head-major rotated order (the kernel without a
-- walk) and in layout:walk64's. Model: an item costs its longer row's key blocks + 2; each CTA takes
-- the next item when it is free (the kernel's work counter). It leaves out L2 and the two
-- warpgroups running their blocks apart, so it predicts the tail only.
--   build/adaspa kernels/testbed/walk_sim.lua [ctas=132] [540p] [720p]   (about 1 minute on 2 cores)
local ctas, want = 132, {}
for _, a in ipairs(arg or {}) do
  local v = a:match("^ctas=(%d+)$")
  if v then ctas = tonumber(v) else want[a] = true end
end
local H, TEXT, B = 24, 256, 64
local shapes = {}
if want["540p"] or not want["720p"] then shapes[#shapes + 1] = {name = "540p-129f", S = 67576} end
if want["720p"] or not want["540p"] then shapes[#shapes + 1] = {name = "720p-129f", S = 119056} end


-- costs[item] for the 1-based items of layout:walk64, and the base order
local function items(l)
  local nqb = l:nqb()
  local nqt = math.floor((nqb + 1) / 2)
  local cost, base = {}, {}
  for h = 1, l:heads() do
    for p = 1, nqt do
      local a = #l:row(h, 2 * p - 1)
      local b = 2 * p <= nqb and #l:row(h, 2 * p) or 0
      cost[(h - 1) * nqt + p] = math.max(a, b) + 2
    end
    for k = 0, nqt - 1 do base[#base + 1] = (h - 1) * nqt + (k + 37 * (h - 1)) % nqt + 1 end
  end
  return cost, base
end

-- finish time over the ideal; workers in a binary heap of free times
local function makespan(order, cost)
  local heap, total = {}, 0
  for i = 1, ctas do heap[i] = 0 end
  local function down(i)
    local n = #heap
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= n and heap[l] < heap[m] then m = l end
      if r <= n and heap[r] < heap[m] then m = r end
      if m == i then return end
      heap[i], heap[m] = heap[m], heap[i]
      i = m
    end
  end
  for _, item in ipairs(order) do
    heap[1] = heap[1] + cost[item] -- the free-est worker takes it
    total = total + cost[item]
    down(1)
  end
  local last = 0
  for i = 1, ctas do last = math.max(last, heap[i]) end
  return last / (total / ctas)
end

print(string.format("walk model, %d CTAs, %d heads, blocks of %d (finish time over the ideal; 1.000 = no tail)", ctas, H, B))
print("| shape | density | items | head-major rotated | tail walk | items taken earlier | predicted speed-up |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for _, sh in ipairs(shapes) do
  for i, d in ipairs({0.1, 0.2, 0.4}) do
    local l = require("adaspa.bench").sink_layout(sh.S, H, TEXT, B, d, 10 + i) -- the attention bench's
    local cost, base = items(l)
    local walk = l:walk64(ctas)
    local pos = {}
    for w, item in ipairs(base) do pos[item] = w end
    local moved = 0
    for w, item in ipairs(walk) do if w < pos[item] then moved = moved + 1 end end -- taken earlier than in base order
    local a, b = makespan(base, cost), makespan(walk, cost)
    print(string.format("| %s | %.1f | %d | %.3f | %.3f | %d | %.3fx |", sh.name, d, #walk, a, b, moved, a / b))
    l:free()
    collectgarbage()
  end
end
