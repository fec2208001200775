-- adaspa.cli: the host's subcommands (adaspa devices, adaspa recipe, ...).
-- main(name, ...) returns the process exit status.
local adaspa = require "adaspa"

local cli = {}

local function gib(b) return string.format("%.1f GiB", b / 2 ^ 30) end

function cli.devices()
  print(string.format("cpu     %d threads (OpenMP)", adaspa.threads()))
  if not adaspa.cuda.available() then
    print("gpu     none (" .. adaspa.cuda.reason() .. ")")
    return 0
  end
  for _, d in ipairs(adaspa.cuda.devices()) do
    print(string.format("cuda:%d  %s, %s (%s free), compute capability %s, %d SMs", d.index, d.name,
      gib(d.memory), gib(d.free), d.capability, d.sms))
  end
  return 0
end

-- A value as a recipe writes it (strings quoted, lists in braces, policy objects named).
local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  if type(v.mode) == "function" then return "(a policy object" .. (v.name and (" " .. tostring(v.name)) or "") .. ")" end
  if depth > 2 then return "{...}" end
  local parts = {}
  for i = 1, #v do parts[i] = show(v[i], depth + 1) end
  local keys = {}
  for k in pairs(v) do if type(k) ~= "number" or k < 1 or k > #v or k % 1 ~= 0 then keys[#keys + 1] = k end end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. " = " .. show(v[k], depth + 1) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- The fields of a schema as lines: path = value [type; default] and the doc string below.
