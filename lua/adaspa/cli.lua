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

local commands = {devices = cli.devices, recipe = cli.recipe}

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
