-- adaspa.policy.spatial_temporal: per head and step, a spatial or a temporal pattern chosen by
-- online profiling, after Sparse VideoGen (SVG; Xi et al., "Sparse VideoGen: Accelerating Video
-- Diffusion Transformers with Spatial-Temporal Sparsity", arXiv 2502.01776).
--
-- SVG's observation: some heads attend mostly within the query's own frame (and its
-- neighbors): spatial heads; others mostly to the same place in other frames: temporal heads.
-- Its online profiling: at every sparse step and layer, compute dense attention for a few
-- sampled query rows, and each candidate pattern's masked attention for the same rows; per
-- head, keep the pattern whose output is closer (mean squared error) to dense. Text queries
-- attend to everything and every query attends to the text, in both patterns.
--
-- Patterns here, on blocks of 64 or 128 raster-order tokens (token s: frame t = s / (Hh Ww),
-- position p = s mod (Hh Ww)); a key block is kept for a query block when some key token of it
-- and some image query token of the query block satisfy:
--   spatial:  |t_k - t_q| <= frames_spatial (default 1: own frame and its neighbors);
--   temporal: |p_k - p_q| <= temporal_width, any frame (nil: matched to the spatial pattern,
--             max(0, floor(((2 frames_spatial + 1) Hh Ww / T - block) / 2)) positions each side,
--             so that a row keeps about as many key blocks in both patterns; SVG's masks are
--             matched too: its temporal mask is its spatial band of 1.5 frames each side laid
--             over the frame-transposed token order).
-- sparsity (nil by default): both rules sized so that each pattern's image part keeps the
--   nearest to 1 - sparsity of the image blocks, so spatial_temporal can be compared with the zoo
--   at AdaSpa's sparsities (recipe compare's sweep.sparsity): the spatial rule becomes a band of
--   `band` tokens on each side of the query's tokens in raster order, |s_k - s_q| <= band (whole
--   frames move the density in steps of a frame: on the tiny model's 9 latent frames 0.8 and 0.9
--   would be one pattern), and temporal_width is chosen likewise; each by integer bisection at the
--   first plan of a geometry. Not with frames_spatial or temporal_width.
-- Probing: `samples` query blocks drawn (without repetition, from `seed`, the step and the
-- layer, so runs repeat) among the blocks made only of image tokens (blocks holding text
-- tokens are dense rows in both patterns); dense attention on their rows (adaspa.attention of
-- the rows' q) against each pattern's sparse attention on the same rows (a layout whose rows
-- are the sampled blocks' rows of the pattern); per head the pattern with the lower MSE wins
-- (ties: spatial). Planning FLOPs: the dense rows and the two sparse probes.
--
-- Deviations from SVG: SVG samples single token rows (32 per call); adaspa samples whole
-- blocks (`samples` x block rows). SVG runs its patterns at token level after reordering the
-- tokens of temporal heads frame-transposed (so the temporal band is contiguous); adaspa keeps
-- the raster order and lifts both rules to blocks (a temporal row keeps, in every frame, the
-- blocks holding its positions +- temporal_width: a superset of the token rule). SVG's spatial
-- mask is a band of +-1.5 frames of tokens around each query; here it is whole frames.
local adaspa = require "adaspa"
local common = require "adaspa.policy.common"

local policy = {}
policy.__index = policy

policy.source = {
  title = "Sparse VideoGen: Accelerating Video Diffusion Transformers with Spatial-Temporal Sparsity",
  arxiv = "2502.01776",
  url = "https://arxiv.org/abs/2502.01776",
  method = "SVG: per head and step, spatial or temporal pattern by online profiling of sampled rows, text dense",
}

policy.options = {"block", "warmup", "every", "samples", "seed", "frames_spatial", "temporal_width", "exact_recall",
  "sparsity"}
policy.shared = {block = true, warmup = true}
policy.defaults = {block = 64, warmup = 10, every = 1, samples = 4, seed = 0, frames_spatial = 1, exact_recall = false}

policy.PATTERNS = {"spatial", "temporal"}

function policy.new(opts, steps)
  local p, bad = common.configure("spatial_temporal", policy, opts)
  common.check_shared(p, bad, steps)
  if not common.is_int(p.samples, 1) then bad("samples", "must be an integer >= 1 (query blocks probed per layer)") end
  if not common.is_int(p.seed, 0) then bad("seed", "must be an integer >= 0") end
  if not common.is_int(p.frames_spatial, 0) then bad("frames_spatial", "must be an integer >= 0 (frames on each side)") end
  if p.temporal_width ~= nil and not common.is_int(p.temporal_width, 0) then
    bad("temporal_width", "must be an integer >= 0 (positions in a frame on each side) or nil (matched to the spatial pattern)")
  end
  if p.sparsity ~= nil then
    if type(p.sparsity) ~= "number" or not (p.sparsity >= 0 and p.sparsity < 1) then bad("sparsity", "must be in [0, 1)") end
    if opts.frames_spatial ~= nil then bad("sparsity", "sizes the spatial rule itself: it does not go with frames_spatial") end
    if p.temporal_width ~= nil then bad("sparsity", "sizes the temporal rule itself: it does not go with temporal_width") end
  end
  p.memo = {}
  p.matched_memo = {}
  p.layouts = {}
  p.choices = {}
  return p
end

function policy:describe()
  if self.sparsity then
    return string.format("spatial_temporal (Sparse VideoGen, arXiv 2502.01776): per head a spatial token band or a temporal "
      .. "pattern, each sized to sparsity %.3g, by %d sampled query blocks against dense, every %d step%s after a dense "
      .. "warm-up of %d, block %d, text dense%s", self.sparsity, self.samples, self.every, self.every == 1 and "" or "s",
      self.warmup, self.block, self.exact_recall and ", exact recall measured" or "")
  end
  return string.format("spatial_temporal (Sparse VideoGen, arXiv 2502.01776): per head spatial (frames +-%d) or temporal "
    .. "(positions +-%s, all frames) by %d sampled query blocks against dense, every %d step%s after a dense warm-up of %d, "
    .. "block %d, text dense%s", self.frames_spatial, self.temporal_width and tostring(self.temporal_width) or "matched",
    self.samples, self.every, self.every == 1 and "" or "s", self.warmup, self.block,
    self.exact_recall and ", exact recall measured" or "")
end

function policy:mode(step) return common.mode(self, step) end

-- The temporal half-width of a grid.
function policy:width(grid)
  if self.temporal_width then return self.temporal_width end
  return math.max(0, math.floor(((2 * self.frames_spatial + 1) * grid[2] * grid[3] / grid[1] - self.block) / 2))
end

-- The rules' sizes for a geometry: {fs = frames on each side, tw = positions on each side}, or
-- with sparsity {band = tokens on each side, tw = ..., density = {spatial, temporal}} (the image
-- block densities they keep; memoized per geometry).
function policy:shape(g)
  if not self.sparsity then return {fs = self.frames_spatial, tw = self:width(g.grid)} end
  local key = common.shape_key(g)
  local m = self.matched_memo[key]
  if not m then
    local target = 1 - self.sparsity
    local function spatial(b) return common.image_density(g, self:block_rows(g, 1, {band = b})) end
    local function temporal(w) return common.image_density(g, self:block_rows(g, 2, {tw = w})) end
    local band, ds = common.nearest_int(0, g.n_img, spatial, target)
    local tw, dt = common.nearest_int(0, g.grid[2] * g.grid[3], temporal, target)
    m = {band = band, tw = tw, density = {ds, dt}}
    self.matched_memo[key] = m
  end
  return m
end

-- rows[qb] = {[kb] = true} of the spatial (which = 1) or temporal (2) rule lifted to blocks, at
-- the sizes `shape` (policy:shape's; default the geometry's).
function policy:block_rows(g, which, shape)
  shape = shape or self:shape(g)
  local T, HW, B = g.grid[1], g.grid[2] * g.grid[3], g.block
  local fs, tw = shape.fs, shape.tw
  local rows = {}
  local function mark(set, u, w)
    for kb = math.floor(u / B) + 1, math.floor(w / B) + 1 do set[kb] = true end
  end
  for qb = 1, g.nqb do
    local set = {}
    rows[qb] = set
    local a, b = (qb - 1) * B, math.min(qb * B, g.n_img) - 1
    if a <= b then
      local ta, tb = math.floor(a / HW), math.floor(b / HW)
      if which == 1 and shape.band then
        mark(set, math.max(0, a - shape.band), math.min(g.n_img - 1, b + shape.band))
      elseif which == 1 then
        mark(set, math.max(0, ta - fs) * HW, (math.min(T - 1, tb + fs) + 1) * HW - 1)
      else
        local pa, pb = a % HW, b % HW
        local ranges
        if ta == tb then ranges = {{pa, pb}}
        elseif tb == ta + 1 then ranges = {{pa, HW - 1}, {0, pb}}
        else ranges = {{0, HW - 1}} end
        for _, r in ipairs(ranges) do
          local lo, hi = math.max(0, r[1] - tw), math.min(HW - 1, r[2] + tw)
          for t = 0, T - 1 do mark(set, t * HW + lo, t * HW + hi) end
        end
      end
    end
  end
  return rows
end

-- The two pattern masks (u8 [nqb, nkb] on the CPU: spatial, temporal) of a geometry and their
-- f32 indicators on `device` (for common.layout_of), memoized; and the memo key.
function policy:patterns(g, device)
  device = device or "cpu"
  local sh = self:shape(g)
  local key = common.shape_key(g, (sh.band and "band" .. sh.band or sh.fs) .. ":" .. sh.tw)
  local m = self.memo[key]
  if not m then
    m = {pats = {common.pattern_tensor(self:block_rows(g, 1), g), common.pattern_tensor(self:block_rows(g, 2), g)},
         inds = {}}
    self.memo[key] = m
  end
  if not m.inds[device] then m.inds[device] = common.indicators(m.pats, device) end
  return m.pats, m.inds[device], key
end

-- The layout of a per-head choice (common.layout_of of the indicators inds on `device`, whose
-- patterns have memo key pkey), memoized: layouts are immutable and, re-planned every step, a
-- layer's choice mostly repeats. One layout is kept per layer (the one it planned last, which the
-- attention cache holds anyway, so the memo costs no memory beyond it); a choice is looked up
-- among all layers' layouts, so layers with the same choice share one (as window's layers do).
function policy:choice_layout(g, inds, choice, pkey, device, layer)
  local key = table.concat({pkey, device, g.H, table.concat(choice, ",")}, ";")
  local mine = self.layouts[layer]
  if mine and mine.key == key then return mine.layout end
  local layout
  for _, e in pairs(self.layouts) do
    if e.key == key then layout = e.layout; break end
  end
  layout = layout or common.layout_of(inds, choice, g.H, g.block)
  self.layouts[layer] = {key = key, layout = layout}
  return layout
