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

function cli.recipe(file, ...)
  local ok, recipe = pcall(require, "adaspa.recipe")
  if not ok then
    io.stderr:write("adaspa recipe: the recipe runner is not part of this build yet (", tostring(recipe), ")\n")
    return 1
  end
  return recipe.main(file, ...)
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

local commands = {devices = cli.devices, recipe = cli.recipe, weights = cli.weights}

function cli.main(name, ...)
  local fn = commands[name]
  if not fn then
    local names = {}
    for k in pairs(commands) do names[#names + 1] = k end
    table.sort(names)
    io.stderr:write(string.format("adaspa: unknown command or missing file '%s' (commands: %s; scripts end in .lua)\n",
      name, table.concat(names, ", ")))
    return 1
  end
  return fn(...) or 0
end

return cli
