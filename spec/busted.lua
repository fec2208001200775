-- Runs the busted specs inside the adaspa host:  build/adaspa spec/busted.lua [busted args]
-- Default: every spec/*_spec.lua, reported by spec/support/summary.lua, whose last line is
-- "N passed, N failed, N skipped". GPU specs (tagged "gpu") are skipped without a GPU.
local args = {}
for i = 1, #arg do args[i] = arg[i] end
local has_output, has_root = false, false
for _, a in ipairs(args) do
  if a == "-o" or a:match("^%-%-output") then has_output = true end
  if not a:match("^%-") then has_root = true end
end
if not has_output then table.insert(args, 1, "spec/support/summary.lua"); table.insert(args, 1, "-o") end
if not has_root then args[#args + 1] = "spec" end
args[#args + 1] = "--pattern=_spec"
args[#args + 1] = "--helper=spec/support/helpers.lua"
for i = 1, math.max(#arg, #args) do arg[i] = args[i] end
-- Called from a string chunk so busted ends the process with os.exit(code, true), which closes
-- the Lua state (every tensor is released: the leak checker of the asan build sees no leak).
assert(loadstring("require 'busted.runner'({ standalone = false })", "=busted"))()