end

-- The sampled query blocks (sorted) among the blocks made only of image tokens.
function policy:pick(g, step, layer)
  local n = math.floor(g.n_img / g.block)
  if n > g.nqb then n = g.nqb end
  local pool = {}
  for qb = 1, n do pool[qb] = qb end
  local rnd = common.rng(self.seed * 1000003 + step * 8191 + (layer or 0) * 131)
  local picks = {}
  for i = 1, math.min(self.samples, n) do
    local j = i - 1 + rnd(n - i + 1)
    pool[i], pool[j] = pool[j], pool[i]
    picks[i] = pool[i]
  end
  table.sort(picks)
  return picks
end

-- Per-head mean squared difference of two [n, H, D] tensors (any device), as a Lua list.
local function mse_per_head(a, b)
  local n, H, D = unpack(a:shape())
  local af, bf = a:to("f32"), b:to("f32") -- a and b themselves when already f32
  local nb = adaspa.scale(bf, -1)
  local d = adaspa.add(af, nb)
  if af ~= a then af:free() end
  if bf ~= b then bf:free() end
  nb:free()
  adaspa.mul(d, d, {out = d})
  local dt = d:permute(2, 1, 3):contiguous()
  local rows = dt:reshape({H, n * D})
  local ones = adaspa.full({n * D, 1}, 1 / (n * D), {device = d:device()})
  local m = adaspa.matmul(rows, ones)
  local mc = m:to("cpu") -- m itself on the CPU
  local s = mc:reshape({H}):totable()
  if mc ~= m then mc:free() end
  d:free(); dt:free(); rows:free(); ones:free(); m:free()
  return s
