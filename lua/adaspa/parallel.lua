-- adaspa.parallel: sequence parallelism (Ulysses) over a communicator (adaspa.comm).
--
-- Each rank holds a contiguous slice of the tokens for the per-token layers (linear layers,
-- norms, modulation, feed-forward, cross-attention queries). Around self-attention an all-to-all
-- turns the rank's [tokens_r, H, D] into [S, heads_r, D] (every token, the rank's heads), the
-- rank runs attention on its heads through the same attention context (the policy's search,
-- layouts and LSE cache are per head, so they stay rank-local), and a second all-to-all returns
-- [tokens_r, H, D]. Tokens that every rank holds whole (HunyuanVideo's text, info.n_txt of them,
-- after the rank's slice) only need the rank's heads picked on the way in and an all-gather by
-- heads on the way out. Tokens split as evenly as possible (the first S % N ranks get one more);
-- heads likewise at first (contiguous ranges; H < N is an error); after each search of a layer
-- (AdaSpa's schedule, the first one included) the heads are reassigned greedy longest-first by
-- the kept blocks of the layouts just chosen (parallel.balance), and the cached layout, recall
-- and LSE rows move with them before the sparse steps (sp.balance = false keeps the contiguous
-- ranges).
--
--   local sp = parallel.new(comm)            -- comm: adaspa.comm.world() or a Comm
--   sp:tokens(S)   -> counts (one per rank), first (1-based index of this rank's first token), n
--   sp:heads(H [, key]) -> per rank the list of its 1-based head indices (key "layer:branch": that
--       layer's current assignment; nil: the contiguous split)
--   sp:shard(x)    -> this rank's rows of x [S, ...] (a view)
--   sp:gather(x_r, S) -> every rank's rows, [S, ...] (on every rank)
--   sp:attention(ctx, q, k, v, info [, prepare]) -> [tokens_r + n_txt, H, D]; prepare(q, k) runs on
--       the head-split [S, heads_r, D] tensors before attention (RoPE: positions are whole there)
--   sp:gather_cache(cache, n_layers [, branch]) -> an adaspa.Cache holding every head (what one
--       process's cache holds) on rank 0: for saving it once
--   sp:gather_heads(values_of_my_heads, H [, key]) -> a list of H values (every rank's, global order)
--   sp.moved: {layout_bytes, mask_bytes, heads}: what this rank's moved layouts sent to the others
--       (compact CSR messages), what the same heads would have taken as f16 masks, and their count
-- A world of one rank is the identity everywhere (no copies).
local adaspa = require "adaspa"

local parallel = {}
local SP = {}
local sp_mt = {__index = SP} -- not SP itself: a policy reaches ctx.sp, and sp.__index must not reach SP

function parallel.new(comm)
  comm = comm or adaspa.comm.world()
  return setmetatable({comm = comm, rank = comm:rank(), size = comm:size(), assignment = {}}, sp_mt)
end

-- Contiguous split of n items over k parts: counts (the first n % k parts get one more).
function parallel.split(n, k)
  local c, base, extra = {}, math.floor(n / k), n % k
  for r = 1, k do c[r] = base + (r <= extra and 1 or 0) end
  return c
end

function SP:tokens(S)
  local c = parallel.split(S, self.size)
  local first = 1
  for r = 1, self.rank do first = first + c[r] end
  return c, first, c[self.rank + 1]
end

-- The contiguous head ranges (the plain split).
function parallel.contiguous(H, k)
  local c, lists, h = parallel.split(H, k), {}, 1
  for r = 1, k do
    lists[r] = {}
    for _ = 1, c[r] do lists[r][#lists[r] + 1] = h; h = h + 1 end
  end
  return lists
end

-- Greedy longest-first: heads sorted by work (descending, ties by index), each to the rank with
-- the least work so far (ties: the lower rank); every rank gets at least one head when H >= k.
-- work: a list of H non-negative numbers. Returns per rank the sorted list of its heads.
function parallel.balance(work, k)
  local H = #work
  local order = {}
  for h = 1, H do order[h] = h end
  table.sort(order, function(a, b) if work[a] ~= work[b] then return work[a] > work[b] end return a < b end)
  local lists, load = {}, {}
  for r = 1, k do lists[r], load[r] = {}, 0 end
  for i, h in ipairs(order) do
    local best
    if i <= k then best = i -- the k heaviest heads: one to each rank (none left without work)
    else
      best = 1
      for r = 2, k do if load[r] < load[best] then best = r end end
    end
    lists[best][#lists[best] + 1] = h
    load[best] = load[best] + work[h]
  end
  for r = 1, k do table.sort(lists[r]) end
  return lists
end

-- max over mean of the per-rank sums of work under an assignment (1: perfectly balanced).
function parallel.imbalance(work, lists)
  local mx, sum = 0, 0
  for _, l in ipairs(lists) do
    local s = 0
    for _, h in ipairs(l) do s = s + work[h] end
    mx, sum = math.max(mx, s), sum + s
  end
  if sum <= 0 then return 1 end
  return mx / (sum / #lists)
end

-- key: the assignment's key ("layer:branch"), nil: the plain split.
function SP:heads(H, key)
  if H < self.size then
    error(string.format("parallel: %d attention heads cannot be split over %d ranks (each rank needs a head): use at most %d processes",
      H, self.size, H), 3)
  end
  local a = key and self.assignment[key]
  if a then return a end
  self.plain = self.plain or {}
  self.plain[H] = self.plain[H] or parallel.contiguous(H, self.size)
  return self.plain[H]
end

-- The sequence-parallel helper of an attention context (ctx.sp), or nil for one process.
function parallel.of(ctx)
  local sp = ctx and ctx.sp
  if sp and sp.size > 1 then return sp end
  return nil
end

-- The patch embedding of the video tokens a rank holds: linear(patchify(x) rows, w, b) over this
-- rank's rows with sp (parallel.of), every row without. Returns y [rows, out], rows.
function parallel.embed_patches(sp, x, w, b)
  local patches = adaspa.patchify(x)
  local mine = sp and sp:shard(patches) or patches
  local rows = mine:shape()[1]
  local y = adaspa.linear(mine, w, b)
  if mine ~= patches then mine:free() end
  patches:free()
  return y, rows
end

-- The output rows of every rank, [n, ...], from this rank's out (freed); out itself without sp.
function parallel.gather_rows(sp, out, n)
  if not sp then return out end
  local all = sp:gather(out, n)
  out:free()
  return all
end

function SP:shard(x)
  if self.size == 1 then return x end
  local _, first, n = self:tokens(x:shape()[1])
  if n < 1 then error(string.format("parallel: %d tokens cannot be split over %d ranks", x:shape()[1], self.size), 2) end
  return x:narrow(1, first, n)
end

function SP:gather(x, S)
  if self.size == 1 then return x end
  local counts = self:tokens(S)
  local copies, send = {}, {}
  for r = 1, self.size do copies[r], send[r] = x, x:shape()[1] end
  local all = adaspa.concat(copies)
  local out = self.comm:all_to_all(all, send, counts)
  all:free()
  return out
end

function SP:gather_heads(mine, H, key)
  return self:gather_lists(mine, H, self:heads(H, key))
end

local function same(a, b)
  for r = 1, #a do
    if #a[r] ~= #b[r] then return false end
    for j = 1, #a[r] do if a[r][j] ~= b[r][j] then return false end end
  end
  return true
end

-- Moves per-head rows (dim 1 of x: this rank's heads under `old`, in that order) to the ranks of
-- `new` (per rank a list of heads; a head may go to several ranks, every rank needs one). Returns
-- this rank's rows in new[me]'s order. Any dtype and row shape: one all-to-all of whole rows.
function SP:move_rows(x, old, new)
  local me = self.rank + 1
  local pos_old = {}
  for j, h in ipairs(old[me]) do pos_old[h] = j end
  local owner = {}
  for r = 1, self.size do for _, h in ipairs(old[r]) do owner[h] = r end end
  local rows, send_rows, recv_rows, got_from = {}, {}, {}, {}
  for d = 1, self.size do
    send_rows[d], recv_rows[d], got_from[d] = 0, 0, {}
    for _, h in ipairs(new[d]) do
      if pos_old[h] then rows[#rows + 1] = x:narrow(1, pos_old[h], 1); send_rows[d] = send_rows[d] + 1 end
    end
  end
  for _, h in ipairs(new[me]) do -- (sources in rank order, each sends in my new order)
    local r = owner[h]
    recv_rows[r] = recv_rows[r] + 1
    got_from[r][#got_from[r] + 1] = h
  end
  local packed = adaspa.concat(rows)
  for _, t in ipairs(rows) do t:free() end
  local recv = self.comm:all_to_all(packed, send_rows, recv_rows)
  packed:free()
  local at, off = {}, 0
  for r = 1, self.size do
    for j, h in ipairs(got_from[r]) do at[h] = off + j end
    off = off + recv_rows[r]
  end
  local ordered, in_order = {}, true
  for j, h in ipairs(new[me]) do
    ordered[j] = recv:narrow(1, at[h], 1)
    in_order = in_order and at[h] == j
  end
  if in_order then for _, t in ipairs(ordered) do t:free() end return recv end
  local out = adaspa.concat(ordered)
  for _, t in ipairs(ordered) do t:free() end
  recv:free()
  return out
end

-- Per-head numbers of this rank's heads under `lists` -> all H of them, in head order, on every rank.
function SP:gather_lists(mine, H, lists)
  local full = {}
  for h = 1, H do full[h] = 0 end
  for j, h in ipairs(lists[self.rank + 1]) do full[h] = mine[j] end
  if self.size == 1 then return full end
  return self.comm:all_reduce(full, "sum")
end

-- Moves a cache layer's per-head state (layout rows, recall, LSE rows; their steps kept) from the
-- assignment old to new (see move_rows). Returns nothing; the cache holds new[me]'s heads after.
function SP:move_layer(cache, layer, old, new, H)
  local me = self.rank + 1
  local layout, lse = cache:layout(layer), cache:lse(layer)
  local step, lse_step = cache:step(layer), cache:lse_step(layer)
  local moved_layout, recall, moved_lse
  if layout then
    -- compact CSR messages (layout:encode), checked on receipt; the bytes sent are counted in
    -- self.moved against the f16 masks the same heads would have taken
    local sent
    moved_layout, sent = self.comm:move_layout(layout, old, new)
    local mine, heads_out = {}, 0
    for _, h in ipairs(old[me]) do mine[h] = true end
    for d = 1, self.size do
      if d ~= me then for _, h in ipairs(new[d]) do if mine[h] then heads_out = heads_out + 1 end end end
    end
    local m = self.moved or {layout_bytes = 0, mask_bytes = 0, heads = 0}
    m.layout_bytes, m.heads = m.layout_bytes + sent, m.heads + heads_out
    m.mask_bytes = m.mask_bytes + heads_out * layout:nqb() * layout:nkb() * 2
    self.moved = m
    local rec = cache:recall(layer)
    if rec then
      local all = self:gather_lists(rec, H, old)
      recall = {}
      for j, h in ipairs(new[me]) do recall[j] = all[h] end
    end
  end
  if lse then moved_lse = self:move_rows(lse, old, new); lse:free() end
  cache:clear(layer)
  if moved_layout then cache:set(layer, {layout = moved_layout, step = step, recall = recall}) end
  if moved_lse then cache:set(layer, {lse = moved_lse, step = lse_step}); moved_lse:free() end
end

-- With balance on (the default): after a search (or plan) of a layer has chosen its layouts, the
-- heads are reassigned to balance the kept blocks of these layouts (parallel.balance over every
-- rank's densities), and the layer's cached layout, recall and LSE rows move with their heads,
-- before the sparse steps that use them (only when that lowers the imbalance; else nothing
-- moves). This includes the first search: its fused dense + mass pass runs on the heads as they
-- were (the contiguous split), which costs the same per head.
-- The next search sees the same heads, layouts and LSE values as one process would, so the
-- layouts, and the latents, stay those of one process.
function SP:rebalance(ctx, H, info, key)
  local d = ctx.cache:density(info.layer)
  if not d or #d == 0 then return end
  local old = self:heads(H, key)
  local all = self:gather_lists(d, H, old)
  local new = parallel.balance(all, self.size)
  local before, after = parallel.imbalance(all, old), parallel.imbalance(all, new)
  if after >= before - 1e-12 then new, after = old, before end -- no gain: nothing moves
  self.last_balance = self.last_balance or {}
  local e = {step = ctx.step, plain = parallel.imbalance(all, parallel.contiguous(H, self.size)),
             before = before, after = after, moved = not same(old, new)}
  self.last_balance[key] = e
  self.balance_log = self.balance_log or {}
  self.balance_log[#self.balance_log + 1] = {key = key, step = e.step, plain = e.plain, before = e.before, after = e.after}
  if not e.moved then return end
  self:move_layer(ctx.cache, info.layer, old, new, H)
  self.assignment[key] = new
end

-- Every head of a cache's layers on rank 0: a new adaspa.Cache of n_layers whose layer l holds
-- what one process's would (layouts, recalls, LSE rows in head order, their steps). branch: the
-- guidance branch the assignments belong to. Layers empty on every rank stay empty. Every rank
-- calls it; the other ranks get a cache of one head per layer (the exchange gives every rank
-- some rows), not to be used.
function SP:gather_cache(cache, n_layers, branch)
  local out = adaspa.Cache.new(n_layers)
  if self.size == 1 then error("parallel: gather_cache needs several ranks", 2) end
  for l = 1, n_layers do
    local layout, lse = cache:layout(l), cache:lse(l)
    local mine = layout and layout:heads() or (lse and lse:shape()[1]) or 0
    local H = self.comm:all_reduce({mine}, "sum")[1]
    if H > 0 then
      local key = l .. ":" .. (branch or 1)
      local lists = self:heads(H, key)
      local to, all = {}, {}
      for h = 1, H do all[h] = h end
      to[1] = all
      for r = 2, self.size do to[r] = {lists[r][1]} end
      local copy = adaspa.Cache.new(1) -- the layer's entries, moved in a scratch cache
      if layout then copy:set(1, {layout = layout, step = cache:step(l), recall = cache:recall(l)}) end
      if lse then copy:set(1, {lse = lse, step = cache:lse_step(l)}); lse:free() end
      self:move_layer(copy, 1, lists, to, H)
      local ml, me = copy:layout(1), copy:lse(1)
      if ml then out:set(l, {layout = ml, step = copy:step(1), recall = copy:recall(1)}) end
      if me then out:set(l, {lse = me, step = copy:lse_step(1)}); me:free() end
      copy:free()
    end
  end
  return out
end

-- A new contiguous tensor of x's values (t:contiguous() gives x itself when it is contiguous).
local function copy(x)
  local c = x:contiguous()
  if c == x then c = x:clone() end
  return c
end

-- x [R, H, D] (every head) -> a new [R, #list, D], contiguous: the heads of list, in its order.
local function pick_heads(x, list)
  local run = true
  for j = 2, #list do run = run and list[j] == list[j - 1] + 1 end
  if run then
    local n = x:narrow(2, list[1], #list)
    local c = copy(n)
    n:free()
    return c
  end
  local xp = x:permute(2, 1, 3)                                   -- [H, R, D]
  local parts = {}
  for j, h in ipairs(list) do parts[j] = xp:narrow(1, h, 1) end
  local c = adaspa.concat(parts)                                   -- [#list, R, D]
  for _, t in ipairs(parts) do t:free() end
  local back = c:permute(2, 1, 3)
  local out = copy(back)
  xp:free(); c:free(); back:free()
  return out
end

-- The Ulysses exchange around one self-attention call. q, k, v: [rows + R, H, D], where the first
-- rows are this rank's slice of the info.n_img sharded tokens (sp:tokens) and the R = info.n_txt
-- last rows are tokens every rank holds whole (HunyuanVideo's text in the joint attention; none
-- for Wan). The sharded rows go to a head split by all-to-all; the shared rows only need this
-- rank's heads picked. Attention runs on [n_img + R, heads_r, D] (the whole sequence, as one
-- process orders it); its sharded rows go back by the inverse all-to-all, and its shared rows are
-- all-gathered by heads so every rank again holds them whole. Returns [rows + R, H, D].
function SP:attention(ctx, q, k, v, info, prepare)
  local H = q:shape()[2]
  if self.size == 1 then
    if prepare then prepare(q, k) end
    return ctx and ctx.attention and ctx:attention(q, k, v, info) or (adaspa.attention(q, k, v, {kv_valid = info.kv_valid}))
  end
  local R = info.n_txt or 0
  local counts, _, rows = self:tokens(info.n_img)
  if q:shape()[1] ~= rows + R then
    error(string.format("parallel: attention: q has %d rows, expected this rank's %d of %d sharded tokens + %d shared ones",
      q:shape()[1], rows, info.n_img, R), 2)
  end
  local key = info.layer .. ":" .. (ctx and ctx.branch or 1) -- assignments per (layer, guidance branch)
  local lists = self:heads(H, key)
  local mine = lists[self.rank + 1]
  local c = self.comm
  local function to_heads(x)
    if R == 0 then return c:seq_to_heads(x, counts, lists) end
    local xs, xt = x:narrow(1, 1, rows), x:narrow(1, rows + 1, R)
    local a, b = c:seq_to_heads(xs, counts, lists), pick_heads(xt, mine)
    local y = adaspa.concat({a, b})
    xs:free(); xt:free(); a:free(); b:free()
    return y
  end
  local qh, kh, vh = to_heads(q), to_heads(k), to_heads(v)
  if prepare then prepare(qh, kh) end
  info.sp = {parallel = self, heads = mine, n_heads = H, key = key}
  local o = ctx and ctx.attention and ctx:attention(qh, kh, vh, info) or (adaspa.attention(qh, kh, vh, {kv_valid = info.kv_valid}))
  qh:free(); kh:free(); vh:free()
  local out
  if R == 0 then
    out = c:heads_to_seq(o, counts, lists)
  else
    local os_, ot = o:narrow(1, 1, info.n_img), o:narrow(1, info.n_img + 1, R)
    local a = c:heads_to_seq(os_, counts, lists)
    local copies, shared = {}, {}
    for r = 1, self.size do copies[r], shared[r] = ot, R end
    local all = adaspa.concat(copies)                    -- my heads' shared rows, once per rank
    local b = c:heads_to_seq(all, shared, lists)         -- [R, H, D]: every rank's heads
    out = adaspa.concat({a, b})
    os_:free(); ot:free(); a:free(); all:free(); b:free()
  end
  o:free()
  local mode = ctx and ctx.last_mode
  if self.balance ~= false and (mode == "search" or mode == "plan") then self:rebalance(ctx, H, info, key) end
  return out
end

return parallel
