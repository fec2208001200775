-- adaspa.policy: the registry of built-in attention policies.
--
-- A policy is a table with
--   name                       a short name for reports;
--   mode(step, layer)          "dense", "search", "plan" or "sparse" for a step (0-based) and layer;
--   select(mass, layer, info)  at "search" steps: the layout from the exact block mass
--                              [H, nqb, nkb] (policies without search steps may omit it);
--   plan(q, k, v, info, ctx)   at "plan" steps: the layout from q, k, v themselves (static
--                              patterns, estimates, sampled probes), returned with an optional
--                              table {recall = {per head} or nil, flops = extra FLOPs spent planning};
--                              the context then runs sparse attention with it and caches it;
--   describe()                 one line for the report (optional);
--   block                      the block size of its layouts (64 or 128).
-- info = {layer=, kind=, index=, n_img=, n_txt=, kv_valid=, grid = {T, H, W} of latent tokens}.
-- Built-in modules live in adaspa.policy.<name> and export options, defaults, new(opts, steps)
-- and source (the paper the policy follows).
local policies = {}

policies.names = {"dense", "adaspa", "window", "spatial_temporal", "estimate"}

local function module_of(name)
  local known = false
  for _, n in ipairs(policies.names) do if n == name then known = true end end
  if not known then
    error(string.format("unknown policy %s (known: %s, or a policy object)", tostring(name), table.concat(policies.names, ", ")), 3)
  end
  local ok, m = pcall(require, "adaspa.policy." .. name)
  if not ok then error(string.format("policy %s: %s", name, tostring(m)), 3) end
  return m
end

-- The module of a built-in policy (its options, defaults, source).
function policies.module(name) return module_of(name) end

-- A built-in policy from its name and options; steps: the schedule's length (for checks).
function policies.new(name, opts, steps)
  local m = module_of(name)
  return m.new(opts or {}, steps)
end

-- Whether a value is usable as a policy object.
function policies.is_policy(p)
  return type(p) == "table" and type(p.mode) == "function"
    and (type(p.select) == "function" or type(p.plan) == "function")
end

return policies
