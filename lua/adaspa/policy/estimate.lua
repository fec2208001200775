-- adaspa.policy.estimate: block selection from a cheap estimate of the block mass, with a
-- cumulative threshold, after SpargeAttn (Zhang et al., "SpargeAttn: Accurate Sparse Attention
-- Accelerating Any Model Inference", arXiv 2502.18137) and XAttention (Xu et al., "XAttention:
-- Block Sparse Attention with Antidiagonal Scoring", arXiv 2503.16428).
--
-- The estimate (SpargeAttn's first stage): q and k are mean-pooled per block (the last, partial
-- block over its own rows; keys at or past kv_valid left out, and key blocks made only of them
-- get no mass), the pooled scores q_b . k_c * scale (scale = 1/sqrt(D)) are soft-maxed per query
-- block and head, giving an estimated mass est[h, qb, kb] whose rows sum to 1. Selection, per head
-- and row: the forced blocks (text sink as rows and columns, the diagonal), then blocks by
-- descending estimated mass until the kept mass reaches `threshold` of the row (SpargeAttn's
-- TopCdf; XAttention's threshold rule on its antidiagonal scores), within min_density and
-- max_density of the row (adaspa.layout.threshold). With `similarity` = theta, SpargeAttn's
-- self-similarity gate: a block whose tokens' mean pairwise cosine similarity is below theta is
-- not well summarized by its mean, so a query block below it keeps its whole row and a key block
-- below it is kept in every row (and left out of the softmax).
--
-- Cost: pooling reads q and k once (a matmul per chunk of blocks with a block-diagonal averaging
-- matrix), the scores are H products [nqb, D] x [D, nkb] (about 1/(2 block^2) of a dense pass),
-- the softmax and the selection are per block: all on the tensors' device. The planning FLOPs
-- are reported. exact_recall (default false; recipes/compare.lua turns it on) also runs a dense
-- pass and a block-mass pass (about two dense passes) at every plan step to report the recall of
-- the selection against the exact mass; it is measurement, not part of the method: its FLOPs
-- and seconds are returned apart (recall_flops, recall_seconds; the attention context keeps
-- those seconds out of attention time).
--
-- Deviations: XAttention scores blocks by strided antidiagonal sums of q k^T inside each block
-- and SpargeAttn adds a second, in-kernel stage (skipping warps whose running maximum stays far
-- below the row's); adaspa implements the mean-pooled estimate only and runs the selected blocks
-- with its own block-sparse kernel. Both papers plan at every step; `every` re-plans less often.
local adaspa = require "adaspa"
local common = require "adaspa.policy.common"

local policy = {}
policy.__index = policy

policy.source = {
  title = "SpargeAttn: Accurate Sparse Attention Accelerating Any Model Inference",
  arxiv = "2502.18137",
  url = "https://arxiv.org/abs/2502.18137",
  also = {title = "XAttention: Block Sparse Attention with Antidiagonal Scoring", arxiv = "2503.16428",
          url = "https://arxiv.org/abs/2503.16428"},
  method = "mean-pooled q and k blocks, softmax of the pooled scores, cumulative threshold per row",
}

-- sparsity (nil by default): instead of the threshold, every row keeps max(round((1 - sparsity)
--   nkb), its forced blocks) blocks: the forced ones, then by descending estimated mass
--   (SpargeAttn's TopK rule; adaspa.layout.topk row-wise), so the zoo's policies can be compared
--   at AdaSpa's sparsities (recipe compare's sweep.sparsity). Not with threshold, min_density or
--   max_density.
policy.options = {"block", "warmup", "every", "threshold", "min_density", "max_density", "text_sink", "diagonal",
  "similarity", "exact_recall", "sparsity"}
policy.shared = {block = true, warmup = true, text_sink = true, diagonal = true}
policy.defaults = {block = 64, warmup = 10, every = 1, threshold = 0.9, min_density = 0.0, max_density = 1.0,
  text_sink = true, diagonal = true, exact_recall = false}

local CHUNK = 32 -- blocks pooled per matmul

function policy.new(opts, steps)
  local p, bad = common.configure("estimate", policy, opts)
  common.check_shared(p, bad, steps)
  if p.sparsity ~= nil then
    if type(p.sparsity) ~= "number" or not (p.sparsity >= 0 and p.sparsity < 1) then bad("sparsity", "must be in [0, 1)") end
    for _, k in ipairs({"threshold", "min_density", "max_density"}) do
      if opts[k] ~= nil then bad("sparsity", "sets the row's block count itself: drop " .. k) end
    end
  end
  if type(p.threshold) ~= "number" or not (p.threshold > 0 and p.threshold <= 1) then bad("threshold", "must be in (0, 1]") end
  if type(p.min_density) ~= "number" or not (p.min_density >= 0 and p.min_density <= 1) then
    bad("min_density", "must be in [0, 1]")
  end
  if type(p.max_density) ~= "number" or not (p.max_density > 0 and p.max_density <= 1) then
    bad("max_density", "must be in (0, 1]")
  end
  if p.max_density < p.min_density then bad("max_density", "must be >= min_density (" .. p.min_density .. ")") end
  if p.similarity ~= nil and (type(p.similarity) ~= "number" or not (p.similarity >= -1 and p.similarity <= 1)) then
    bad("similarity", "must be a cosine similarity in [-1, 1], or nil (no self-similarity gate)")
  end
  return p
end

function policy:describe()
  return string.format("estimate (SpargeAttn arXiv 2502.18137 / XAttention arXiv 2503.16428): mean-pooled block "
    .. "estimate, %s%s, every %d step%s after a dense warm-up of %d, block %d%s%s%s",
    self.sparsity and string.format("top %.3g of each row (sparsity %.3g)", 1 - self.sparsity, self.sparsity)
      or string.format("threshold %.3g (density %.3g..%.3g)", self.threshold, self.min_density, self.max_density),
    self.similarity and string.format(", self-similarity gate %.3g", self.similarity) or "",
    self.every, self.every == 1 and "" or "s", self.warmup, self.block, self.text_sink and ", text sink" or "",
    self.diagonal and ", diagonal" or "", self.exact_recall and ", exact recall measured" or "")
end

function policy:mode(step) return common.mode(self, step) end

-- The block-diagonal averaging matrix [nbc, rows] (f32, on the CPU) of nbc blocks of `block`
-- rows, the last one over the rows left.
local function averaging(nbc, rows, block)
  local avg = adaspa.zeros({nbc, rows})
  for i = 1, nbc do
    local a = (i - 1) * block
    local n = math.min(block, rows - a)
    avg:narrow(1, i, 1):narrow(2, a + 1, n):fill(1 / n)
  end
  return avg
end

-- The averaging matrices [CHUNK, CHUNK * block] of full chunks, by block, device, dtype and
-- chunk size: built and uploaded once (pool runs at every plan step), kept for the process.
local full_avgs = {}

local function full_averaging(block, dev)
  local key = table.concat({block, dev, "f32", CHUNK}, ":")
  local avg = full_avgs[key]
  if not avg then
    avg = averaging(CHUNK, CHUNK * block, block)
    if dev ~= "cpu" then
      local d = avg:to(dev)
      avg:free()
      avg = d
    end
    full_avgs[key] = avg
  end
  return avg
end

-- The mean over each block of `len` rows of x [n, H, D] (its first len rows): f32 [nb, H, D]
-- with nb = ceil(len / block), on x's device; the last block is averaged over its own rows.
-- Returns the tensor and the FLOPs spent.
function policy.pool(x, len, block)
  local _, H, D = unpack(x:shape())
  local nb = math.ceil(len / block)
  local dev = x:device()
  local out = adaspa.empty({nb, H * D}, {device = dev})
  local flops = 0
  local b0 = 1
  while b0 <= nb do
    local nbc = math.min(CHUNK, nb - b0 + 1)
    local r0 = (b0 - 1) * block
    local rows = math.min(nbc * block, len - r0)
    local avg, shared = nil, rows == CHUNK * block
    if shared then
      avg = full_averaging(block, dev)
    else -- the partial tail chunk
      avg = averaging(nbc, rows, block)
      if dev ~= "cpu" then
        local d = avg:to(dev)
        avg:free()
        avg = d
      end
    end
    adaspa.matmul(avg, x:narrow(1, r0 + 1, rows):reshape({rows, H * D}), {out = out:narrow(1, b0, nbc)})
    flops = flops + 2 * nbc * rows * H * D
    if not shared then avg:free() end
    b0 = b0 + nbc
  end
  return out:reshape({nb, H, D}), flops
end

-- Per block and head, the mean pairwise cosine similarity of the block's rows of x (first len
-- rows): sim[(b - 1) * H + h] as a Lua list, and the FLOPs spent.
function policy.self_similarity(x, len, block)
  local _, H, D = unpack(x:shape())
  local u = adaspa.rmsnorm(x:narrow(1, 1, len), nil, 1e-12)       -- rows of norm sqrt(D)
  local m, flops = policy.pool(u, len, block)
  u:free()
  local nb = m:shape()[1]
  local sq = adaspa.mul(m, m):reshape({nb * H, D})
  local ones = adaspa.full({D, 1}, 1 / D, {device = sq:device()})
  local s = adaspa.matmul(sq, ones):to("cpu"):reshape({nb * H}):totable()
  m:free(); sq:free(); ones:free()
  return s, flops + 3 * len * H * D + 3 * nb * H * D
end

-- The estimated block mass of a layer: est [H, nqb, nkb] f32 on q's device (rows sum to 1 over
-- the key blocks holding valid keys, 0 elsewhere), the FLOPs spent, and with a similarity gate
-- the lists of query blocks and key blocks (1-based) that failed it.
function policy:estimate(q, k, g)
  local B, H, D = g.block, g.H, g.D
  local nkbv = math.ceil(g.kv_valid / B)
  local pq, fq = policy.pool(q, g.S, B)
  local pk, fk = policy.pool(k, g.kv_valid, B)
  local flops = fq + fk
  local dev = q:device()
  local rows_bad, cols_bad
  local bias
  if self.similarity then
    local sq, f1 = policy.self_similarity(q, g.S, B)
    local sk, f2 = policy.self_similarity(k, g.kv_valid, B)
    flops = flops + f1 + f2
    rows_bad, cols_bad = {}, {}
    local seen_r, seen_c = {}, {}
    local b = {}
    for kb = 1, nkbv do b[kb] = 0 end
    for i, s in ipairs(sq) do
      local qb = math.floor((i - 1) / H) + 1
      if s < self.similarity and not seen_r[qb] then seen_r[qb] = true; rows_bad[#rows_bad + 1] = qb end
    end
    for i, s in ipairs(sk) do
      local kb = math.floor((i - 1) / H) + 1
      if s < self.similarity and not seen_c[kb] then seen_c[kb] = true; cols_bad[#cols_bad + 1] = kb; b[kb] = -math.huge end
    end
    if #cols_bad > 0 and #cols_bad < nkbv then bias = adaspa.tensor(b, {device = dev}) end
  end
  local scores = adaspa.empty({H, g.nqb, nkbv}, {device = dev})
  for h = 1, H do
    local qh = pq:narrow(2, h, 1):reshape({g.nqb, D})
    local kh = pk:narrow(2, h, 1):reshape({nkbv, D}):transpose(1, 2)
    local sh = scores:narrow(1, h, 1):reshape({g.nqb, nkbv})
    adaspa.matmul(qh, kh, {out = sh})
    if bias then adaspa.add(sh, bias, {out = sh}) end
  end
  flops = flops + 2 * H * g.nqb * nkbv * D
  adaspa.softmax(scores, {scale = 1 / math.sqrt(D), out = scores})
  flops = flops + 5 * H * g.nqb * nkbv
  pq:free(); pk:free()
  if bias then bias:free() end
  local est = scores
  if nkbv < g.nkb then
    est = adaspa.zeros({H, g.nqb, g.nkb}, {device = dev})
    est:narrow(3, 1, nkbv):copy(scores)
    scores:free()
  end
  return est, flops, rows_bad, cols_bad
end

-- The forced blocks of a layer (text sink, diagonal, blocks failing the similarity gate).
function policy:force(g, rows_bad, cols_bad)
  local f = {diagonal = self.diagonal, rows = {}, cols = {}}
  if self.text_sink and g.text_first then
    f.cols[#f.cols + 1] = {g.text_first, g.nkb}
    f.rows[#f.rows + 1] = {g.text_first, g.nqb}
  end
  for _, qb in ipairs(rows_bad or {}) do f.rows[#f.rows + 1] = {qb, qb} end
  for _, kb in ipairs(cols_bad or {}) do f.cols[#f.cols + 1] = {kb, kb} end
  return f
end

function policy:plan(q, k, v, info, ctx)
  local g = common.geometry(q, k, info, self.block)
  local est, flops, rows_bad, cols_bad = self:estimate(q, k, g)
  local layout
  if self.sparsity then
    layout = adaspa.layout.topk(est, {density = 1 - self.sparsity, row_wise = true, force = self:force(g, rows_bad, cols_bad),
      block = g.block})
  else
    local min_blocks = math.max(1, math.floor(self.min_density * g.nkb + 0.5))
    local max_blocks = self.max_density >= 1 and 0 or math.max(min_blocks, math.floor(self.max_density * g.nkb + 0.5))
    layout = adaspa.layout.threshold(est, {recall = self.threshold, min_blocks = min_blocks, max_blocks = max_blocks,
      force = self:force(g, rows_bad, cols_bad), block = g.block})
  end
  -- estimated_recall: the share of the estimated mass kept (what the estimate believes it kept)
  local extra = {flops = flops, estimated_recall = layout:recall(est),
                 gated = rows_bad and {rows = #rows_bad, cols = #cols_bad} or nil}
  if self.exact_recall then
    extra.recall, extra.recall_seconds, extra.recall_flops, extra.mass = common.recall(layout, q, k, v, g, ctx)
  end
  if ctx and ctx.capture and not extra.mass then extra.mass = est:device() ~= "cpu" and est:to("cpu") or est end
  if extra.mass ~= est then est:free() end
  return layout, extra
end

return policy
