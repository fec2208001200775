-- Neural-network ops (linear, matmul, norms, softmax, elementwise, rope3d, patchify, timestep embedding,
-- concat/split) against float64 references written plainly in Lua, plus their error paths.

local NaN = 0 / 0

local flat, rel_l2 = spec_flat, spec_rel_l2

-- Asserts that tensor t matches the reference list within a relative L2 error tol.
local function check(t, ref, tol, what)
  local e = rel_l2(flat(t), ref)
  assert(e < (tol or 1e-5), string.format("%s: relative L2 error %.3g (tolerance %.1g)", what or "result", e, tol or 1e-5))
end

local function poisoned(shape, dtype) return adaspa.full(shape, NaN, {dtype = dtype}) end

local function sizes_str(...) return table.concat({...}, "x") end

-- ---- references ---------------------------------------------------------------------------------

local function gemm_ref(A, B, m, k, n, bias) -- A [m, k], B [k, n] as flat lists
  local C = {}
  for i = 0, m - 1 do
    for j = 0, n - 1 do
      local s = bias and bias[j + 1] or 0
      for p = 0, k - 1 do s = s + A[i * k + p + 1] * B[p * n + j + 1] end
      C[i * n + j + 1] = s
    end
  end
  return C
end

local function transpose_list(W, r, c) -- W [r, c] -> [c, r]
  local T = {}
  for i = 0, r - 1 do for j = 0, c - 1 do T[j * r + i + 1] = W[i * c + j + 1] end end
  return T
end

