-- adaspa.policy: the policy contract, the registry of built-in attention policies and the one
-- builder every job uses (policies.build).
--
-- The contract. A policy is a table (the attention context, adaspa.attention, calls its methods
-- with the policy as self; steps count from 0, layers from 1):
--   mode(step, layer)          required: what this step and layer runs:
--                                "dense"  exact attention;
--                                "search" exact attention plus the block mass, then select();
--                                "plan"   plan() builds a layout from q, k, v, used at once;
--                                "sparse" the layout last searched or planned for the layer;
--   select(mass, layer, info)  at "search" steps: the layout from the exact block mass
--                              [H, nqb, nkb];
--   plan(q, k, v, info, ctx)   at "plan" steps: the layout from q, k, v themselves (static
--                              patterns, estimates, sampled probes), returned with an optional
--                              table {recall = {per head} or nil, flops = extra FLOPs spent planning,
--                              recall_seconds = time spent measuring, mass = for pictures};
--                              a policy has select, plan or both (as its modes need);
--   needs_lse(step, layer)     optional: whether the LSE of this dense step is kept for a search
--                              (the next step's); left out, mode(step + 1, layer) == "search";
--   describe()                 optional: one line for the report;
--   name, block                a short name for reports; the block size of its layouts (64 or 128).
-- info = {layer=, kind=, index=, n_img=, n_txt=, kv_valid=, grid = {T, H, W} of latent tokens,
-- branch = the guidance branch: 1 conditional, 2 the unconditional pass of classifier-free
-- guidance, which asks mode() with the same step and has its own cache (adaspa.attention)}.
-- A layout is an adaspa.layout userdata. policies.check(p) names what a table lacks; the
-- builder checks every policy it returns.
-- Built-in modules live in adaspa.policy.<name> and export options, defaults, shared (the options
-- a recipe's attention table gives them), new(opts, steps) and source (the paper it follows), and
-- optionally inert(opts): the options that do nothing beside the others, {option = why} (the
-- recipe runner warns when the command line sets one).
local policies = {}

policies.names = {"dense", "adaspa", "window", "spatial_temporal", "estimate"}

policies.MODES = {"dense", "search", "plan", "sparse"}

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

-- nil when p meets the contract, else what it lacks.
function policies.check(p)
  if type(p) ~= "table" then return "a policy must be a table, got " .. type(p) end
  if type(p.mode) ~= "function" then return "a policy object needs a mode(step, layer) method" end
  if type(p.select) ~= "function" and type(p.plan) ~= "function" then
    return "a policy object needs select(mass, layer, info) or plan(q, k, v, info, ctx) methods"
  end
  for _, f in ipairs({"needs_lse", "describe"}) do
    if p[f] ~= nil and type(p[f]) ~= "function" then return string.format("a policy's %s must be a method, got %s", f, type(p[f])) end
  end
end

-- Whether a value is usable as a policy object.
function policies.is_policy(p) return policies.check(p) == nil end

-- Whether the LSE of dense step `step` at layer is kept for a search (the contract's needs_lse,
-- or its default: the next step searches).
function policies.needs_lse(p, step, layer)
  if p.needs_lse ~= nil then return p:needs_lse(step, layer) end
  return p:mode(step + 1, layer) == "search"
end

local function has_option(m, k)
  for _, o in ipairs(m.options or {}) do if o == k then return true end end
  return false
end

-- The options of built-in policy `name` from an attention table a (the recipe's: the shared fields
-- the policy takes, then a.options, the policy's own).
function policies.options_of(name, a)
  local m = module_of(name)
  local opts = {}
  for _, k in ipairs(m.options or {}) do
    if a[k] ~= nil and (m.shared == nil or m.shared[k]) then opts[k] = a[k] end
  end
  for k, v in pairs(a.options or {}) do opts[k] = v end
  return opts
end

-- The one builder (video, compare and replay use it): spec a built-in policy's name or a policy
-- object (returned as it is, checked); opts its options; steps the schedule's length. A dense
-- warm-up left out follows the step count (20% of the steps, adaspa.policy.adaspa.schedule) for
-- every policy that has one; adaspa also places its searches from it.
function policies.build(spec, opts, steps)
  if type(spec) == "table" then
    local why = policies.check(spec)
    if why then error(why, 2) end
    return spec
  end
  local m = module_of(spec)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.warmup == nil and steps and spec ~= "adaspa" and has_option(m, "warmup") then
    o.warmup = require("adaspa.policy.adaspa").schedule(steps)
  end
  local p = m.new(o, steps)
  local why = policies.check(p)
  if why then error(string.format("policy %s: %s", spec, why), 2) end
  return p
end

-- A policy from an attention table a (a.policy: a name or a policy object; the shared fields;
-- a.options): what the video job and replay build.
function policies.from_attention(a, steps)
  if type(a.policy) == "table" then return policies.build(a.policy) end
  return policies.build(a.policy, policies.options_of(a.policy, a), steps)
end

return policies
