-- adaspa.parallel: sequence parallelism (Ulysses) over a communicator (adaspa.comm).
--
-- Each rank holds a contiguous slice of the tokens for the per-token layers (linear layers,
-- norms, modulation, feed-forward, cross-attention queries). Around self-attention an all-to-all
-- turns the rank's [tokens_r, H, D] into [S, heads_r, D] (every token, the rank's heads), the
-- rank runs attention on its heads through the same attention context (the policy's search,
-- layouts and LSE cache are per head, so they stay rank-local), and a second all-to-all returns
-- [tokens_r, H, D]. Tokens split as evenly as possible (the first S % N ranks get one more);
-- heads likewise at first (contiguous ranges; H < N is an error); at each later search of a
-- layer (AdaSpa's schedule) the heads are reassigned greedy longest-first by the kept blocks of
-- the previous layouts (parallel.balance), and the cached LSE rows move with them (sp.balance =
-- false keeps the contiguous ranges).
--
--   local sp = parallel.new(comm)            -- comm: adaspa.comm.world() or a Comm
--   sp:tokens(S)   -> counts (one per rank), first (1-based index of this rank's first token), n
--   sp:heads(H [, key]) -> per rank the list of its 1-based head indices (key "layer:branch": that
--       layer's current assignment; nil: the contiguous split)
--   sp:shard(x)    -> this rank's rows of x [S, ...] (a view)
--   sp:gather(x_r, S) -> every rank's rows, [S, ...] (on every rank)
--   sp:attention(ctx, q, k, v, info [, prepare]) -> [tokens_r, H, D]; prepare(q, k) runs on the
--       head-split [S, heads_r, D] tensors before attention (RoPE: positions are whole there)
--   sp:gather_heads(values_of_my_heads, H [, key]) -> a list of H values (every rank's, global order)
-- A world of one rank is the identity everywhere (no copies).
local adaspa = require "adaspa"

local parallel = {}
local SP = {}
SP.__index = SP

function parallel.new(comm)
  comm = comm or adaspa.comm.world()
  return setmetatable({comm = comm, rank = comm:rank(), size = comm:size(), assignment = {}}, SP)
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
  local lists = self:heads(H, key)
  local full = {}
  for h = 1, H do full[h] = 0 end
  for j, h in ipairs(lists[self.rank + 1]) do full[h] = mine[j] end
  if self.size == 1 then return full end
  return self.comm:all_reduce(full, "sum")
end

local function same(a, b)
  for r = 1, #a do
    if #a[r] ~= #b[r] then return false end
    for j = 1, #a[r] do if a[r][j] ~= b[r][j] then return false end end
  end
  return true
end

-- Moves the cached LSE rows [heads, S] of a layer from the old assignment to the new one (an
-- all-to-all of rows), and clears the layer's layout (it was over the old heads; the search
-- about to run replaces it).
function SP:move_lse(cache, layer, old, new)
  local lse = cache:lse(layer)
  local me = self.rank + 1
  local pos_old = {}
  for j, h in ipairs(old[me]) do pos_old[h] = j end
  local owner = {}
  for r = 1, self.size do for j, h in ipairs(old[r]) do owner[h] = {r, j} end end
  local rows, send_rows, recv_rows = {}, {}, {}
  for d = 1, self.size do
    send_rows[d] = 0
    for _, h in ipairs(new[d]) do
      if pos_old[h] then rows[#rows + 1] = lse:narrow(1, pos_old[h], 1); send_rows[d] = send_rows[d] + 1 end
    end
  end
  local got_from = {} -- source rank -> heads of mine it sends, in my new order
  for r = 1, self.size do recv_rows[r], got_from[r] = 0, {} end
  for _, h in ipairs(new[me]) do
    local r = owner[h][1]
    recv_rows[r] = recv_rows[r] + 1
    got_from[r][#got_from[r] + 1] = h
  end
  local packed = adaspa.concat(rows)
  local recv = self.comm:all_to_all(packed, send_rows, recv_rows)
  local at, off = {}, 0
  for r = 1, self.size do
    for j, h in ipairs(got_from[r]) do at[h] = off + j end
    off = off + recv_rows[r]
  end
  local ordered = {}
  for _, h in ipairs(new[me]) do ordered[#ordered + 1] = recv:narrow(1, at[h], 1) end
  local moved = adaspa.concat(ordered)
  local step = cache:lse_step(layer)
  cache:clear(layer)
  cache:set(layer, {lse = moved, step = step})
  lse:free(); packed:free(); recv:free(); moved:free()
end

-- With balance on (the default): at a search of a layer that has layouts from an earlier search,
-- the heads are reassigned to balance the kept blocks (parallel.balance over every rank's
-- densities) and the cached LSE rows follow their heads. The search sees the same heads and LSE
-- values as one process would, so the layouts, and the latents, stay those of one process.
function SP:rebalance(ctx, H, info, key)
  local pol = ctx.policy
  if not (pol.search_set and pol.search_set[ctx.step]) then return end -- (policies with a search schedule)
  local d = ctx.cache:density(info.layer)
  if not d or #d == 0 or not ctx.cache:lse(info.layer) then return end
  local old = self:heads(H, key)
  local all = self:gather_heads(d, H, key)
  local new = parallel.balance(all, self.size)
  self.last_balance = self.last_balance or {}
  self.last_balance[key] = {plain = parallel.imbalance(all, parallel.contiguous(H, self.size)),
                            before = parallel.imbalance(all, old), after = parallel.imbalance(all, new)}
  if same(old, new) then return end
  self:move_lse(ctx.cache, info.layer, old, new)
  self.assignment[key] = new
end

function SP:attention(ctx, q, k, v, info, prepare)
  local H = q:shape()[2]
  if self.size == 1 then
    if prepare then prepare(q, k) end
    return ctx and ctx.attention and ctx:attention(q, k, v, info) or (adaspa.attention(q, k, v, {kv_valid = info.kv_valid}))
  end
  local counts = self:tokens(info.n_img + (info.n_txt or 0))
  local key = info.layer .. ":" .. (ctx and ctx.branch or 1) -- assignments per (layer, guidance branch)
  if self.balance ~= false and ctx and ctx.policy then self:rebalance(ctx, H, info, key) end
  local lists = self:heads(H, key)
  local c = self.comm
  local qh, kh, vh = c:seq_to_heads(q, counts, lists), c:seq_to_heads(k, counts, lists), c:seq_to_heads(v, counts, lists)
  if prepare then prepare(qh, kh) end
  info.sp = {parallel = self, heads = lists[self.rank + 1], n_heads = H, key = key}
  local o = ctx and ctx.attention and ctx:attention(qh, kh, vh, info) or (adaspa.attention(qh, kh, vh, {kv_valid = info.kv_valid}))
  qh:free(); kh:free(); vh:free()
  local out = c:heads_to_seq(o, counts, lists)
  o:free()
  return out
end

return parallel
