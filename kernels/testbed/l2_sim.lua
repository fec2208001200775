-- The sm90 sparse kernel's L2 model (kernels/testbed/NOTES.md, seventeenth session): its block-64
-- K/V tile reads (block=128 below), replayed through an LRU cache the size of the H200's L2, on
-- kinds of random layout of the same density:
--   topk       every row exactly round(d * nkb) key blocks (the attention bench's row-wise top-k,
--              and AdaSpa's selection, which is row-wise top-k with a density per head), the text
--              rows full and the text columns kept;
--   bernoulli  each block kept with probability d, plus the diagonal and the last block (the kernel
--              test bed's generator, attn_testbed.cu make_layout, TESTBED_LAYOUT=uniform), the text
--              rows full;
--   jitter     topk with each row's count spread as bernoulli's (k plus a normal draw of sd
--              sqrt(nkb d (1 - d)): 13 blocks at 720p d0.1, or jit=F: F k): the same draw as topk
--              otherwise, to tell the rows' lengths from the rest;
--   adaptive   topk with a density per head, 0.25 d to 2.5 d (the attention bench's head-adaptive
--              layouts).
-- Model: `ctas` persistent CTAs take 128-row items (two 64-row blocks, one per consumer warpgroup)
-- in the kernel's head-major walk rotated by 37 h (runtime/walk.h), each when it is free; an item
-- takes max(len a, len b) + 2 steps, and at step t warpgroup a reads K and V of its row's t-th key
-- block, b of its own (ascending order, as the layouts store them). A step costs 1 plus `pen` per
-- tile that missed (0: the order of reads ignores the misses). One K + V tile pair (64 keys x 128 x
-- bf16 x 2) is one 32 KB cache entry; Q and out are left out. It predicts L2 hit rates and HBM
-- traffic, not speed.
--   build/adaspa kernels/testbed/l2_sim.lua [ctas=132] [l2=50] [pen=0] [540p] [720p] [d=0.1,0.2]
--     [gens=topk,bernoulli,jitter,adaptive] [passes=1,2,3] [jit=F] [S=tokens] [heads=24] [sweep=K]
--     [block=128 [order=head|headlf]]
-- block=128: the sm90 kernel's blocks of 128 instead: an item is one 128-row block, the items in
-- the layout mirror's longest-first order (a stable counting sort: rows of one length stay
-- head-major), one 64 KB K + V tile a step; order=head: head-major instead (the heads by their
-- work, longest first; each head's rows in order; order=headlf: each head's rows longest first,
-- rows of one length in order), which the sweep (sweep=K) can then start mid-row
-- as block 64's does (a model only: the kernel's sweep is block 64's); passes are block 64's only.
-- sweep=K (kernels/testbed/sweep.patch, one pass): a row of n blocks starts its walk at block
-- floor(f n) and wraps around, f the phase of a global sweep whose period is K items (K times the
-- head's mean row length + 2 steps) when its CTA takes the item; K = 1 is the patch's.
-- (pure Lua: luajit runs it too; about 10 s a layout on this 2-core CPU)
local ctas, l2mb, pen, want, dens, gens, passes, jit, sweep = 132, 50, 0, {}, {0.1, 0.2, 0.4}, {"topk", "bernoulli"}, {1}, nil, 0
local function num(k, v)
  local x = tonumber(v)
  if not x then error(string.format("l2_sim: %s=%s is not a number", k, v), 0) end
  return x
end
local function nums(k, v)
  local t = {}
  for x in v:gmatch("[^,]+") do t[#t + 1] = num(k, x) end
  return t
end
local known_gens = {topk = true, bernoulli = true, jitter = true, adaptive = true}
for _, a in ipairs(arg or {}) do
  local k, v = a:match("^(%w+)=(.+)$")
  if k == "ctas" then ctas = num(k, v)
  elseif k == "l2" then l2mb = num(k, v)
  elseif k == "pen" then pen = num(k, v)
  elseif k == "d" then dens = nums(k, v)
  elseif k == "jit" then jit = num(k, v)
  elseif k == "sweep" then sweep = num(k, v)
  elseif k == "block" then want.block = num(k, v)
  elseif k == "order" and (v == "head" or v == "headlf") then want.order = v
  elseif k == "S" then want.S = num(k, v)
  elseif k == "heads" then want.heads = num(k, v)
  elseif k == "passes" then passes = nums(k, v)
  elseif k == "gens" then
    gens = {}
    for x in v:gmatch("[^,]+") do
      if not known_gens[x] then error("l2_sim: unknown layout kind " .. x .. " (topk, bernoulli, jitter, adaptive)", 0) end
      gens[#gens + 1] = x
    end
  elseif not k and (a == "540p" or a == "720p") then want[a] = true
  else error("l2_sim: unknown argument " .. a .. " (see the comment at the top of kernels/testbed/l2_sim.lua)", 0) end
end
local H, TEXT, B = want.heads or 24, 256, want.block or 64
assert(B == 64 or B == 128, "block must be 64 or 128")
local shapes = {}
if want.S then shapes[1] = {name = "S=" .. want.S, S = want.S}
else
  if want["540p"] or not want["720p"] then shapes[#shapes + 1] = {name = "540p-129f", S = 67576} end
  if want["720p"] or not want["540p"] then shapes[#shapes + 1] = {name = "720p-129f", S = 119056} end
end

-- rows[h][qb] = ascending 0-based key blocks, for one generator
local function layout(gen, S, d, seed)
  math.randomseed(seed)
  local nb = math.ceil(S / B)
  local first_text = math.floor((S - TEXT) / B) -- 0-based block holding the first text token
  local rows = {}
  local d0 = d
  for h = 1, H do
    if gen == "adaptive" then d = math.min(1, d0 * (0.25 + 2.25 * (h - 1) / (H - 1))) end
    rows[h] = {}
    for qb = 0, nb - 1 do
      local r = {}
      if qb >= first_text then
        for kb = 0, nb - 1 do r[#r + 1] = kb end
      elseif gen == "bernoulli" then
        for kb = 0, nb - 1 do
          if math.random() < d or kb == qb or kb == nb - 1 then r[#r + 1] = kb end
        end
      else -- topk: the text columns, then a uniform random draw of the rest up to k
        local k, keep = math.floor(d * nb + 0.5), {}
        if gen == "jitter" then
          local z = math.sqrt(-2 * math.log(1 - math.random())) * math.cos(2 * math.pi * math.random())
          k = math.max(0, k + math.floor(z * (jit and jit * k or math.sqrt(nb * d * (1 - d))) + 0.5))
        end
        local n = 0
        for kb = first_text, nb - 1 do keep[kb] = true; n = n + 1 end
        while n < k do
          local kb = math.random(0, first_text - 1)
          if not keep[kb] then keep[kb] = true; n = n + 1 end
        end
        for kb = 0, nb - 1 do if keep[kb] then r[#r + 1] = kb end end
      end
      rows[h][qb] = r
    end
  end
  return rows, nb
end

-- LRU of `cap` entries over integer keys: a hash of key -> slot, slots in a doubly linked list
local function lru(cap)
  local slot, key, prev, nxt = {}, {}, {}, {}
  local head, tail, n = 0, 0, 0 -- head: most recent; slot 0 = none
  local function unlink(s)
    if prev[s] ~= 0 then nxt[prev[s]] = nxt[s] else head = nxt[s] end
    if nxt[s] ~= 0 then prev[nxt[s]] = prev[s] else tail = prev[s] end
  end
  local function push(s)
    prev[s], nxt[s] = 0, head
    if head ~= 0 then prev[head] = s else tail = s end
    head = s
  end
  return function(k) -- true on a hit
    local s = slot[k]
    if s then
      if s ~= head then unlink(s); push(s) end
      return true
    end
    if n < cap then
      n = n + 1
      s = n
    else
      s = tail
      unlink(s)
      slot[key[s]] = nil
    end
    key[s], slot[k] = k, s
    push(s)
    return false
  end
end

-- the part of ascending row r in [lo, hi)
local function part(r, lo, hi)
  if lo == 0 and hi >= math.huge then return r end
  local out = {}
  for _, kb in ipairs(r) do if kb >= lo and kb < hi then out[#out + 1] = kb end end
  return out
end

-- one run of the kernel's walk over rows in `npass` passes over the key blocks (the SPARSE64X walk:
-- head h's tiles over its first kv_split key blocks, then the next ones; a later pass's wait on the
-- one before is left out); returns hits, reads, steps, finish time over steps / ctas
local function simulate(rows, nb, npass)
  local nqt = B == 64 and math.floor((nb + 1) / 2) or nb
  local split = npass > 1 and math.ceil(nb / npass) or math.huge
  local access = lru(math.floor(l2mb * 1e6 / (B * 512)))
  local items, w = H * nqt * npass, 0
  local order -- block 128: (h, qb) of the w-th item, longest first
  if B == 128 then
    order = {}
    for h = 0, H - 1 do for qb = 0, nb - 1 do order[#order + 1] = {h, qb, #rows[h + 1][qb]} end end
    for i, o in ipairs(order) do o[4] = i end
    if want.order == "head" or want.order == "headlf" then
      local work, lf = {}, want.order == "headlf"
      for _, o in ipairs(order) do work[o[1]] = (work[o[1]] or 0) + o[3] end
      table.sort(order, function(x, y)
        if x[1] ~= y[1] then return work[x[1]] > work[y[1]] or (work[x[1]] == work[y[1]] and x[1] < y[1]) end
        if lf and x[3] ~= y[3] then return x[3] > y[3] end
        return x[2] < y[2]
      end)
    else
      table.sort(order, function(x, y) return x[3] > y[3] or (x[3] == y[3] and x[4] < y[4]) end)
    end
  end
  local period = {} -- the sweep's period a head: K (mean row length + 2) steps
  for h = 1, H do
    local t = 0
    for qb = 0, nb - 1 do t = t + #rows[h][qb] end
    period[h - 1] = sweep * (t / nb + 2)
  end
  local now = 0 -- the clock of the CTA taking an item
  local function next_item()
    if w >= items then return nil end
    if order then
      w = w + 1
      local h, qb = order[w][1], order[w][2]
      local a = rows[h + 1][qb]
      if sweep > 0 then
        local f, s0, o = (now / period[h]) % 1, nil, {}
        s0 = math.floor(f * #a)
        for j = 1, #a do o[j] = a[(s0 + j - 1) % #a + 1] end
        a = o
      end
      return {h = h, a = a, b = {}, n = #a + 2, t = 0}
    end
    local h = math.floor(w / (npass * nqt))
    local k = w - h * npass * nqt
    local ps = math.floor(k / nqt)
    k = k - ps * nqt
    w = w + 1
    local qt = (k + 37 * h) % nqt
    local lo, hi = 0, math.huge
    if npass > 1 then lo, hi = ps * split, (ps + 1) * split end
    local a, b = part(rows[h + 1][2 * qt], lo, hi), part(rows[h + 1][2 * qt + 1] or {}, lo, hi)
    if sweep > 0 and npass == 1 then
      local f = (now / period[h]) % 1
      local function rot(r)
        local s0, o = math.floor(f * #r), {}
        for j = 1, #r do o[j] = r[(s0 + j - 1) % #r + 1] end
        return o
      end
      a, b = rot(a), rot(b)
    end
    return {h = h, a = a, b = b, n = math.max(#a, #b) + 2, t = 0}
  end
  -- CTAs in a binary heap on their clocks
  local clock, cur, heap = {}, {}, {}
  for c = 1, ctas do clock[c], cur[c], heap[c] = 0, next_item(), c end
  local function less(i, j) return clock[heap[i]] < clock[heap[j]] end
  local function down(i)
    local n = #heap
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      if l <= n and less(l, m) then m = l end
      if r <= n and less(r, m) then m = r end
      if m == i then return end
      heap[i], heap[m] = heap[m], heap[i]
      i = m
    end
  end
  for i = math.floor(#heap / 2), 1, -1 do down(i) end
  local hits, reads, steps, last = 0, 0, 0, 0
  while #heap > 0 do
    local c = heap[1]
    local it = cur[c]
    if not it then -- no work left: this CTA is done
      last = math.max(last, clock[c])
      heap[1] = heap[#heap]
      heap[#heap] = nil
      if #heap > 0 then down(1) end
    else
      local t, miss = it.t + 1, 0
      it.t = t
      local base = it.h * nb
      for _, row in ipairs({it.a, it.b}) do
        local kb = row[t]
        if kb then
          reads = reads + 1
          if access(base + kb) then hits = hits + 1 else miss = miss + 1 end
        end
      end
      clock[c] = clock[c] + 1 + pen * miss
      steps = steps + 1
      if t >= it.n then
        now = clock[c]
        cur[c] = next_item()
      end
      down(1)
    end
  end
  return hits, reads, steps, last / (steps / ctas)
end

print(string.format("block-%d L2 model: %d CTAs, LRU of %d MB in %d KB K+V tiles, miss penalty %g steps, %d heads%s",
  B, ctas, l2mb, B / 2, pen, H, sweep > 0 and string.format(", sweep of %g items", sweep) or ""))
print("| shape | density | layout | passes | tiles read | L2 hit rate | HBM GB | steps (M) | finish / ideal |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for _, sh in ipairs(shapes) do
  for i, d in ipairs(dens) do
    for _, gen in ipairs(gens) do
      local rows, nb = layout(gen, sh.S, d, 10 + i)
      for _, np in ipairs(passes) do
        local hits, reads, steps, fin = simulate(rows, nb, np)
        print(string.format("| %s | %.1f | %s | %d | %d | %.3f | %.1f | %.2f | %.3f |", sh.name, d, gen, np, reads,
          hits / reads, (reads - hits) * B * 512 / 1e9, steps / 1e6, fin))
      end
      collectgarbage()
    end
  end
end
