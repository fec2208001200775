-- adaspa.policy.window: a static 3D sliding window over (frame, row, column), after Sliding Tile
-- Attention (STA; Zhang et al., "Fast Video Generation with Sliding Tile Attention",
-- arXiv 2502.04507).
--
-- STA's rule (its reference mask): every query attends to the keys inside a 3D window of fixed
-- size around it; near the borders the window's center is clamped so that the window stays
-- inside the video (it is shifted, not cut); text queries attend to everything and every query
-- attends to the text. Window sizes may differ per head. The pattern does not depend on q or k,
-- so it is planned once and reused.
--
-- Here, per axis of length N, a window of size w around coordinate p covers
--   |c - p'| <= floor(w / 2),   c = min(max(p, floor(w / 2)), N - 1 - floor(w / 2))
-- (2 floor(w/2) + 1 positions: w when w is odd; the whole axis when w >= N), applied to latent
-- tokens (t, y, x) with tokens in raster order: token s = t Hh Ww + y Ww + x.
--
-- Deviation from STA: STA reorders the tokens tile by tile (e.g. 6x8x8 tiles of 384 tokens)
-- and moves its window in whole tiles, so its mask is exactly block-sparse. adaspa keeps the
-- raster order and its blocks are 64 or 128 consecutive tokens, which span parts of rows. The
-- window is applied at token level (STA's clamped window, in tokens rather than tiles) and
-- lifted to blocks: key block kb is kept for query block qb when some token of kb lies in the
-- window of some image token of qb. It is computed from coordinate ranges: the image tokens of
-- qb split into row segments (one frame t, one row y, columns x0..x1); a segment's windows
-- cover frames Wt(t), rows Wy(y) and columns from Wx(x0)'s first to Wx(x1)'s last (the window
-- start is monotone in x), and each (frame, row) of that box is one run of key tokens, hence a
-- run of key blocks. The kept set is thus a superset of the token window, and the block density
-- is above the token density (a block of 64 tokens spans several rows of a narrow frame, so the
-- column window matters less than in STA's tiles); plan() records the token density per head
-- in p.token_density for comparison.
-- Text blocks (any block holding a text token) are kept as rows and as columns.
--
-- Schedule: steps before `warmup` dense; at step `warmup` each layer plans (one layout per
-- shape and window set, shared by all layers) and the later steps reuse it.
local common = require "adaspa.policy.common"

local policy = {}
policy.__index = policy

policy.source = {
  title = "Fast Video Generation with Sliding Tile Attention",
  arxiv = "2502.04507",
  url = "https://arxiv.org/abs/2502.04507",
  method = "STA: static 3D window with a clamped center, per-head window sizes, text dense",
}

-- windows: nil, or {t, h, w} in latent tokens for every head, or a list of one {t, h, w} per head.
-- window_fraction: with windows nil, the window is this fraction of the grid per axis:
--   {0.6, 0.5, 0.3} is STA's 3x3x3-tile window on HunyuanVideo (18x24x24 tokens of 30x48x80).
-- exact_recall: measure each layer's recall against the exact block mass at the plan step (a
--   dense pass and a mass pass per layer, once per run); default false, compare turns it on.
-- sparsity (nil by default): with windows nil, window_fraction is scaled by one factor (every
--   axis alike, the window's shape kept) chosen so that the block layout's image part keeps the
--   nearest to 1 - sparsity of the image blocks (the block density grows with the factor; the
--   factor is found by bisection at the first plan of a grid), so the zoo's policies can be
--   compared at AdaSpa's sparsities (recipe compare's sweep.sparsity). Not with windows.
policy.options = {"block", "warmup", "windows", "window_fraction", "exact_recall", "sparsity"}
policy.shared = {block = true, warmup = true}
policy.defaults = {block = 64, warmup = 10, window_fraction = {0.6, 0.5, 0.3}, exact_recall = false}

local function size3(v)
  if type(v) ~= "table" or #v ~= 3 then return false end
  for i = 1, 3 do if not common.is_int(v[i], 1) then return false end end
  return true
end

function policy.new(opts, steps)
  local p, bad = common.configure("window", policy, opts)
  common.check_shared(p, bad, steps)
  if p.windows ~= nil then
    if type(p.windows) ~= "table" or #p.windows == 0 then
      bad("windows", "must be {t, h, w} in latent tokens, or a list of one {t, h, w} per head")
    end
    if type(p.windows[1]) == "number" then
      if not size3(p.windows) then bad("windows", "a window size must be 3 integers >= 1 (frames, rows, columns)") end
    else
      for i, w in ipairs(p.windows) do
        if not size3(w) then
          error(string.format("policy window: windows[%d] = %s: must be 3 integers >= 1 (frames, rows, columns)", i,
            common.show(w)), 2)
        end
      end
    end
  end
  if p.sparsity ~= nil then
    if type(p.sparsity) ~= "number" or not (p.sparsity >= 0 and p.sparsity < 1) then bad("sparsity", "must be in [0, 1)") end
    if p.windows ~= nil then bad("sparsity", "scales window_fraction: it does not go with windows") end
  end
  local f = p.window_fraction
  if type(f) ~= "table" or #f ~= 3 then bad("window_fraction", "must be 3 fractions in (0, 1] (frames, rows, columns)") end
  for i = 1, 3 do
    if type(f[i]) ~= "number" or not (f[i] > 0 and f[i] <= 1) then
      bad("window_fraction", "must be 3 fractions in (0, 1] (frames, rows, columns)")
    end
  end
  p.memo = {}
  return p
end

function policy:describe()
  local w
  if self.windows == nil and self.sparsity then
    w = string.format("window of the shape %s scaled to sparsity %.3g", common.show(self.window_fraction), self.sparsity)
  elseif self.windows == nil then
    w = string.format("window %s of the grid", common.show(self.window_fraction))
  elseif type(self.windows[1]) == "number" then
    w = "window " .. common.show(self.windows) .. " tokens"
  else
    w = string.format("per-head windows (%d heads)", #self.windows)
  end
  return string.format("window (STA, arXiv 2502.04507): %s, block %d, dense warm-up %d steps, planned at step %d, text dense%s",
    w, self.block, self.warmup, self.warmup, self.exact_recall and ", exact recall measured" or "")
end

function policy:mode(step) return common.mode(self, step) end

-- The window of fraction f of the grid per axis.
local function scaled(f, grid, c)
  local s = {}
  for a = 1, 3 do s[a] = math.min(grid[a], math.max(1, math.floor(c * f[a] * grid[a] + 0.5))) end
  return s
end

-- The image-block density of a window's block layout: kept (query, key) block pairs of the image
-- rows over the image rows x image columns.
local function image_density(g, win) return common.image_density(g, policy.block_rows(g, win)) end

-- With sparsity: the window of window_fraction's shape whose image-block density is nearest to
-- 1 - sparsity (bisection on the scale factor; memoized per geometry).
function policy:matched(g)
  local key = table.concat(g.grid, "x") .. ":" .. g.block .. ":" .. g.n_img
  self.matched_memo = self.matched_memo or {}
  if self.matched_memo[key] then return self.matched_memo[key] end
  local target, f = 1 - self.sparsity, self.window_fraction
  local cmax = 1 / math.min(f[1], f[2], f[3])   -- the whole grid on every axis
  local lo, hi = 0, cmax
  for _ = 1, 16 do   -- the smallest scale whose density reaches the target (to 2^-16 of the range: below one token)
    local mid = (lo + hi) / 2
    if image_density(g, scaled(f, g.grid, mid)) >= target then hi = mid else lo = mid end
  end
  local up, down = scaled(f, g.grid, hi), scaled(f, g.grid, lo)
  local du, dd = image_density(g, up), image_density(g, down)
  local best = (math.abs(dd - target) < math.abs(du - target)) and {win = down, density = dd} or {win = up, density = du}
  self.matched_memo[key] = best
  return best
end

-- The window size {t, h, w} of each head for a layer of H heads and a grid (g: the layer's
-- geometry, needed with sparsity).
function policy:sizes(H, grid, g)
  local out = {}
  if self.windows == nil then
    local s = self.sparsity and self:matched(g).win or scaled(self.window_fraction, grid, 1)
    for h = 1, H do out[h] = s end
  elseif type(self.windows[1]) == "number" then
    for h = 1, H do out[h] = self.windows end
  else
    if #self.windows ~= H then
      error(string.format("policy window: windows lists %d window sizes but the layer has %d heads", #self.windows, H), 3)
    end
    out = self.windows
  end
  return out
end

-- Per axis: the clipped window [lo, hi] of coordinate p on an axis of length n for size w.
local function axis(w, n)
  local half = math.floor(w / 2)
  return function(p)
    local c = math.min(math.max(p, half), n - 1 - half)
    return math.max(c - half, 0), math.min(c + half, n - 1)
  end
end
policy.axis = axis

-- rows[qb] = {[kb] = true} of the image part of the window rule lifted to blocks (1-based).
function policy.block_rows(g, win)
  local T, Hh, Ww = g.grid[1], g.grid[2], g.grid[3]
  local HW, B = Hh * Ww, g.block
  local ft, fy, fx = axis(win[1], T), axis(win[2], Hh), axis(win[3], Ww)
  local rows = {}
  local function mark(set, u, w)
    for kb = math.floor(u / B) + 1, math.floor(w / B) + 1 do set[kb] = true end
  end
  for qb = 1, g.nqb do
    local set = {}
    rows[qb] = set
    local a, b = (qb - 1) * B, math.min(qb * B, g.n_img) - 1
    local s = a
    while s <= b do
      local t, rem = math.floor(s / HW), s % HW
      local y, x0 = math.floor(rem / Ww), rem % Ww
      local e = math.min(b, s - x0 + Ww - 1)
      local x1 = x0 + (e - s)
      local t0, t1 = ft(t)
      local y0, y1 = fy(y)
      local c0 = fx(x0)
      local _, c1 = fx(x1)
      for tt = t0, t1 do
        local base = tt * HW
        if c0 == 0 and c1 == Ww - 1 then
          mark(set, base + y0 * Ww, base + y1 * Ww + Ww - 1)
        else
          for yy = y0, y1 do mark(set, base + yy * Ww + c0, base + yy * Ww + c1) end
        end
      end
      s = e + 1
    end
  end
  return rows
end

-- Token-level density of a window on the image tokens (each query keeps the same count).
local function token_density(win, grid)
  local d = 1
  for a = 1, 3 do d = d * math.min(2 * math.floor(win[a] / 2) + 1, grid[a]) / grid[a] end
  return d
end

function policy:plan(q, k, v, info, ctx)
  local g = common.geometry(q, k, info, self.block)
  if not g.grid then error("policy window: the layer has no grid (info.grid = {T, H, W} of latent tokens)", 2) end
  local sizes = self:sizes(g.H, g.grid, g)
  local names, index, choice, patterns = {}, {}, {}, {}
  for h = 1, g.H do
    local name = table.concat(sizes[h], "x")
    if not index[name] then names[#names + 1] = name; index[name] = #names end
    choice[h] = index[name]
  end
  local key = common.shape_key(g, g.H .. ":" .. table.concat(names, ",") .. ":" .. table.concat(choice, ","))
  local layout = self.memo[key]
  if not layout then
    for h = 1, g.H do
      local c = choice[h]
      if not patterns[c] then patterns[c] = common.pattern_tensor(policy.block_rows(g, sizes[h]), g) end
    end
    local inds = common.indicators(patterns, q:device())
    layout = common.layout_of(inds, choice, g.H, g.block)
    for i = 1, #patterns do patterns[i]:free(); inds[i]:free() end
    self.memo[key] = layout
  end
  local td = {}
  for h = 1, g.H do td[h] = token_density(sizes[h], g.grid) end
  self.token_density = td
  local extra = {flops = 0}
  if self.exact_recall then
    extra.recall, extra.recall_seconds, extra.recall_flops, extra.mass = common.recall(layout, q, k, v, g, ctx)
  end
  return layout, extra
end

return policy