-- values: the recipe's own table (what it sets), or nil.
function cli.describe_schema(schema, values, prefix, out)
  out = out or {}
  prefix = prefix or ""
  local keys = {}
  for k in pairs(schema) do keys[#keys + 1] = k end
  table.sort(keys)
  -- plain fields first, then nested groups
  local function is_field(spec) return type(spec) == "table" and type(spec.type) == "string" end
  table.sort(keys, function(a, b)
    local fa, fb = is_field(schema[a]), is_field(schema[b])
    if fa ~= fb then return fa end
    return a < b
  end)
  for _, k in ipairs(keys) do
    local spec, path = schema[k], prefix .. k
    local v = type(values) == "table" and values[k] or nil
    if is_field(spec) then
      local set = v ~= nil
      local shown = set and show(v) or (spec.default ~= nil and show(spec.default) or "(none)")
      local meta = spec.type .. (spec.required and "; required" or (not set and spec.default ~= nil and "; the default" or ""))
      if set then meta = meta .. "; default " .. (spec.default ~= nil and show(spec.default) or "none") .. "; set by the recipe" end
      out[#out + 1] = string.format("  %s = %s  [%s]", path, shown, meta)
      out[#out + 1] = "      " .. (spec.doc or "(no description)")
    else
      cli.describe_schema(spec, v, path .. ".", out)
    end
  end
  return out
end

-- adaspa recipe FILE [path=value ...] --help: every field of the recipe's job with its value (the
-- overrides applied), default and meaning; model.name=NAME shows that model's own fields.
function cli.recipe_help(file, overrides)
  local adaspa_ = require "adaspa"
  local recipe = require "adaspa.recipe"
  local path, err = recipe.find(file, adaspa_.home)
  if not path then
    io.stderr:write("adaspa recipe: ", err, "\n")
    return 1
  end
  -- the recipe's values (its functions and metamethods, which show() and the schema may touch) are
  -- looked at confined, as a run would (recipe.confined): the lines are made there, printed after
  local ok, lines = recipe.confined(path, function()
    local cfg = recipe.load(path)
    for _, a in ipairs(overrides or {}) do
      local keys, value = recipe.parse_override(a)
      if not keys then error(path .. ": " .. value, 0) end
      recipe.set_path(cfg, keys, value)
    end
    local job, runner = recipe.job_of(cfg, path)
    local schema = runner.schema_for and runner.schema_for(cfg, path) or runner.schema
    local out = {string.format("usage: adaspa recipe %s [path.to.field=value ...]", file),
      string.format("%s runs the %s job. Its fields: the value this run would use [type; default] and what it means.", path, job),
      "Steps count from 0 (a schedule of N steps runs steps 0..N-1); layers and heads from 1."}
    if runner.schema_for then
      local name = type(cfg.model) == "table" and cfg.model.name or nil
      local okm, models = pcall(require, "adaspa.models")
      if okm then
        name = name or models.default
        local okg, M = pcall(models.get, name)
        if okg then
          out[#out + 1] = string.format("Model %s: %s. Fields marked (%s) are its own; model.name=NAME picks another (%s).", name,
            M.doc or name, name, table.concat(models.names(), ", "))
        end
      end
    end
    return cli.describe_schema(schema, cfg, nil, out)
  end)
  if not ok then
    io.stderr:write("adaspa recipe: ", lines, "\n")
    return 1
  end
  for _, l in ipairs(lines) do print(l) end
  return 0
end

function cli.recipe(file, ...)
  local ok, recipe = pcall(require, "adaspa.recipe")
  if not ok then
    io.stderr:write("adaspa recipe: the recipe runner is not part of this build yet (", tostring(recipe), ")\n")
    return 1
  end
  if file == "--help" or file == "-h" or file == nil then
    cli.help("recipe")
    return file == nil and 1 or 0
  end
  local args = {...}
  for _, a in ipairs(args) do
    if a == "--help" or a == "-h" then
      local over = {}
      for _, b in ipairs(args) do if b ~= "--help" and b ~= "-h" then over[#over + 1] = b end end
      return cli.recipe_help(file, over)
    end
  end
  return recipe.main(file, ...)
end

-- The recipe `adaspa run` (and `make run`) runs, and why: the tiny trained model on a machine whose
-- GPU backend cannot run the models when its weights are there (a real video in well under a
-- minute on a CPU); else HunyuanVideo (recipes/hunyuan.lua: the real sizes on a GPU, synthetic
-- weights and the small preset on a CPU). Returns the recipe name and a one-line reason.
function cli.default_recipe()
  local pipeline = require "adaspa.jobs.pipeline"
  local gpu, why_not = pipeline.gpu_runs_model()
  if gpu then return "hunyuan", "a GPU runs the models: HunyuanVideo (recipes/hunyuan.lua)" end
  local tiny = require "adaspa.models.tiny"
  local path, missing = tiny.available()
  if path then
    return "tiny", string.format("no GPU (%s): the small trained model (recipes/tiny.lua, weights %s)", tostring(why_not), path)
  end
  return "hunyuan", string.format("no GPU (%s) and %s: HunyuanVideo's small preset with SYNTHETIC weights "
    .. "(recipes/hunyuan.lua; pictures of attention, not of content)", tostring(why_not), missing)
end

-- adaspa run [path.to.field=value ...]: the default job (cli.default_recipe) with the overrides.
function cli.run(...)
  local args = {...}
  for _, a in ipairs(args) do
    if a == "--help" or a == "-h" then cli.help("run"); return 0 end
  end
  local name, why = cli.default_recipe()
  print("adaspa run: " .. why)
  return cli.recipe(name, ...)
end

-- adaspa weights FILE: what a safetensors file holds (layout, sizes) and whether it is a complete
-- HunyuanVideo checkpoint of a preset or of the sizes its keys imply; exit 0 if it is, else 1.
function cli.weights(file, ...)
  if type(file) ~= "string" or select("#", ...) > 0 then
    io.stderr:write("usage: adaspa weights FILE.safetensors\n")
    return 1
  end
  local weights = require "adaspa.weights"
  local ok, rep = pcall(weights.describe, file)
  if not ok then
    io.stderr:write("adaspa weights: ", (tostring(rep):gsub("^[^\n]-%.lua:%d+: ", "")), "\n")
    return 1
  end
  local function mib(b) return string.format("%.1f MiB", b / 2 ^ 20) end
  local dts = {}
  for dt, n in pairs(rep.dtypes) do dts[#dts + 1] = dt .. " " .. n end
  table.sort(dts)
  print("file      " .. rep.path)
  print(string.format("tensors   %d, %s (%s)", rep.tensors, mib(rep.bytes), table.concat(dts, ", ")))
  for _, b in ipairs(rep.bad_dtypes) do print("          unsupported dtype (f32, bf16 or f16 expected): " .. b) end
  if not rep.layout then
    print("layout    unknown: " .. rep.layout_error)
    print("result    not a HunyuanVideo checkpoint")
    return 1
  end
  print("layout    " .. rep.layout)
  local c = rep.inferred
  print(string.format("inferred  hidden %d, heads %g x head_dim %d, mlp x%g, blocks double %d / single %d / " ..
    "refiner %d, text %d, pooled %d, in %d%s", c.hidden, c.heads, c.head_dim, c.mlp_ratio, c.layers.double,
    c.layers.single, c.layers.refiner, c.text_dim, c.pooled_dim, c.in_channels,
    #rep.assumed > 0 and " (no key gives " .. table.concat(rep.assumed, ", ") .. ": preset values assumed)" or ""))
  for _, cand in ipairs(rep.candidates) do
    if cand.complete then
      print(string.format("%-9s complete", cand.name))
    else
      print(string.format("%-9s not complete: %d missing, %d wrong shape, %d unexpected%s", cand.name,
        cand.n_missing, cand.n_shape, cand.n_unexpected, #rep.bad_dtypes > 0 and ", unsupported dtypes" or ""))
      if cand.error then print("            config: " .. cand.error) end
      local function list(kind, shown, total)
        for _, m in ipairs(shown) do print(string.format("            %-11s %s", kind, m)) end
        if total > #shown then print(string.format("            %-11s ... %d more", kind, total - #shown)) end
      end
      list("missing", cand.missing, cand.n_missing)
      list("wrong shape", cand.mismatched, cand.n_shape)
      list("unexpected", cand.unexpected, cand.n_unexpected)
    end
  end
  if #rep.complete > 0 then
    print("result    complete checkpoint for: " .. table.concat(rep.complete, ", "))
    return 0
  end
  print("result    not a complete checkpoint of any preset or of the sizes its keys imply")
  return 1
end

cli.usage = [==[
usage: adaspa [FILE.lua [args] | -e CODE [args] | - | COMMAND [args]]
  FILE.lua [args]      run a Lua script with the adaspa runtime loaded
  -e CODE [args]       run a Lua chunk
  -                    run a script read from standard input
  devices              list the CPU and each GPU
  run [path.to.field=value ...]
                       the default job: the small trained model (recipes/tiny.lua) on a machine
                       without a GPU when its weights are there, else recipes/hunyuan.lua
  recipe FILE [path.to.field=value ...]
                       run a recipe (FILE: a path, or a name under recipes/: hunyuan, tiny, wan, wan_i2v, compare, replay)
  recipe FILE [path=value ...] --help   the recipe's fields with their values, defaults and meanings (model.name=NAME: that model's)
  weights FILE         what a safetensors checkpoint holds and whether it is a complete HunyuanVideo
  launch -n N ARGS     N processes of adaspa ARGS, ranks of one communicator (Ulysses sequence parallelism)
  help [COMMAND]       this text, or a command's
  --version            print the version and the backends built
  (no argument)        start the REPL (Ctrl-C interrupts the running chunk; Ctrl-D exits)
Ctrl-C during a recipe run stops it at the next op boundary and writes the outputs so far and
the report ("interrupted at step N"); exit status 130. A second Ctrl-C exits at once.]==]

cli.topics = {
  devices = "usage: adaspa devices\n  the CPU's threads and each GPU: name, memory (free), compute capability, SMs",
  recipe = "usage: adaspa recipe FILE [path.to.field=value ...]\n" ..
    "       adaspa recipe FILE --help     (every field of the recipe: value, default, meaning)\n" ..
    "  FILE: a recipe path, or a name under ./recipes or the installed recipes (hunyuan, tiny, wan, wan_i2v, compare, replay).\n" ..
    "  Values: numbers, true/false, nil, strings (quoted or plain), lists (1,2 or {1,2}).\n" ..
    "  Every value is checked before any work; the run prints its memory and time estimate first\n" ..
    "  and refuses one that does not fit (model.memory_check=false runs anyway).\n" ..
    "  Ctrl-C stops at the next op boundary and writes the outputs so far (exit status 130).",
  weights = "usage: adaspa weights FILE.safetensors\n" ..
    "  the file's tensors, sizes and dtypes, the layout its keys imply and whether it is a complete\n" ..
    "  HunyuanVideo checkpoint of a preset or of the sizes its keys imply (exit status 0 if so, else 1)",
  help = "usage: adaspa help [COMMAND]",
  run = "usage: adaspa run [path.to.field=value ...]\n" ..
    "  the default job (what make run runs), with the overrides of adaspa recipe: on a machine whose GPU\n" ..
    "  backend does not run the models, recipes/tiny.lua (the small trained model: a real video) when its\n" ..
    "  weights (models/tiny/tiny.safetensors) are there; otherwise recipes/hunyuan.lua (on a CPU: the small\n" ..
    "  preset with SYNTHETIC weights). It prints which and why first.",
  launch = "usage: adaspa launch -n N [--nccl] [--all-output] [--grace S] [--] ARGS...\n" ..
    "  N processes of adaspa ARGS (a recipe, a script), ranks 0..N-1 of one communicator (adaspa.comm):\n" ..
    "  RANK / WORLD_SIZE / LOCAL_RANK (and ADASPA_*), ADASPA_COMM and OMP_NUM_THREADS (cores / N) are set.\n" ..
    "  Rank 0's output passes through, the others' standard error is prefixed [rank r] (--all-output: their\n" ..
    "  standard output too); Ctrl-C is forwarded; a failing rank ends the others (--grace S, 10, then SIGTERM);\n" ..
    "  the exit status is the first failing rank's. Models with sequence parallelism: hunyuan, wan\n" ..
    "  (adaspa.parallel: Ulysses; heads rebalanced by kept blocks after each search).\n" ..
    "  --nccl (or ADASPA_COMM_DEVICE=nccl): collectives of GPU tensors go by NCCL (a build with it: CUDA=1 and\n" ..
    "  nccl.h found), rank r on one GPU (CUDA_VISIBLE_DEVICES: the r-th of the launcher's, or r).",
}

-- adaspa help [COMMAND] (also adaspa --help).
function cli.help(topic, ...)
  if topic == nil then
    print(cli.usage)
    return 0
  end
  local t = cli.topics[topic]
  if not t or select("#", ...) > 0 then
    local names = {}
    for k in pairs(cli.topics) do names[#names + 1] = k end
    table.sort(names)
    io.stderr:write(string.format("adaspa help: no help on %s (commands: %s)\n", tostring(topic), table.concat(names, ", ")))
    return 1
  end
  print(t)
  return 0
end

local commands = {devices = cli.devices, recipe = cli.recipe, weights = cli.weights, help = cli.help, run = cli.run}

function cli.main(name, ...)
  local fn = commands[name]
  if not fn then
    local names = {}
    for k in pairs(commands) do names[#names + 1] = k end
    table.sort(names)
    io.stderr:write(string.format("adaspa: unknown command or missing file '%s' (commands: %s; scripts end in .lua; " ..
      "adaspa help lists them)\n", tostring(name), table.concat(names, ", ")))
    return 1
  end
  return fn(...) or 0
end

return cli
