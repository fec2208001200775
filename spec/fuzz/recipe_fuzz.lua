-- spec/fuzz/recipe_fuzz.lua: fuzzes command-line overrides (recipe.parse_override, parse_value,
-- set_path) and the validation of every job's schema (recipe.validate with the jobs' checks).
-- Run inside the adaspa binary:  adaspa spec/fuzz/recipe_fuzz.lua [SECONDS [SEED [RUNS]]]
--
-- Each input is 1 to 4 overrides mutated from the README's and the recipes' own (byte flips,
-- splices, dictionary fields, numeric edge values: nan, inf, 1e308, 2^53+1, ...), applied to a
-- recipe's configuration and validated against its job's schema. Acceptable outcomes: the
-- override is refused with a message, or validation succeeds, or it fails with a message that
-- starts with the recipe's name. Anything else (an error from inside a check, a non-string
-- error) is a crash, as is an input taking over 2 s or allocating over 4 x its size + 2 MiB.
-- A configuration that validates although it holds a NaN or an infinite number then goes through
-- the stage a run takes next, before any work: the policies are built from it (video: the
-- attention table; compare: every planned run), as the jobs do. Refused there with a message:
-- fine. Accepted by both: a finding (printed; a crash with --strict as 4th argument).
local fz = dofile("spec/fuzz/mutate.lua")
local recipe = require "adaspa.recipe"
local policies = require "adaspa.policy"

local seconds, seed, runs, strict = tonumber(arg[1]) or 10, tonumber(arg[2]) or 1, tonumber(arg[3]), arg[4] == "--strict"

local jobs = {}
for _, name in ipairs({"video", "compare", "replay"}) do
  local ok, job = pcall(require, "adaspa.jobs." .. name)
  if ok and type(job) == "table" and type(job.schema) == "table" then jobs[#jobs + 1] = {name = name, schema = job.schema} end
end
assert(#jobs > 0, "recipe_fuzz: no job schema could be loaded")

local seeds = {"sampler.steps=20", "video.frames=9", "video.width=320", "video.height=256", "sampler.shift=7.0",
  "sampler.guidance=6", "sampler.seed=42", "model.preset=small", "model.preset=auto", "model.dtype=bf16",
  "model.device=cpu", "model.weights_seed=1", "model.layers.double=2", "model.heads=2", "text.prompt=\"a fox\"",
  "attention.policy=adaspa", "attention.policy=dense", "attention.sparsity=0.8", "attention.block=64",
  "attention.warmup=10", "attention.search={10,30}", "attention.search=10,30", "attention.head_adaptive=true",
  "attention.recall=0.9", "attention.min_density=0.02", "attention.options.threshold=0.8",
  "output.dir=out/x", "output.previews=false", "output.upscale=8", "output.error_steps={1,2}",
  "output.picture_layers={1}", "output.quiet=true", "policies=dense,adaspa", "sparsity=0.9", "trace=t.safetensors",
  "warmup=10", "search=10,30"}
local dict = {"sampler.", "video.", "model.", "attention.", "output.", "text.", "steps", "frames", "width", "height",
  "shift", "guidance", "seed", "preset", "layers", "search", "warmup", "sparsity", "block", "policy", "options",
  "=", ".", "{", "}", ",", "\"", "nil", "true", "false", "nan", "inf", "-inf", "1e308", "-1e308", "1e9"}

-- The path of a NaN or infinite number in v, or nil.
local function nonfinite(v, path, depth)
  if type(v) == "number" then return (v ~= v or v == math.huge or v == -math.huge) and path or nil end
  if type(v) == "table" and depth < 8 then
    for k, x in pairs(v) do
      local p = nonfinite(x, path == "" and tostring(k) or path .. "." .. tostring(k), depth + 1)
      if p then return p end
    end
  end
end

local findings, fields = 0, {}

-- The policy stage of a validated configuration: true when the job would build its policies
-- (the configuration is accepted), false when it refuses with a message; raises otherwise.
local function policy_stage(job, cfg)
  local ok, err
  if job.name == "video" then
    ok, err = pcall(policies.from_attention, cfg.attention, cfg.sampler.steps)
  elseif job.name == "compare" then
    ok, err = pcall(function()
      for _, r in ipairs(require("adaspa.jobs.compare").plan(cfg)) do
        if not r.object then policies.build(r.name, r.opts, cfg.sampler.steps) end
      end
    end)
  else
    return true
  end
  if ok then return true end
  if type(err) ~= "string" or err == "" then error("the policy stage raised a non-string error: " .. tostring(err), 0) end
  return false
end

local function one(rng)
  local job = jobs[rng(#jobs)]
  local args, size = {}, 0
  for i = 1, rng(4) do
    args[i] = fz.mutate(rng, seeds[rng(#seeds)], seeds, dict)
    size = size + #args[i]
  end
  local cfg = {}
  for _, a in ipairs(args) do
    local ok, keys, value = pcall(recipe.parse_override, a)
    if not ok then return size, false, "parse_override raised " .. fz.show(tostring(keys)) .. " on " .. fz.show(a) end
    if not keys then
      if type(value) ~= "string" or value == "" then return size, false, "parse_override gave no message for " .. fz.show(a) end
      return size, true
    end
    if type(keys) ~= "table" or #keys == 0 then return size, false, "parse_override gave no keys for " .. fz.show(a) end
    local oks, err = pcall(recipe.set_path, cfg, keys, value)
    if not oks then return size, false, "set_path raised " .. fz.show(tostring(err)) .. " on " .. fz.show(a) end
  end
  local where = "fuzz_" .. job.name .. ".lua"
  local ok, err = pcall(recipe.validate, cfg, job.schema, where)
  if not ok then
    if type(err) == "string" and err:sub(1, #where + 2) == where .. ": " then return size, true end
    return size, false, string.format("validate (%s job) raised %s on %s", job.name, fz.show(tostring(err)),
      fz.show(table.concat(args, " ")))
  end
  local field = nonfinite(cfg, "", 0)
  if field then
    local okp, accepted = pcall(policy_stage, job, cfg)
    if not okp then
      return size, false, string.format("policy stage (%s job) raised %s on %s", job.name, fz.show(tostring(accepted)),
        fz.show(table.concat(args, " ")))
    end
    if not accepted then return size, true end
    findings = findings + 1
    local key = job.name .. " " .. field:gsub("%.%d+$", "[i]")
    if not fields[key] then
      fields[key] = true
      io.stderr:write(string.format("recipe_fuzz: finding: the %s job accepted a non-finite %s: %s\n", job.name,
        field, fz.show(table.concat(args, " "))))
    end
    if strict then return size, false, "accepted a non-finite number" end
  end
  return size, true
end

local good = fz.campaign({name = "recipe_fuzz", seconds = seconds, seed = seed, runs = runs, one = one})
print(string.format("recipe_fuzz: %d findings (configurations holding NaN or inf that validated and built their policies)",
  findings))
if not good then error("recipe_fuzz: crashes or hangs (see above)", 0) end