end
policy.mse_per_head = mse_per_head

-- The per-head choice (1 spatial, 2 temporal) by profiling; returns choice, the per-pattern
-- per-head errors and the FLOPs spent.
function policy:profile(q, k, v, g, pats, step, layer)
  local choice, errs, flops = {}, {}, 0
  local picks = self:pick(g, step, layer)
  if #picks == 0 then
    for h = 1, g.H do choice[h] = 1 end
    return choice, errs, 0
  end
  local B, n = g.block, #picks
  local parts = {}
  for i, qb in ipairs(picks) do parts[i] = q:narrow(1, (qb - 1) * B + 1, B) end
  local qs = adaspa.concat(parts)
  local dense, dense_lse = adaspa.attention(qs, k, v, {kv_valid = g.kv_valid})
  dense_lse:free()
  flops = flops + 4 * n * B * g.kv_valid * g.D * g.H
  for c, pat in ipairs(pats) do
    local mask = adaspa.zeros({n, g.nkb}, {dtype = "u8"})
    for i, qb in ipairs(picks) do mask:narrow(1, i, 1):copy(pat:narrow(1, qb, 1)) end
    local l = adaspa.layout.from_mask(mask:reshape({1, n, g.nkb}):expand({g.H, n, g.nkb}), B)
    local out, lse = adaspa.sparse_attention(qs, k, v, l, {kv_valid = g.kv_valid})
    errs[c] = mse_per_head(out, dense)
    flops = flops + 4 * g.D * B * B * l:nnz()
    out:free(); lse:free(); l:free(); mask:free()
  end
  qs:free(); dense:free()
  for h = 1, g.H do choice[h] = errs[2][h] < errs[1][h] and 2 or 1 end
  return choice, errs, flops
end

function policy:plan(q, k, v, info, ctx)
  local g = common.geometry(q, k, info, self.block)
  if not g.grid then error("policy spatial_temporal: the layer has no grid (info.grid = {T, H, W} of latent tokens)", 2) end
  local device = q:device()
  local pats, inds, pkey = self:patterns(g, device)
  local step = ctx and ctx.step or 0
  local choice, errs, flops = self:profile(q, k, v, g, pats, step, info.layer)
  local layout = self:choice_layout(g, inds, choice, pkey, device, info.layer or 0)
  local names = {}
  for h = 1, g.H do names[h] = policy.PATTERNS[choice[h]] end
  self.choices[info.layer or 0] = names
  local extra = {flops = flops, choice = names, errors = errs}
  if self.exact_recall then
    extra.recall, extra.recall_seconds, extra.recall_flops, extra.mass = common.recall(layout, q, k, v, g, ctx)
  end
  return layout, extra
end

return policy