local function linear_ref(x, w, b)
  local k = w:shape()[2]
  local o = w:shape()[1]
  local X = flat(x)
  return gemm_ref(X, transpose_list(flat(w), o, k), #X / k, k, o, b and flat(b))
end

local function norm_ref(x, eps, w, b, rms)
  local X = flat(x)
  local shape = x:shape()
  local c = shape[#shape]
  local W, B = w and flat(w), b and flat(b)
  local out = {}
  for r = 0, #X / c - 1 do
    local mean, var = 0, 0
    if not rms then
      for j = 1, c do mean = mean + X[r * c + j] end
      mean = mean / c
    end
    for j = 1, c do var = var + (X[r * c + j] - mean) ^ 2 end
    local inv = 1 / math.sqrt(var / c + eps)
    for j = 1, c do
      local v = (X[r * c + j] - mean) * inv
      if W then v = v * W[j] end
      if B then v = v + B[j] end
      out[r * c + j] = v
    end
  end
  return out
end

-- f(x_i, operand values at i...) over x [.., C] with operands [C] (broadcast) or like x.
local function rowwise_ref(x, operands, f)
  local X = flat(x)
  local shape = x:shape()
  local c = shape[#shape]
  local ops = {}
  for i, t in ipairs(operands) do ops[i] = {flat(t), t:numel() == c} end
  local out = {}
  for i = 1, #X do
    local args = {}
    for j, o in ipairs(ops) do args[j] = o[2] and o[1][(i - 1) % c + 1] or o[1][i] end
    out[i] = f(X[i], unpack(args))
  end
  return out
end

local function silu_ref(v) return v / (1 + math.exp(-v)) end
local function gelu_ref(v)
  local u = math.sqrt(2 / math.pi) * (v + 0.044715 * v ^ 3)
  local th = 1 - 2 / (math.exp(2 * u) + 1) -- tanh
  return 0.5 * v * (1 + th)
end

-- erf and erfc in float64: the Maclaurin series of erf below 3 (about 1e-13 after cancellation),
-- erfc's continued fraction (evaluated from its tail, 80 terms) above, so erfc keeps its relative
-- accuracy far into the tail
local function erfc_pos(a) -- a >= 3
  local f = a
  for k = 80, 1, -1 do f = a + (k / 2) / f end
  return math.exp(-a * a) / math.sqrt(math.pi) / f
end
local function erf_ref(v)
  local a = math.abs(v)
  local r
  if a < 3 then
    local term, sum, n = a, a, 0
    repeat
      n = n + 1
      term = -term * a * a / n
      sum = sum + term / (2 * n + 1)
    until math.abs(term / (2 * n + 1)) <= 1e-17 * math.abs(sum)
    r = 2 / math.sqrt(math.pi) * sum
  else
    r = 1 - erfc_pos(a)
  end
  return v < 0 and -r or r
end
local function erfc_ref(z)
  if z >= 3 then return erfc_pos(z) end
  if z <= -3 then return 2 - erfc_pos(-z) end
  return 1 - erf_ref(z)
end
-- GELU(v) = 0.5 v (1 + erf(v / sqrt 2)) = 0.5 v erfc(-v / sqrt 2)
local function gelu_erf_ref(v) return 0.5 * v * erfc_ref(-v / math.sqrt(2)) end

-- X: x's values as a flat list (default flat(x)), e.g. a float64 reference's output
local function rope_ref(x, grid, axes, theta, n_tokens, X)
  X = X or flat(x)
  local s, h, d = unpack(x:shape())
  local out = {}
  for i = 0, s - 1 do
    local pos = {math.floor(i / (grid[2] * grid[3])), math.floor(i / grid[3]) % grid[2], i % grid[3]}
    for hh = 0, h - 1 do
      local base = (i * h + hh) * d
      if i >= n_tokens then
        for e = 1, d do out[base + e] = X[base + e] end
      else
        local j = 0
        for a = 1, 3 do
          for k = 0, axes[a] / 2 - 1 do
            local ang = pos[a] * theta ^ (-2 * k / axes[a])
            local x0, x1 = X[base + 2 * j + 1], X[base + 2 * j + 2]
            out[base + 2 * j + 1] = x0 * math.cos(ang) - x1 * math.sin(ang)
            out[base + 2 * j + 2] = x0 * math.sin(ang) + x1 * math.cos(ang)
            j = j + 1
          end
        end
      end
    end
  end
  return out
end

local function patchify_ref(x)
  local X = flat(x)
  local c, t, h, w = unpack(x:shape())
  local out = {}
  for ti = 0, t - 1 do
    for i = 0, h / 2 - 1 do
      for j = 0, w / 2 - 1 do
        for ci = 0, c - 1 do
          for kh = 0, 1 do
            for kw = 0, 1 do
              out[#out + 1] = X[((ci * t + ti) * h + 2 * i + kh) * w + 2 * j + kw + 1]
            end
          end
        end
      end
    end
  end
  return out
end

local function temb_ref(ts, dim, max_period)
  local half = dim / 2
  local out = {}
  for _, t in ipairs(ts) do
    for k = 0, half - 1 do out[#out + 1] = math.cos(t * math.exp(-math.log(max_period) * k / half)) end
    for k = 0, half - 1 do out[#out + 1] = math.sin(t * math.exp(-math.log(max_period) * k / half)) end
  end
  return out
end

-- ---- GEMM ------------------------------------------------------------------------------------------

describe("linear", function()
  it("matches a float64 reference for odd sizes, with and without bias", function()
    local seed = 100
    for _, n in ipairs({1, 7, 65}) do
      for _, k in ipairs({1, 13, 64}) do
        for _, o in ipairs({1, 5, 33}) do
          seed = seed + 3
          local x = adaspa.randn({n, k}, {seed = seed})
          local w = adaspa.randn({o, k}, {seed = seed + 1})
          local b = adaspa.randn({o}, {seed = seed + 2})
          check(adaspa.linear(x, w, nil, {out = poisoned({n, o})}), linear_ref(x, w), 1e-5, sizes_str(n, k, o))
          check(adaspa.linear(x, w, b, {out = poisoned({n, o})}), linear_ref(x, w, b), 1e-5, sizes_str(n, k, o) .. "+b")
        end
      end
    end
  end)

  it("reads strided and transposed views of x, w and b", function()
    local k, o = 21, 17
    local ws = {
      adaspa.randn({o, k}, {seed = 3}),
      adaspa.randn({k, o}, {seed = 4}):transpose(1, 2),
      adaspa.randn({2 * o, k}, {seed = 5}):narrow(1, 2, o),
    }
    local b = adaspa.randn({2 * o}, {seed = 6}):reshape({o, 2}):narrow(2, 2, 1):reshape({o})
    for _, n in ipairs({3, 9}) do -- fewer rows than a register tile, and more
      local xs = {
        adaspa.randn({n, k + 5}, {seed = n}):narrow(2, 3, k),
        adaspa.randn({k, n}, {seed = n + 1}):transpose(1, 2),
      }
      for i, x in ipairs(xs) do
        for j, w in ipairs(ws) do
          check(adaspa.linear(x, w, b, {out = poisoned({n, o})}), linear_ref(x, w, b), 1e-5, n .. " rows, view " .. i .. "/" .. j)
        end
      end
    end
  end)

  it("flattens the leading dimensions of x", function()
    local w, b = adaspa.randn({6, 10}, {seed = 7}), adaspa.randn({6}, {seed = 8})
    local x = adaspa.randn({2, 3, 10}, {seed = 9})
    local y = adaspa.linear(x, w, b)
    assert.same({2, 3, 6}, y:shape())
    check(y, linear_ref(x, w, b))
    local xp = adaspa.randn({3, 10, 2}, {seed = 10}):permute({3, 1, 2}) -- not viewable as [6, 10]
    check(adaspa.linear(xp, w, b, {out = poisoned({2, 3, 6})}), linear_ref(xp, w, b), 1e-5, "permuted")
    local v = adaspa.randn({10}, {seed = 11})
    local yv = adaspa.linear(v, w)
    assert.same({6}, yv:shape())
    check(yv, linear_ref(v, w))
  end)

  it("takes bf16 and f16 inputs; the output dtype follows x or out", function()
    local x = adaspa.randn({13, 40}, {seed = 12, dtype = "bf16"})
    local w = adaspa.randn({11, 40}, {seed = 13, dtype = "bf16"})
    local b = adaspa.randn({11}, {seed = 14, dtype = "bf16"})
    local ref = linear_ref(x, w, b) -- from the bf16 values: exact inputs
    local y = adaspa.linear(x, w, b)
    assert.equal("bf16", y:dtype())
    check(y, ref, 1e-2, "bf16 out")
    check(adaspa.linear(x, w, b, {out = poisoned({13, 11})}), ref, 1e-5, "f32 out")
    local xh = x:to("f16")
    check(adaspa.linear(xh, w:to("f32"), nil, {out = poisoned({13, 11}, "f16")}), linear_ref(xh, w), 2e-3, "f16")
  end)

  it("is exact past the cache blocks (300x517 by 260) and independent of the thread count", function()
    local m, k, o = 300, 517, 260
    local x = adaspa.randn({m, k}, {seed = 15})
    local w = adaspa.randn({o, k}, {seed = 16})
    local b = adaspa.randn({o}, {seed = 17})
    local saved = adaspa.threads()
    adaspa.threads(1)
    local y1 = adaspa.linear(x, w, b, {out = poisoned({m, o})})
    adaspa.threads(2)
    local y2 = adaspa.linear(x, w, b, {out = poisoned({m, o})})
    adaspa.threads(saved)
    assert.equal(0, spec_maxdiff(y1, y2))
    local X, W, B, Y = flat(x), flat(w), flat(b), flat(y2)
    local num, den = 0, 0
    for s = 0, 399 do -- sampled outputs, every row and column block included
      local i, j = (s * 37) % m, (s * 101 + math.floor(s / 7)) % o
      if s < 4 then i, j = (s % 2) * (m - 1), math.floor(s / 2) * (o - 1) end
      local r = B[j + 1]
      for p = 0, k - 1 do r = r + X[i * k + p + 1] * W[j * k + p + 1] end
      num, den = num + (Y[i * o + j + 1] - r) ^ 2, den + r * r
    end
    assert.is_true(math.sqrt(num / den) < 1e-6, "relative error " .. math.sqrt(num / den))
  end)

  it("handles more output columns than a column block (4100)", function()
    local x, w = adaspa.randn({3, 20}, {seed = 18}), adaspa.randn({4100, 20}, {seed = 19})
    local b = adaspa.randn({4100}, {seed = 20})
    check(adaspa.linear(x, w, b, {out = poisoned({3, 4100})}), linear_ref(x, w, b))
  end)
end)

describe("linear options act and accumulate", function()
  -- x [37, 19] a narrow of wider rows (strided), w [23, 19], b [23]: odd sizes everywhere
  local function inputs(seed, dt)
    local x = adaspa.randn({37, 25}, {seed = seed, dtype = dt}):narrow(2, 4, 19)
    local w = adaspa.randn({23, 19}, {seed = seed + 1, dtype = dt})
    local b = adaspa.randn({23}, {seed = seed + 2, dtype = dt})
    assert.is_false(x:is_contiguous())
    return x, w, b
  end
  local function map(list, f)
    local r = {}
    for i, v in ipairs(list) do r[i] = f(v) end
    return r
  end
  local function plus(a, c)
    local r = {}
    for i = 1, #a do r[i] = a[i] + c[i] end
    return r
  end

  it("act = gelu_tanh gives gelu_tanh(x w^T + b) on the f32 result, f32 and bf16 out", function()
    for _, bias in ipairs({false, true}) do
      local x, w, b = inputs(300, "f32")
      b = bias and b or nil
      local what = bias and "with bias" or "without bias"
      local ref = map(linear_ref(x, w, b), gelu_ref)
      local y = adaspa.linear(x, w, b, {out = poisoned({37, 23}), act = "gelu_tanh"})
      check(y, ref, 1e-5, "f32 " .. what)
      -- the unfused pair computes the same f32 values
      local plain = adaspa.linear(x, w, b)
      assert.equal(0, spec_maxdiff(y, adaspa.gelu_tanh(plain)), what)
      -- not the plain linear: the activation was applied
      assert.is_true(spec_maxdiff(y, plain) > 0.1, what)
      -- bf16 out: one rounding of the f32 result
      local yb = adaspa.linear(x, w, b, {out = poisoned({37, 23}, "bf16"), act = "gelu_tanh"})
      check(yb, ref, 4e-3, "bf16 out " .. what)
      -- without out: a new tensor of x's dtype
      check(adaspa.linear(x, w, b, {act = "gelu_tanh"}), ref, 1e-5, "new out " .. what)
    end
  end)

  it("act = gelu_tanh with bf16 inputs and a 3-D x matches linear then gelu_tanh", function()
    local x, w, b = inputs(310, "bf16")
    local ref = map(linear_ref(x, w, b), gelu_ref) -- from the bf16 values: exact inputs
    local y = adaspa.linear(x, w, b, {act = "gelu_tanh"})
    assert.equal("bf16", y:dtype())
    check(y, ref, 4e-3, "bf16")
    -- unfused: two roundings to bf16 instead of one, so near, not equal
    check(adaspa.gelu_tanh(adaspa.linear(x, w, b)), ref, 1e-2, "unfused bf16")
    local x3 = adaspa.randn({2, 5, 19}, {seed = 313})
    local y3 = adaspa.linear(x3, w:to("f32"), nil, {act = "gelu_tanh"})
    assert.same({2, 5, 23}, y3:shape())
    check(y3, map(linear_ref(x3, w), gelu_ref), 1e-5, "3-D x")
  end)

  it("accumulate = true adds x w^T (+ b) onto out's previous values, f32 and bf16 out", function()
    for _, bias in ipairs({false, true}) do
      local x, w, b = inputs(320, "f32")
      b = bias and b or nil
      local what = bias and "with bias" or "without bias"
      local old = adaspa.randn({37, 23}, {seed = 330})
      local ref = plus(flat(old), linear_ref(x, w, b))
      local out = old:clone()
      local got = adaspa.linear(x, w, b, {out = out, accumulate = true})
      assert.is_true(rawequal(got, out))
      check(out, ref, 1e-5, "f32 " .. what)
      -- the unfused pair computes the same f32 values
      assert.equal(0, spec_maxdiff(out, adaspa.add(old, adaspa.linear(x, w, b))), what)
      -- accumulate = false is the plain op: out's values are replaced
      check(adaspa.linear(x, w, b, {out = old:clone(), accumulate = false}), linear_ref(x, w, b), 1e-5, "false " .. what)
      -- bf16 out: its bf16 values are read, the sum is rounded once
      local oldb = adaspa.randn({37, 23}, {seed = 331, dtype = "bf16"})
      local outb = oldb:clone()
      adaspa.linear(x, w, b, {out = outb, accumulate = true})
      check(outb, plus(flat(oldb), linear_ref(x, w, b)), 4e-3, "bf16 out " .. what)
    end
  end)

  it("accumulate = true with bf16 inputs and a 3-D out adds onto it", function()
    local x, w, b = inputs(340, "bf16")
    local old = adaspa.randn({37, 23}, {seed = 343, dtype = "bf16"})
    local out = old:clone()
    adaspa.linear(x, w, b, {out = out, accumulate = true})
    check(out, plus(flat(old), linear_ref(x, w, b)), 4e-3, "bf16")
    local x3 = adaspa.randn({2, 5, 19}, {seed = 344})
    local old3 = adaspa.randn({2, 5, 23}, {seed = 345})
    local out3 = old3:clone()
    adaspa.linear(x3, w:to("f32"), nil, {out = out3, accumulate = true})
    check(out3, plus(flat(old3), linear_ref(x3, w)), 1e-5, "3-D")
  end)

  it("names the option and the value when one is wrong", function()
    local x, w, b = inputs(350, "f32")
    local out = adaspa.randn({37, 23}, {seed = 353})
    spec_error(function() adaspa.linear(x, w, b, {activation = "gelu_tanh"}) end,
      "adaspa.linear", "unknown option 'activation'", "known: out, act, accumulate")
    spec_error(function() adaspa.linear(x, w, b, {act = 1}) end,
      "adaspa.linear: option act must be a string", "gelu_tanh", "got number")
    spec_error(function() adaspa.linear(x, w, b, {act = "relu"}) end,
      "adaspa.linear: option act must be \"gelu_tanh\"", "got \"relu\"")
    spec_error(function() adaspa.linear(x, w, b, {out = out, accumulate = 1}) end,
      "adaspa.linear: option accumulate must be a boolean, got number")
    spec_error(function() adaspa.linear(x, w, b, {accumulate = true}) end,
      "adaspa.linear: option accumulate = true needs option out", "the tensor to add onto")
    spec_error(function() adaspa.linear(x, w, b, {out = out, act = "gelu_tanh", accumulate = true}) end,
      "adaspa.linear: option act = \"gelu_tanh\" cannot be combined with accumulate = true")
    -- nothing was written by the failed calls
    assert.equal(0, spec_maxdiff(out, adaspa.randn({37, 23}, {seed = 353})))
  end)
end)

describe("matmul", function()
  it("matches a float64 reference, with b possibly transposed", function()
    local seed = 200
    for _, s in ipairs({{1, 1, 1}, {7, 13, 5}, {65, 64, 33}, {2, 300, 19}}) do
      local m, k, n = unpack(s)
      seed = seed + 3
      local a = adaspa.randn({m, k}, {seed = seed})
      for _, b in ipairs({adaspa.randn({k, n}, {seed = seed + 1}), adaspa.randn({n, k}, {seed = seed + 2}):transpose(1, 2)}) do
        check(adaspa.matmul(a, b, {out = poisoned({m, n})}), gemm_ref(flat(a), flat(b), m, k, n), 1e-5, sizes_str(m, k, n))
      end
    end
  end)

  it("takes strided and bf16 operands", function()
    local a = adaspa.randn({9, 30}, {seed = 210}):narrow(2, 4, 20)
    local b = adaspa.randn({20, 7}, {seed = 211, dtype = "bf16"})
    local ref = gemm_ref(flat(a), flat(b), 9, 20, 7)
    check(adaspa.matmul(a, b), ref)
    check(adaspa.matmul(b:transpose(1, 2), a:transpose(1, 2), {out = poisoned({7, 9})}), transpose_list(ref, 9, 7))
  end)
end)

-- ---- normalization ------------------------------------------------------------------------------------

describe("layernorm and rmsnorm", function()
  it("layernorm matches the reference with and without weight and bias", function()
    local seed = 300
    for _, c in ipairs({1, 7, 64, 301}) do
      seed = seed + 3
      local x = adaspa.randn({5, c}, {seed = seed})
      local w, b = adaspa.randn({c}, {seed = seed + 1}), adaspa.randn({c}, {seed = seed + 2})
      check(adaspa.layernorm(x, 1e-6, nil, nil, {out = poisoned({5, c})}), norm_ref(x, 1e-6), 1e-5, "plain " .. c)
      check(adaspa.layernorm(x, 1e-3, w, nil, {out = poisoned({5, c})}), norm_ref(x, 1e-3, w), 1e-5, "weight " .. c)
      check(adaspa.layernorm(x, 1e-5, w, b, {out = poisoned({5, c})}), norm_ref(x, 1e-5, w, b), 1e-5, "affine " .. c)
    end
    check(adaspa.layernorm(adaspa.randn({4, 9}, {seed = 310})), norm_ref(adaspa.randn({4, 9}, {seed = 310}), 1e-6), 1e-5, "default eps")
  end)

  it("layernorm is accurate for rows with a large mean, strided, 3-D and bf16 inputs", function()
    local x = adaspa.add(adaspa.randn({3, 200}, {seed = 320}), adaspa.full({200}, 300))
    check(adaspa.layernorm(x, 1e-6), norm_ref(x, 1e-6), 1e-4, "mean 300")
    local xt = adaspa.randn({33, 4}, {seed = 321}):transpose(1, 2)
    check(adaspa.layernorm(xt, 1e-6, nil, nil, {out = poisoned({4, 33})}), norm_ref(xt, 1e-6), 1e-5, "transposed")
    local x3 = adaspa.randn({2, 3, 17}, {seed = 322, dtype = "bf16"})
    local w = adaspa.randn({17}, {seed = 323, dtype = "bf16"})
    local y = adaspa.layernorm(x3, 1e-6, w)
    assert.equal("bf16", y:dtype())
    check(y, norm_ref(x3, 1e-6, w), 1e-2, "bf16")
    check(adaspa.layernorm(x3, 1e-6, w, nil, {out = poisoned({2, 3, 17})}), norm_ref(x3, 1e-6, w), 1e-5, "bf16 in, f32 out")
  end)

  it("rmsnorm matches the reference; weight may be nil; in place", function()
    local seed = 330
    for _, c in ipairs({1, 8, 129}) do
      seed = seed + 2
      local x = adaspa.randn({6, c}, {seed = seed})
      local w = adaspa.randn({c}, {seed = seed + 1})
      check(adaspa.rmsnorm(x, w, 1e-6, {out = poisoned({6, c})}), norm_ref(x, 1e-6, w, nil, true), 1e-5, "weight " .. c)
      check(adaspa.rmsnorm(x, nil, 1e-2, {out = poisoned({6, c})}), norm_ref(x, 1e-2, nil, nil, true), 1e-5, "plain " .. c)
    end
    local x = adaspa.randn({2, 5, 24}, {seed = 340})
    local ref = norm_ref(x, 1e-6, nil, nil, true)
    assert.equal(x, adaspa.rmsnorm(x, nil, nil, {out = x}))
    check(x, ref, 1e-5, "in place")
  end)
end)

-- ---- softmax ------------------------------------------------------------------------------------------

-- Softmax of scale * x over the last dimension in double: -inf entries give 0, a row of -inf zeros.
local function softmax_ref(x, scale)
  local X = flat(x)
  local shape = x:shape()
  local c = shape[#shape]
  local out = {}
  for r = 0, #X / c - 1 do
    local m = -math.huge
    for j = 1, c do m = math.max(m, scale * X[r * c + j]) end
    local sum = 0
    for j = 1, c do
      local e = m == -math.huge and 0 or math.exp(scale * X[r * c + j] - m)
      out[r * c + j] = e
      sum = sum + e
    end
    for j = 1, c do out[r * c + j] = sum > 0 and out[r * c + j] / sum or 0 end
  end
  return out
end

describe("softmax", function()
  it("matches the float64 reference at odd widths and scales; rows sum to 1", function()
    local seed = 360
    for _, c in ipairs({1, 7, 33, 301, 1861}) do
      seed = seed + 1
      local x = adaspa.scale(adaspa.randn({5, c}, {seed = seed}), 4)
      for _, sc in ipairs({1, 0.088, 3.5}) do
        local y = adaspa.softmax(x, {scale = sc, out = poisoned({5, c})})
        check(y, softmax_ref(x, sc), 1e-5, string.format("width %d scale %g", c, sc))
        local Y = flat(y)
        for r = 0, 4 do
          local sum = 0
          for j = 1, c do sum = sum + Y[r * c + j] end
          assert(math.abs(sum - 1) < 1e-5, string.format("width %d row %d sums to %.8f", c, r + 1, sum))
        end
      end
    end
    local x = adaspa.randn({3, 9}, {seed = 370})
    check(adaspa.softmax(x), softmax_ref(x, 1), 1e-5, "default scale 1")
  end)

  it("is stable for large values; -inf entries give 0 and a row of -inf gives zeros", function()
    local inf = math.huge
    local x = adaspa.tensor({{1000, 999, -1000, 1001}, {-inf, 2, -inf, 0}, {-inf, -inf, -inf, -inf}})
    local y = adaspa.softmax(x, {out = poisoned({3, 4})})
    check(y, softmax_ref(x, 1), 1e-6, "large and -inf")
    local Y = flat(y)
    assert.equal(0, Y[5])
    assert.equal(0, Y[7])
    for j = 9, 12 do assert.equal(0, Y[j]) end
    assert.is_true(Y[4] > Y[1] and Y[1] > Y[2])
    local n = flat(adaspa.softmax(adaspa.tensor({{1, NaN, 2}, {1, 2, 3}})))
    for j = 1, 3 do assert.is_true(n[j] ~= n[j], "a NaN makes its row NaN") end
    check(adaspa.tensor({n[4], n[5], n[6]}), softmax_ref(adaspa.tensor({{1, 2, 3}}), 1), 1e-6, "the other row")
  end)

  it("reads strided, 3-D and bf16 inputs, writes bf16 or f32, and runs in place", function()
    local xt = adaspa.randn({37, 6}, {seed = 371}):transpose(1, 2)
    check(adaspa.softmax(xt, {scale = 2, out = poisoned({6, 37})}), softmax_ref(xt, 2), 1e-5, "transposed")
    local x3 = adaspa.randn({2, 3, 45}, {seed = 372, dtype = "bf16"})
    local y = adaspa.softmax(x3, {scale = 0.5})
    assert.equal("bf16", y:dtype())
    check(y, softmax_ref(x3, 0.5), 1e-2, "bf16")
    check(adaspa.softmax(x3, {scale = 0.5, out = poisoned({2, 3, 45})}), softmax_ref(x3, 0.5), 1e-5, "bf16 in, f32 out")
    local x = adaspa.randn({4, 29}, {seed = 373})
    local ref = softmax_ref(x, 1.5)
    assert.equal(x, adaspa.softmax(x, {scale = 1.5, out = x}))
    check(x, ref, 1e-5, "in place")
  end)
end)

-- ---- elementwise --------------------------------------------------------------------------------------

describe("elementwise ops", function()
  local function modulate_ref(v, sh, sc) return v * (1 + sc) + sh end
  local function gated_ref(v, g, y) return v + g * y end

  it("modulate and gated_add broadcast [C] and [1, C] operands or take x's shape", function()
    local x = adaspa.randn({4, 7}, {seed = 400})
    local v7, m47 = adaspa.randn({7}, {seed = 401}), adaspa.randn({4, 7}, {seed = 402})
    local r17 = adaspa.randn({1, 7}, {seed = 403})
    check(adaspa.modulate(x, v7, m47, {out = poisoned({4, 7})}), rowwise_ref(x, {v7, m47}, modulate_ref))
    check(adaspa.modulate(x, m47, r17, {out = poisoned({4, 7})}), rowwise_ref(x, {m47, r17}, modulate_ref))
    check(adaspa.gated_add(x, r17, m47, {out = poisoned({4, 7})}), rowwise_ref(x, {r17, m47}, gated_ref))
    check(adaspa.gated_add(x, m47, v7, {out = poisoned({4, 7})}), rowwise_ref(x, {m47, v7}, gated_ref))
    local x3 = adaspa.randn({2, 3, 5}, {seed = 404})
    local s3, g5 = adaspa.randn({2, 3, 5}, {seed = 405}), adaspa.randn({5}, {seed = 406})
    check(adaspa.modulate(x3, g5, s3), rowwise_ref(x3, {g5, s3}, modulate_ref), 1e-5, "3-D")
  end)

  it("take strided and bf16 inputs", function()
    local x = adaspa.randn({6, 20}, {seed = 410}):narrow(2, 5, 9)
    local sh = adaspa.randn({9, 6}, {seed = 411}):transpose(1, 2)
    local sc = adaspa.randn({18}, {seed = 412, dtype = "bf16"}):narrow(1, 4, 9)
    check(adaspa.modulate(x, sh, sc, {out = poisoned({6, 9})}), rowwise_ref(x, {sh, sc}, modulate_ref))
    local xb = adaspa.randn({3, 33}, {seed = 413, dtype = "bf16"})
    local g = adaspa.randn({66}, {seed = 414, dtype = "bf16"}):narrow(1, 34, 33)
    local y = adaspa.gated_add(xb, g, xb)
    assert.equal("bf16", y:dtype())
    check(y, rowwise_ref(xb, {g, xb}, gated_ref), 1e-2, "bf16")
  end)

  it("gated_add runs in place with out = x", function()
    local x = adaspa.randn({5, 12}, {seed = 420})
    local g, y = adaspa.randn({12}, {seed = 421}), adaspa.randn({5, 12}, {seed = 422})
    local ref = rowwise_ref(x, {g, y}, gated_ref)
    local r = adaspa.gated_add(x, g, y, {out = x})
    assert.equal(x, r)
    check(x, ref, 1e-5, "in place")
    local xb = adaspa.randn({5, 12}, {seed = 423, dtype = "bf16"})
    local refb = rowwise_ref(xb, {g, y}, gated_ref)
    adaspa.gated_add(xb, g, y, {out = xb})
    check(xb, refb, 1e-2, "bf16 in place")
  end)

  it("add, mul, scale match the reference", function()
    local a = adaspa.randn({3, 11}, {seed = 430})
    local b, v = adaspa.randn({3, 11}, {seed = 431}), adaspa.randn({11}, {seed = 432})
    check(adaspa.add(a, b, {out = poisoned({3, 11})}), rowwise_ref(a, {b}, function(p, q) return p + q end))
    check(adaspa.add(a, v, {out = poisoned({3, 11})}), rowwise_ref(a, {v}, function(p, q) return p + q end))
    check(adaspa.mul(a, v, {out = poisoned({3, 11})}), rowwise_ref(a, {v}, function(p, q) return p * q end))
    check(adaspa.mul(a, b:transpose(1, 2):contiguous():transpose(1, 2)), rowwise_ref(a, {b}, function(p, q) return p * q end))
    check(adaspa.scale(a, -2.5, {out = poisoned({3, 11})}), rowwise_ref(a, {}, function(p) return -2.5 * p end))
    local s = adaspa.randn({2, 3, 4}, {seed = 433}):permute({3, 1, 2})
    check(adaspa.scale(s, 0.125), rowwise_ref(s, {}, function(p) return p / 8 end), 1e-6, "permuted")
    assert.equal(b, adaspa.add(a, b, {out = b}))
  end)

  it("silu and gelu_tanh match the reference, extremes included", function()
    local vals = {-80, -30, -5, -1, -0.25, 0, 1e-3, 0.5, 1, 3, 20, 88}
    local x = adaspa.tensor(vals)
    check(adaspa.silu(x, {out = poisoned({#vals})}), rowwise_ref(x, {}, silu_ref), 1e-6, "silu")
    check(adaspa.gelu_tanh(x, {out = poisoned({#vals})}), rowwise_ref(x, {}, gelu_ref), 1e-6, "gelu")
    local r = adaspa.randn({4, 37}, {seed = 440}):narrow(2, 3, 30)
    check(adaspa.silu(r), rowwise_ref(r, {}, silu_ref), 1e-5, "silu strided")
    check(adaspa.gelu_tanh(r, {out = poisoned({4, 30}, "bf16")}), rowwise_ref(r, {}, gelu_ref), 1e-2, "gelu bf16")
  end)

  it("gelu (exact, erf) matches a float64 reference element by element and differs from gelu_tanh", function()
    -- the reference itself: erf(1) and erf(3.5) to 1e-12, and GELU(-3) as PyTorch's exact GELU gives it
    assert.is_true(math.abs(erf_ref(1) - 0.8427007929497149) < 1e-12)
    assert.is_true(math.abs(erf_ref(3.5) - 0.9999992569016276) < 1e-12)
    assert.is_true(math.abs(erfc_ref(5) / 1.5374597944280349e-12 - 1) < 1e-12)
    assert.is_true(math.abs(gelu_erf_ref(-3) + 0.004049694) < 1e-8)
    local vals = {-80, -30, -9, -5, -4.2, -3, -2.5, -1, -0.25, -1e-3, 0, 1e-3, 0.5, 1, 2.9, 3.1, 5, 20, 88}
    local x = adaspa.tensor(vals)
    local out = adaspa.gelu(x, {out = poisoned({#vals})})
    local got = flat(out)
    for i, v in ipairs(vals) do
      local ref = gelu_erf_ref(v)
      -- f32: relative 2e-6, widened by v^2 in the negative tail (there the rounding of v / sqrt 2
      -- in f32 moves erfc by a relative 2 |z| eps), absolute 1e-30 where f32 underflows
      assert(math.abs(got[i] - ref) <= 2e-6 * math.max(1, v * v) * math.abs(ref) + 1e-30,
        string.format("gelu(%g) = %.9g, reference %.9g", v, got[i], ref))
    end
    -- the tanh form is 10% off at -3: the op is not it
    local tanh3 = flat(adaspa.gelu_tanh(adaspa.tensor({-3})))[1]
    assert.is_true(math.abs(tanh3 - gelu_erf_ref(-3)) > 3e-4)
    local r = adaspa.randn({4, 37}, {seed = 441}):narrow(2, 3, 30)
    local rs = adaspa.scale(r, 3)
    check(adaspa.gelu(rs), rowwise_ref(rs, {}, gelu_erf_ref), 1e-6, "gelu strided")
    check(adaspa.gelu(rs:to("bf16"), {out = poisoned({4, 30}, "bf16")}), rowwise_ref(rs, {}, gelu_erf_ref), 1e-2, "gelu bf16")
    -- in place
    local y = adaspa.scale(adaspa.randn({5, 8}, {seed = 442}), 2)
    local ref = rowwise_ref(y, {}, gelu_erf_ref)
    assert.equal(y, adaspa.gelu(y, {out = y}))
    check(y, ref, 1e-6, "gelu in place")
  end)
end)

-- ---- video DiT pieces ----------------------------------------------------------------------------------

describe("gated_add_layernorm_modulate", function()
  local op = adaspa.gated_add_layernorm_modulate

  -- float64: xo = x + gate * y, out = layernorm(xo, eps, w, b) * (1 + scale) + shift; operands [C]
  -- (any tensor of C elements) or x's shape. Returns out, xo as flat lists.
  local function ref(x, g, y, eps, w, b, sh, sc)
    local X = flat(x)
    local shape = x:shape()
    local c = shape[#shape]
    local function at(t)
      local T, bc = flat(t), t:numel() == c
      return function(i) return bc and T[(i - 1) % c + 1] or T[i] end
    end
    local G, Y, SH, SC = at(g), at(y), at(sh), at(sc)
    local W, B = w and flat(w), b and flat(b)
    local xo, out = {}, {}
    for i = 1, #X do xo[i] = X[i] + G(i) * Y(i) end
    for r = 0, #X / c - 1 do
      local mean, var = 0, 0
      for j = 1, c do mean = mean + xo[r * c + j] end
      mean = mean / c
      for j = 1, c do var = var + (xo[r * c + j] - mean) ^ 2 end
      local inv = 1 / math.sqrt(var / c + eps)
      for j = 1, c do
        local i = r * c + j
        local v = (xo[i] - mean) * inv
        if W then v = v * W[j] end
        if B then v = v + B[j] end
        out[i] = v * (1 + SC(i)) + SH(i)
      end
    end
    return out, xo
  end

  local seed = 830
  local function rnd(shape, dt)
    seed = seed + 1
    return adaspa.randn(shape, {seed = seed, dtype = dt or "f32"})
  end

  it("matches a float64 reference at odd sizes, with [C], [1, C] and full operands, weight and bias", function()
    for _, s in ipairs({{1, 1}, {1, 33}, {5, 37}, {3, 2, 19}, {9, 131}}) do
      local c = s[#s]
      local one = {}
      for d = 1, #s - 1 do one[d] = 1 end
      one[#s] = c
      for _, form in ipairs({"vec", "row", "full"}) do
        local oshape = form == "vec" and {c} or form == "row" and one or s
        local x, y = rnd(s), rnd(s)
        -- the gate takes every form; shift and scale the same (full ones run the two ops in turn)
        local g, sh, sc = rnd(oshape), rnd(oshape), rnd(oshape)
        local w, b = rnd({c}), rnd({c})
        for _, wb in ipairs({false, true}) do
          local what = string.format("%s operands %s%s", table.concat(s, "x"), form, wb and " weight, bias" or "")
          local want, want_xo = ref(x, g, y, 1e-5, wb and w, wb and b, sh, sc)
          local out, xo = op(x, g, y, 1e-5, wb and w or nil, wb and b or nil, sh, sc,
            {out = poisoned(s), x_out = poisoned(s)})
          assert.same(s, out:shape())
          check(xo, want_xo, 1e-6, what .. ": x_out")
          if c > 1 then check(out, want, 1e-5, what .. ": out") end
        end
      end
    end
  end)

  it("gives the bits of gated_add then layernorm_modulate, f32, bf16 and f16, in place and not", function()
    for _, dt in ipairs({"f32", "bf16", "f16"}) do
      for _, s in ipairs({{7, 33}, {4, 3, 130}, {65, 64}}) do
        local c = s[#s]
        local x, y, gv, gf = rnd(s, dt), rnd(s, dt), rnd({c}, dt), rnd(s, dt)
        local sh, sc, w, b = rnd({c}, dt), rnd({c}, dt), rnd({c}, dt), rnd({c}, dt)
        for _, g in ipairs({gv, gf}) do
          for _, wb in ipairs({false, true}) do
            local what = string.format("%s %s gate %s%s", dt, table.concat(s, "x"), g == gv and "[C]" or "full",
              wb and " weight, bias" or "")
            local wx, wy = wb and w or nil, wb and b or nil
            local x1 = x:clone()
            adaspa.gated_add(x1, g, y, {out = x1})
            local want = adaspa.layernorm_modulate(x1, 1e-6, wx, wy, sh, sc)
            -- in place: x_out = x, returned as is
            local x2 = x:clone()
            local out, xo = op(x2, g, y, 1e-6, wx, wy, sh, sc, {x_out = x2})
            assert.is_true(rawequal(xo, x2), what)
            assert.equal(dt, out:dtype())
            assert.equal(0, spec_maxdiff(x2, x1), what .. ": x_out")
            assert.equal(0, spec_maxdiff(out, want), what .. ": out")
            -- into new tensors: x is left as it was
            local out3, xo3 = op(x, g, y, 1e-6, wx, wy, sh, sc)
            assert.equal(0, spec_maxdiff(xo3, x1), what .. ": new x_out")
            assert.equal(0, spec_maxdiff(out3, want), what .. ": new out")
            assert.is_true(spec_maxdiff(x, x1) > 0, what .. ": x unchanged")
          end
        end
      end
    end
  end)

  it("rounds x_out to its own dtype before the norm reads it (mixed dtypes, strided inputs)", function()
    -- f32 x, bf16 x_out and out, a gate narrowed out of a modulation vector, strided y
    local x = rnd({6, 40})
    local y = rnd({6, 45}, "bf16"):narrow(2, 3, 40)
    local g = rnd({3 * 40}):narrow(1, 41, 40)
    local sh, sc = rnd({40}, "bf16"), rnd({40})
    local xo_b = adaspa.empty({6, 40}, {dtype = "bf16"})
    local want_xo = adaspa.gated_add(x, g, y, {out = adaspa.empty({6, 40}, {dtype = "bf16"})})
    local want = adaspa.layernorm_modulate(want_xo, 1e-6, nil, nil, sh, sc, {out = adaspa.empty({6, 40}, {dtype = "bf16"})})
    local out = op(x, g, y, 1e-6, nil, nil, sh, sc, {x_out = xo_b, out = poisoned({6, 40}, "bf16")})
    assert.equal(0, spec_maxdiff(xo_b, want_xo))
    assert.equal(0, spec_maxdiff(out, want))
    -- the rounding matters: the norm of the unrounded f32 sum differs
    local unrounded = adaspa.layernorm_modulate(adaspa.gated_add(x, g, y), 1e-6, nil, nil, sh, sc,
      {out = adaspa.empty({6, 40}, {dtype = "bf16"})})
    assert.is_true(spec_maxdiff(out, unrounded) > 0)
  end)

  it("uses the default eps 1e-6 when eps is nil", function()
    local x, g, y = rnd({3, 17}), rnd({17}), rnd({3, 17})
    local sh, sc = rnd({17}), rnd({17})
    local a = op(x, g, y, nil, nil, nil, sh, sc)
    local b = op(x, g, y, 1e-6, nil, nil, sh, sc)
    assert.equal(0, spec_maxdiff(a, b))
    local c = op(x, g, y, 0.5, nil, nil, sh, sc)
    assert.is_true(spec_maxdiff(a, c) > 1e-3)
  end)

  it("names the op, the argument and the shapes in its errors, and writes nothing then", function()
    local fn = "adaspa.gated_add_layernorm_modulate"
    local x, y, g = rnd({4, 8}), rnd({4, 8}), rnd({8})
    local sh, sc = rnd({8}), rnd({8})
    local i32 = adaspa.zeros({4, 8}, {dtype = "i32"})
    spec_error(function() op(x, rnd({7}), y, 1e-6, nil, nil, sh, sc) end, fn,
      "gate must have shape [8] or the shape of x [4, 8], got [7]")
    spec_error(function() op(x, g, rnd({4, 7}), 1e-6, nil, nil, sh, sc) end, fn,
      "y must have shape [8] or the shape of x [4, 8], got [4, 7]")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, rnd({5}), sc) end, fn, "shift must have shape [8]", "got [5]")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, rnd({2, 8})) end, fn, "scale must have shape [8]", "got [2, 8]")
    spec_error(function() op(x, g, y, 1e-6, rnd({9}), nil, sh, sc) end, fn, "weight", "[9]")
    spec_error(function() op(x, g, y, 1e-6, nil, rnd({8, 1}), sh, sc) end, fn, "bias", "[8, 1]")
    spec_error(function() op(x, g, i32, 1e-6, nil, nil, sh, sc) end, fn, "y must be f32, bf16 or f16, got i32")
    spec_error(function() op(x, g, y, -1, nil, nil, sh, sc) end, fn, "eps must be a finite number >= 0, got -1")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, nil, sc) end, fn, "shift")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {x_out = rnd({4, 7})}) end, fn,
      "option x_out has shape [4, 7], expected [4, 8]")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {out = rnd({3, 8})}) end, fn,
      "option out has shape [3, 8], expected [4, 8]")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {bogus = 1}) end, fn, "bogus")
    -- overlaps: out with x_out or an input; x_out with anything but x itself
    local big = rnd({5, 8})
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {x_out = x, out = x}) end, fn,
      "out [4, 8] overlaps x [4, 8] in memory")
    local xo = rnd({4, 8})
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {x_out = xo, out = xo}) end, fn,
      "out [4, 8] overlaps x_out [4, 8] in memory")
    spec_error(function() op(big:narrow(1, 1, 4), g, y, 1e-6, nil, nil, sh, sc, {x_out = big:narrow(1, 2, 4)}) end, fn,
      "x_out [4, 8] overlaps x [4, 8] in memory (x_out may be that very tensor")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {x_out = y}) end, fn, "x_out [4, 8] overlaps y [4, 8]")
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {out = y}) end, fn, "out [4, 8] overlaps y [4, 8]")
    -- a non-contiguous x_out
    local wide = rnd({4, 9})
    spec_error(function() op(x, g, y, 1e-6, nil, nil, sh, sc, {x_out = wide:narrow(2, 1, 8)}) end, fn, "x_out")
    -- nothing written by a failing call
    local keep = x:clone()
    local o = adaspa.full({4, 8}, 7)
    pcall(op, x, g, y, 1e-6, rnd({9}), nil, sh, sc, {x_out = x, out = o})
    assert.equal(0, spec_maxdiff(x, keep))
    assert.equal(224, o:sum())
  end)
end)

describe("rope3d", function()
  it("rotates each pair by position x frequency (hand-checked angles)", function()
    -- grid {2, 3, 4}, axes {4, 6, 6}, D = 16: pairs 0-1 time, 2-4 height, 5-7 width.
    -- x = (1, 0) in every pair, so out pair j = (cos a_j, sin a_j).
    local s, d = 27, 16
    local ones = {}
    for i = 1, s * 2 * d do ones[i] = (i % 2 == 1) and 1 or 0 end
    local x = adaspa.tensor(ones):reshape({s, 2, d})
    local y = adaspa.rope3d(x, {2, 3, 4}, {4, 6, 6}, 256, 24, {out = poisoned({s, 2, d})})
    local Y = flat(y)
    local f3, f3b = 2 ^ (-8 / 3), 2 ^ (-16 / 3) -- 256^(-2/6), 256^(-4/6)
    -- token 23 = (t 1, h 2, w 3); token 6 = (t 0, h 1, w 2); token 25 is past n_tokens
    local expect = {
      [23] = {1, 1 / 16, 2, 2 * f3, 2 * f3b, 3, 3 * f3, 3 * f3b},
      [6] = {0, 0, 1, f3, f3b, 2, 2 * f3, 2 * f3b},
    }
    for tok, angles in pairs(expect) do
      for head = 0, 1 do
        for j = 0, 7 do
          local base = (tok * 2 + head) * d + 2 * j
          assert.is_true(math.abs(Y[base + 1] - math.cos(angles[j + 1])) < 1e-6, "cos token " .. tok .. " pair " .. j)
          assert.is_true(math.abs(Y[base + 2] - math.sin(angles[j + 1])) < 1e-6, "sin token " .. tok .. " pair " .. j)
        end
      end
    end
    for e = 1, 2 * d do assert.equal(ones[25 * 2 * d + e], Y[25 * 2 * d + e]) end
  end)

  it("matches the reference on random, strided and bf16 inputs and runs in place", function()
    local grid, axes = {2, 3, 4}, {4, 6, 6}
    local x = adaspa.randn({27, 2, 16}, {seed = 500})
    check(adaspa.rope3d(x, grid, axes, 256, 24, {out = poisoned({27, 2, 16})}), rope_ref(x, grid, axes, 256, 24))
    check(adaspa.rope3d(x, grid, axes, 10000, nil), rope_ref(x, grid, axes, 10000, 24), 1e-5, "theta 10000")
    local qkv = adaspa.randn({27, 6, 16}, {seed = 501})
    local k = qkv:narrow(2, 3, 2)
    check(adaspa.rope3d(k, grid, axes, 256, 24, {out = poisoned({27, 2, 16})}), rope_ref(k, grid, axes, 256, 24), 1e-5, "strided")
    local xb = adaspa.randn({27, 2, 16}, {seed = 502, dtype = "bf16"})
    check(adaspa.rope3d(xb, grid, axes, 256, 24), rope_ref(xb, grid, axes, 256, 24), 1e-2, "bf16")
    local ref = rope_ref(x, grid, axes, 256, 24)
    assert.equal(x, adaspa.rope3d(x, grid, axes, 256, 24, {out = x}))
    check(x, ref, 1e-5, "in place")
  end)

  it("defaults to axes {16, 56, 56}, theta 256 and n_tokens T*H*W", function()
    local x = adaspa.randn({13, 1, 128}, {seed = 510})
    check(adaspa.rope3d(x, {2, 2, 3}), rope_ref(x, {2, 2, 3}, {16, 56, 56}, 256, 12))
  end)
end)

describe("rmsnorm_rope3d", function()
  local grid, axes = {2, 3, 4}, {4, 6, 6}
  local function ref(x, w, eps) return rope_ref(x, grid, axes, 256, 24, norm_ref(x, eps, w, nil, true)) end

  it("is rope3d of rmsnorm per head (float64 reference): text tokens normalized, not rotated", function()
    local x = adaspa.randn({27, 3, 16}, {seed = 520})
    local w = adaspa.randn({16}, {seed = 521})
    local y = adaspa.rmsnorm_rope3d(x, w, 1e-6, grid, axes, 256, 24, {out = poisoned({27, 3, 16})})
    check(y, ref(x, w, 1e-6), 1e-5, "weight")
    check(adaspa.rmsnorm_rope3d(x, nil, 1e-2, grid, axes, 256, 24), ref(x, nil, 1e-2), 1e-5, "no weight")
    -- the same as the two ops one after the other
    local two = adaspa.rope3d(adaspa.rmsnorm(x, w, 1e-6), grid, axes, 256, 24)
    assert.is_true(spec_maxdiff(y, two) < 1e-6)
    -- a text token (past n_tokens) has unit RMS times the weight, unrotated
    local Y, X, W = flat(y), flat(x), flat(w)
    local base, ss = 25 * 3 * 16, 0
    for e = 1, 16 do ss = ss + X[base + e] ^ 2 end
    local inv = 1 / math.sqrt(ss / 16 + 1e-6)
    for e = 1, 16 do assert.is_true(math.abs(Y[base + e] - X[base + e] * inv * W[e]) < 1e-5) end
  end)

  it("takes strided q of a QKV tensor, bf16, and runs in place", function()
    local qkv = adaspa.randn({27, 3, 2, 16}, {seed = 522})
    local q = qkv:narrow(2, 1, 1):reshape({27, 2, 16})
    local w = adaspa.randn({16}, {seed = 523})
    check(adaspa.rmsnorm_rope3d(q, w, 1e-6, grid, axes, 256, 24, {out = poisoned({27, 2, 16})}), ref(q, w, 1e-6), 1e-5,
      "strided")
    local xb = adaspa.randn({27, 2, 16}, {seed = 524, dtype = "bf16"})
    check(adaspa.rmsnorm_rope3d(xb, w, 1e-6, grid, axes, 256, 24), ref(xb, w, 1e-6), 1e-2, "bf16")
    local x = adaspa.randn({27, 2, 16}, {seed = 525})
    local expect = ref(x, w, 1e-6)
    assert.equal(x, adaspa.rmsnorm_rope3d(x, w, 1e-6, grid, axes, 256, 24, {out = x}))
    check(x, expect, 1e-5, "in place")
  end)

  it("names the op and the argument in its errors", function()
    local x = adaspa.randn({27, 2, 16}, {seed = 526})
    spec_error(function() adaspa.rmsnorm_rope3d(x, adaspa.randn({8}), 1e-6, grid, axes, 256, 24) end,
      "adaspa.rmsnorm_rope3d: weight must have shape [16], got [8]")
    spec_error(function() adaspa.rmsnorm_rope3d(x, nil, -1, grid, axes, 256, 24) end, "adaspa.rmsnorm_rope3d", "eps")
    spec_error(function() adaspa.rmsnorm_rope3d(x, nil, 1e-6, grid, {4, 6, 4}, 256, 24) end,
      "adaspa.rmsnorm_rope3d: axes must be 3 even sizes summing to the head dim 16")
    spec_error(function() adaspa.rmsnorm_rope3d(x, nil, 1e-6, grid, axes, 256, 25) end, "n_tokens must equal T*H*W = 24")
  end)
end)

describe("patchify and unpatchify", function()
  it("order tokens t, h, w and features c*4 + kh*2 + kw (hand-made case)", function()
    local v = {}
    for c = 0, 1 do
      for y = 0, 1 do
        for xw = 0, 3 do v[#v + 1] = c * 100 + y * 10 + xw end
      end
    end
    local x = adaspa.tensor(v):reshape({2, 1, 2, 4})
    local p = adaspa.patchify(x, {out = poisoned({2, 8})})
    assert.same({{0, 1, 10, 11, 100, 101, 110, 111}, {2, 3, 12, 13, 102, 103, 112, 113}}, p:totable())
    assert.same(x:totable(), adaspa.unpatchify(p, {1, 2, 4}):totable())
  end)

  it("match the reference and round-trip, strided and bf16 included", function()
    local x = adaspa.randn({5, 3, 6, 4}, {seed = 600})
    local p = adaspa.patchify(x, {out = poisoned({18, 20})})
    check(p, patchify_ref(x))
    assert.equal(0, spec_maxdiff(adaspa.unpatchify(p, {3, 6, 4}, {out = poisoned({5, 3, 6, 4})}), x))
    local xs = adaspa.randn({3, 6, 4, 5}, {seed = 601}):permute({4, 1, 2, 3}) -- [5, 3, 6, 4], strided
    assert.equal(0, spec_maxdiff(adaspa.patchify(xs), adaspa.patchify(xs:contiguous())))
    local wide = adaspa.randn({18, 28}, {seed = 602}):narrow(2, 5, 20)
    assert.equal(0, spec_maxdiff(adaspa.patchify(adaspa.unpatchify(wide, {3, 6, 4})), wide))
    local xb = adaspa.randn({2, 2, 4, 2}, {seed = 603, dtype = "bf16"})
    local pb = adaspa.patchify(xb)
    assert.equal("bf16", pb:dtype())
    assert.equal(0, spec_maxdiff(adaspa.unpatchify(pb, {2, 4, 2}), xb))
  end)
end)

describe("timestep_embedding", function()
  it("gives [cos(t f_k), sin(t f_k)] with f_k = max_period^(-k / (dim/2))", function()
    local t = adaspa.tensor({0, 1.5, 999})
    check(adaspa.timestep_embedding(t, 8, 10000, {out = poisoned({3, 8})}), temb_ref({0, 1.5, 999}, 8, 10000), 1e-6)
    check(adaspa.timestep_embedding(t, 6, 100), temb_ref({0, 1.5, 999}, 6, 100), 1e-6, "max_period 100")
    local e = adaspa.timestep_embedding(500)
    assert.same({1, 256}, e:shape())
    check(e, temb_ref({500}, 256, 10000), 1e-6, "number t, defaults")
    local tb = adaspa.tensor({250, 3}, {dtype = "bf16"})
    assert.equal("bf16", adaspa.timestep_embedding(tb, 4, nil):dtype())
  end)
end)

describe("concat and split", function()
  it("concat stacks along dimension 1 from mixed dtypes and views", function()
    local a = adaspa.randn({2, 3, 4}, {seed = 700})
    local b = adaspa.randn({1, 3, 4}, {seed = 701, dtype = "bf16"})
    local c = adaspa.randn({4, 3, 5}, {seed = 702}):narrow(3, 2, 4)
    local y = adaspa.concat({a, b, c}, {out = poisoned({7, 3, 4})})
    assert.same({7, 3, 4}, y:shape())
    assert.equal(0, spec_maxdiff(y:narrow(1, 1, 2), a))
    assert.equal(0, spec_maxdiff(y:narrow(1, 3, 1), b))
    assert.equal(0, spec_maxdiff(y:narrow(1, 4, 4), c))
    assert.equal("f32", y:dtype())
    assert.equal("bf16", adaspa.concat({b, a}):dtype())
    assert.equal(0, spec_maxdiff(adaspa.concat({a}), a))
  end)

  it("split returns views of x along dimension 1", function()
    local x = adaspa.randn({6, 5}, {seed = 710})
    local parts = adaspa.split(x, {1, 2, 3})
    assert.equal(3, #parts)
    assert.same({2, 5}, parts[2]:shape())
    assert.is_true(parts[3]:shares_storage(x))
    assert.equal(0, spec_maxdiff(parts[3], x:narrow(1, 4, 3)))
    assert.equal(0, spec_maxdiff(adaspa.concat(parts), x))
    spec_error(function() adaspa.split(x, {2, 2}) end, "adaspa.split", "sum to 4", "[6, 5]")
    spec_error(function() adaspa.split(x, {2, 0, 4}) end, "adaspa.split", "sizes[2]")
  end)
end)

-- ---- errors --------------------------------------------------------------------------------------------

describe("nn op errors", function()
  local x = adaspa.randn({4, 8}, {seed = 800})
  local w = adaspa.randn({3, 8}, {seed = 801})
  local v8 = adaspa.randn({8}, {seed = 802})
  local i32 = adaspa.zeros({4, 8}, {dtype = "i32"})

  it("linear and matmul name the argument and the shapes", function()
    spec_error(function() adaspa.linear(x, adaspa.randn({3, 5})) end, "adaspa.linear", "w must have shape [*, 8]", "got [3, 5]")
    spec_error(function() adaspa.linear(x, w, adaspa.randn({4})) end, "adaspa.linear: b must have shape [3], got [4]")
    spec_error(function() adaspa.linear(i32, w) end, "adaspa.linear: x must be f32, bf16 or f16, got i32")
    spec_error(function() adaspa.linear(x, w, {out = x}) end, "adaspa.linear", "b must be a tensor or nil, got table")
    spec_error(function() adaspa.linear("x", w) end, "adaspa.linear", "x must be a tensor, got string")
    spec_error(function() adaspa.linear(x, w, nil, {out = adaspa.empty({4, 4})}) end, "adaspa.linear", "out has shape [4, 4], expected [4, 3]")
    spec_error(function() adaspa.linear(x, w, nil, {out = adaspa.empty({4, 3}, {dtype = "u8"})}) end, "adaspa.linear: out must be f32, bf16 or f16")
    spec_error(function() adaspa.linear(x, w, nil, {out = adaspa.empty({3, 4}):transpose(1, 2)}) end, "adaspa.linear: out [4, 3] must be contiguous")
    spec_error(function() adaspa.linear(x, w, nil, {bias = 1}) end, "adaspa.linear", "unknown option 'bias'")
    local sq = adaspa.randn({8, 8}, {seed = 803})
    spec_error(function() adaspa.linear(x, sq, nil, {out = x}) end, "adaspa.linear: out [4, 8] overlaps x [4, 8]")
    spec_error(function() adaspa.matmul(x, w) end, "adaspa.matmul", "a [M, K] and b [K, N]", "[4, 8]", "[3, 8]")
    spec_error(function() adaspa.matmul(x, v8) end, "adaspa.matmul", "got a [4, 8] and b [8]")
    spec_error(function() adaspa.matmul(x, w:transpose(1, 2), {out = w:transpose(1, 2):narrow(1, 1, 4)}) end, "adaspa.matmul", "out")
  end)

  it("norms and elementwise ops name the argument and the shapes", function()
    spec_error(function() adaspa.layernorm(x, 1e-6, adaspa.randn({7})) end, "adaspa.layernorm: weight must have shape [8], got [7]")
    spec_error(function() adaspa.layernorm(x, 1e-6, v8, adaspa.randn({2, 8})) end, "adaspa.layernorm: bias must have shape [8], got [2, 8]")
    spec_error(function() adaspa.layernorm(x, -1) end, "adaspa.layernorm: eps must be a finite number >= 0, got -1")
    spec_error(function() adaspa.layernorm(x, "a") end, "adaspa.layernorm: eps must be a number or nil, got string")
    spec_error(function() adaspa.layernorm(adaspa.tensor(1.5), 1e-6) end, "adaspa.layernorm: x must have at least one dimension")
    spec_error(function() adaspa.rmsnorm(x, adaspa.randn({4}), 1e-6) end, "adaspa.rmsnorm: weight must have shape [8], got [4]")
    spec_error(function() adaspa.rmsnorm(x, 3) end, "adaspa.rmsnorm: weight must be a tensor or nil, got number")
    spec_error(function() adaspa.softmax(x, {scale = 0}) end, "adaspa.softmax: scale must be a finite number > 0, got 0")
    spec_error(function() adaspa.softmax(x, {scale = -2}) end, "adaspa.softmax: scale must be a finite number > 0, got -2")
    spec_error(function() adaspa.softmax(x, {scale = math.huge}) end, "adaspa.softmax: scale", "got inf")
    spec_error(function() adaspa.softmax(x, {scale = "1"}) end, "adaspa.softmax: option scale must be a number, got string")
    spec_error(function() adaspa.softmax(x, {temperature = 1}) end, "adaspa.softmax", "unknown option 'temperature'")
    spec_error(function() adaspa.softmax(i32) end, "adaspa.softmax: x must be f32, bf16 or f16, got i32")
    spec_error(function() adaspa.softmax(adaspa.tensor(1.5)) end, "adaspa.softmax: x must have at least one dimension")
    spec_error(function() adaspa.softmax(x, {out = adaspa.empty({8, 4})}) end, "adaspa.softmax: option out has shape [8, 4], expected [4, 8]")
    local sbig = adaspa.randn({5, 8}, {seed = 809})
    spec_error(function() adaspa.softmax(sbig:narrow(1, 1, 4), {out = sbig:narrow(1, 2, 4)}) end,
      "adaspa.softmax: out [4, 8] overlaps x [4, 8] in memory")
    spec_error(function() adaspa.modulate(x, adaspa.randn({4}), v8) end, "adaspa.modulate: shift must have shape [8] or the shape of x [4, 8], got [4]")
    spec_error(function() adaspa.modulate(x, v8, adaspa.randn({2, 8})) end, "adaspa.modulate: scale must have shape [8]", "got [2, 8]")
    spec_error(function() adaspa.modulate(x, v8) end, "adaspa.modulate: scale must be a tensor, got no value")
    spec_error(function() adaspa.gated_add(x, v8, adaspa.randn({4, 7})) end, "adaspa.gated_add: y must have shape [8] or the shape of x [4, 8], got [4, 7]")
    spec_error(function() adaspa.gated_add(x, v8, i32) end, "adaspa.gated_add: y must be f32, bf16 or f16, got i32")
    spec_error(function() adaspa.gated_add(x, v8, x, {out = x:narrow(1, 2, 3)}) end, "adaspa.gated_add: option out has shape [3, 8], expected [4, 8]")
    local big = adaspa.randn({5, 8}, {seed = 804})
    spec_error(function() adaspa.gated_add(big:narrow(1, 1, 4), v8, x, {out = big:narrow(1, 2, 4)}) end,
      "adaspa.gated_add: out [4, 8] overlaps x [4, 8] in memory (out may be that very tensor")
    spec_error(function() adaspa.add(x, adaspa.randn({3})) end, "adaspa.add: b must have shape [8] or the shape of a [4, 8], got [3]")
    spec_error(function() adaspa.mul(i32, x) end, "adaspa.mul: a must be f32, bf16 or f16, got i32")
    spec_error(function() adaspa.scale(x, "2") end, "adaspa.scale: s must be a number, got string")
    spec_error(function() adaspa.scale(x, 0 / 0) end, "adaspa.scale: s must be a number, got nan")
    spec_error(function() adaspa.silu(x, {out = adaspa.empty({8, 4})}) end, "adaspa.silu: option out has shape [8, 4], expected [4, 8]")
    spec_error(function() adaspa.gelu_tanh(i32) end, "adaspa.gelu_tanh: x must be f32, bf16 or f16, got i32")
    spec_error(function() adaspa.gelu(i32) end, "adaspa.gelu: x must be f32, bf16 or f16, got i32")
    spec_error(function() adaspa.gelu(x, {out = adaspa.empty({8, 4})}) end, "adaspa.gelu: option out has shape [8, 4], expected [4, 8]")
    spec_error(function() adaspa.silu(x, 5) end, "adaspa.silu: options must be a table, got number")
  end)

  it("rope3d, patchify, unpatchify, timestep_embedding and concat name the argument and the shapes", function()
    local q = adaspa.randn({30, 2, 16}, {seed = 805})
    spec_error(function() adaspa.rope3d(q, {2, 3, 4}, {4, 6, 8}) end, "adaspa.rope3d: axes must be 3 even sizes summing to the head dim 16", "{4, 6, 8}")
    spec_error(function() adaspa.rope3d(q, {2, 3, 4}, {5, 5, 6}) end, "adaspa.rope3d: axes", "{5, 5, 6}")
    spec_error(function() adaspa.rope3d(q, {2, 3, 4}, {4, 6, 6}, 256, 23) end, "adaspa.rope3d: n_tokens must equal T*H*W = 24", "got 23")
    spec_error(function() adaspa.rope3d(q, {2, 4, 4}, {4, 6, 6}) end, "adaspa.rope3d: n_tokens", "at most the 30 tokens of x [30, 2, 16]", "got 32")
    spec_error(function() adaspa.rope3d(q, {2, 0, 4}, {4, 6, 6}) end, "adaspa.rope3d: grid[2] must be an integer in [1,")
    spec_error(function() adaspa.rope3d(q, {2, 3}, {4, 6, 6}) end, "adaspa.rope3d: grid must be a table of 3 integers")
    spec_error(function() adaspa.rope3d(q, {2, 3, 4}, {4, 6, 6}, -1) end, "adaspa.rope3d: theta must be a positive number, got -1")
    spec_error(function() adaspa.rope3d(adaspa.randn({24, 16}), {2, 3, 4}, {4, 6, 6}) end, "adaspa.rope3d: x must have shape [*, *, *], got [24, 16]")
    spec_error(function() adaspa.patchify(adaspa.randn({2, 1, 3, 4})) end, "adaspa.patchify: x must have shape [C, T, H, W] with H and W even, got [2, 1, 3, 4]")
    spec_error(function() adaspa.patchify(adaspa.randn({2, 1, 4, 4}), {out = adaspa.empty({4, 9})}) end, "adaspa.patchify: option out has shape [4, 9], expected [4, 8]")
    spec_error(function() adaspa.unpatchify(adaspa.randn({6, 8}), {1, 2, 4}) end, "adaspa.unpatchify: x must have shape [T*H/2*W/2 = 2, C*4]", "got [6, 8]")
    spec_error(function() adaspa.unpatchify(adaspa.randn({6, 6}), {1, 2, 4}) end, "adaspa.unpatchify: x must have shape [T*H/2*W/2, C*4], got [6, 6]")
    spec_error(function() adaspa.unpatchify(adaspa.randn({2, 8}), {1, 3, 4}) end, "adaspa.unpatchify: size must be {T, H, W}", "{1, 3, 4}")
    spec_error(function() adaspa.timestep_embedding(adaspa.randn({2, 2}), 8) end, "adaspa.timestep_embedding: t must have shape [N], got [2, 2]")
    spec_error(function() adaspa.timestep_embedding(adaspa.randn({2}), 7) end, "adaspa.timestep_embedding: dim must be even and >= 2, got 7")
    spec_error(function() adaspa.timestep_embedding(adaspa.randn({2}), 8, 0) end, "adaspa.timestep_embedding: max_period must be a positive number, got 0")
    spec_error(function() adaspa.timestep_embedding("t") end, "adaspa.timestep_embedding: t must be a tensor [N] or a number, got string")
    spec_error(function() adaspa.concat({x, adaspa.randn({2, 7})}) end, "adaspa.concat: tensor 2 must have shape [*, 8], got [2, 7]")
    spec_error(function() adaspa.concat({x, adaspa.randn({8})}) end, "adaspa.concat: tensor 2 [8] must have 2 dimensions like tensor 1 [4, 8]")
    spec_error(function() adaspa.concat({x, 3}) end, "adaspa.concat: tensor 2 must be a tensor, got number")
    spec_error(function() adaspa.concat({}) end, "adaspa.concat: tensors must be a non-empty table")
    spec_error(function() adaspa.concat({x, i32}) end, "adaspa.concat: tensor 2 must be f32, bf16 or f16, got i32")
    spec_error(function() adaspa.concat({x, x}, {out = adaspa.empty({9, 8})}) end, "adaspa.concat: option out has shape [9, 8], expected [8, 8]")
    local buf = adaspa.randn({8, 8}, {seed = 806})
    spec_error(function() adaspa.concat({buf:narrow(1, 1, 4)}, {out = buf:narrow(1, 2, 4)}) end, "adaspa.concat: out [4, 8] overlaps tensor 1 [4, 8]")
  end)

  it("nothing is written when an op fails", function()
    local out = adaspa.full({4, 3}, 7)
    pcall(adaspa.linear, x, w, adaspa.randn({4}), {out = out})
    assert.equal(84, out:sum())
  end)

  it("layernorm_modulate equals layernorm then modulate", function()
    local xx = adaspa.randn({7, 33}, {seed = 820})
    local sh, sc = adaspa.randn({33}, {seed = 821}), adaspa.randn({33}, {seed = 822})
    local want = adaspa.modulate(adaspa.layernorm(xx, 1e-6), sh, sc)
    local got = adaspa.layernorm_modulate(xx, 1e-6, nil, nil, sh, sc, {out = adaspa.full({7, 33}, NaN)})
    assert.equal(0, spec_maxdiff(got, want))
    spec_error(function() adaspa.layernorm_modulate(xx, 1e-6, nil, nil, adaspa.zeros({5}), sc) end, "adaspa.layernorm_modulate", "shift")
  end)

  it_gpu("rejects tensors on different devices, naming both", function()
    spec_error(function() adaspa.linear(x, w:to("cuda")) end, "adaspa.linear", "w is on cuda:0", "x is on cpu")
    spec_error(function() adaspa.add(x:to("cuda"), x) end, "adaspa.add", "cuda:0", "cpu")
  end)

  if not adaspa.cuda.available() then
    it("without a GPU, asking for CUDA tensors fails cleanly and the ops keep working", function()
      assert.is_false(pcall(adaspa.randn, {4, 8}, {device = "cuda"}))
      check(adaspa.silu(x), rowwise_ref(x, {}, silu_ref))
    end)
  end
end)
