-- adaspa.models.common: what the model modules share (configs and synthetic weights' options).
local common = {}

-- A copy of a value, tables copied all the way down.
function common.deep_copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = common.deep_copy(v) end
  return c
end

-- Merges src into dst: a table that is not a list merges into a table of dst field by field,
-- anything else replaces dst's value (copied). Returns dst.
function common.merge(dst, src)
  for k, v in pairs(src or {}) do
    if type(v) == "table" and type(dst[k]) == "table" and #v == 0 then common.merge(dst[k], v) else dst[k] = common.deep_copy(v) end
  end
  return dst
end

local SYNTH_OPTIONS = {seed = true, device = true, dtype = true, structure = true, constants = true}

-- Checks the options of a model's synthetic weights: seed (default 1, an integer in [0, 2^31)),
-- device ("cpu"), dtype ("f32"), structure (default true), constants (overrides of `defaults`,
-- numbers only). who names the function in errors. Returns {seed =, device =, dtype =,
-- structure =, C = the constants}.
function common.synth_options(who, opts, defaults)
  opts = opts or {}
  for k in pairs(opts) do
    if not SYNTH_OPTIONS[k] then
      error(string.format("%s: unknown option %q (options: seed, device, dtype, structure, constants)", who, tostring(k)), 0)
    end
  end
  local seed = opts.seed or 1
  if type(seed) ~= "number" or seed < 0 or seed % 1 ~= 0 or seed >= 2 ^ 31 then
    error(string.format("%s: seed must be an integer in [0, 2^31), got %s", who, tostring(seed)), 0)
  end
  local C = {}
  for k, v in pairs(defaults) do C[k] = v end
  for k, v in pairs(opts.constants or {}) do
    if C[k] == nil then error(string.format("%s: unknown constant %q", who, tostring(k)), 0) end
    if type(v) ~= "number" then error(string.format("%s: constant %s must be a number, got %s", who, k, type(v)), 0) end
    C[k] = v
  end
  return {seed = seed, device = opts.device or "cpu", dtype = opts.dtype or "f32", structure = opts.structure ~= false, C = C}
end

-- A synthetic-weight maker: rnd(name, std) stores N(0, std^2) (zeros for std 0) of shapes[name]
-- in W[name], drawn from the seed seed_of(name) so each tensor is the same whatever the order;
-- lin(name, std, bias_std) makes name.weight and name.bias (bias std 0.02 by default).
function common.seeded_normal(W, shapes, seed_of, dtype, device)
  local o = {dtype = dtype, device = device}
  local function rnd(name, std)
    local t
    if std == 0 then
      t = adaspa.zeros(shapes[name], o)
    else
      t = adaspa.randn(shapes[name], {seed = seed_of(name), dtype = dtype, device = device})
      if std ~= 1 then adaspa.scale(t, std, {out = t}) end
    end
    W[name] = t
    return t
  end
  local function lin(name, std, bias_std)
    rnd(name .. ".weight", std)
    rnd(name .. ".bias", bias_std or 0.02)
  end
  return rnd, lin
end

return common
