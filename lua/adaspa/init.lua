-- adaspa: the Lua face of the runtime. Scripts see it as the global `adaspa` (the host sets it)
-- and as require "adaspa". The C module adaspa.core provides tensors and devices; the Lua
-- modules under adaspa/ add the rest.
local core = require "adaspa.core"

local adaspa = {}
for k, v in pairs(core) do adaspa[k] = v end
adaspa.core = core
adaspa.home = rawget(_G, "ADASPA_HOME")

-- "adaspa 0.1.0 (LuaJIT 2.1.0-beta3; backends: cpu, cuda; GPUs: 1)"
function adaspa.version_string()
  local gpus = adaspa.cuda.available() and #adaspa.cuda.devices() or 0
  return string.format("adaspa %s (%s; backends: %s; GPUs: %d)", adaspa.version,
    jit and jit.version or _VERSION, table.concat(adaspa.backends(), ", "), gpus)
end

local function fmt_num(v, dtype)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
  if dtype:sub(1, 1) ~= "f" and dtype ~= "bf16" then return string.format("%d", v) end
  return string.format("%.4g", v)
end

-- A multi-line picture of a tensor: its header, then the values of the last two dimensions of
-- the first matrix (at most 8 rows and 8 columns shown).
function adaspa.pretty(t)
  local shape, dtype = t:shape(), t:dtype()
  local head = string.format("tensor #%d %s [%s] %s", t:id(), dtype, table.concat(shape, ", "), t:device())
  local nd = #shape
  local view = t
  for d = 1, nd - 2 do view = view:narrow(d, 1, 1) end
  local rows = nd >= 2 and shape[nd - 1] or 1
  local cols = nd >= 1 and shape[nd] or 1
  local rshow, cshow = math.min(rows, 8), math.min(cols, 8)
  if nd >= 2 then view = view:narrow(nd - 1, 1, rshow) end
  if nd >= 1 then view = view:narrow(nd, 1, cshow) end
  local vals = view:to("cpu"):contiguous():reshape({rshow * cshow}):totable()
  local lines = {head}
  if nd > 2 then lines[#lines + 1] = string.format("  (first of %d matrices)", t:numel() / (rows * cols)) end
  for r = 1, rshow do
    local cells = {}
    for c = 1, cshow do cells[c] = string.format("%10s", fmt_num(vals[(r - 1) * cshow + c], dtype)) end
    if cshow < cols then cells[#cells + 1] = "  ..." end
    lines[#lines + 1] = table.concat(cells, " ")
  end
  if rshow < rows then lines[#lines + 1] = "  ..." end
  return table.concat(lines, "\n")
end

local function show(v, depth, seen)
  if adaspa.is_tensor(v) then
    if v:is_freed() then return tostring(v) end
    return adaspa.pretty(v)
  end
  if type(v) == "string" then return depth > 0 and string.format("%q", v) or v end
  if type(v) ~= "table" then return tostring(v) end
  if seen[v] or depth > 3 then return tostring(v) end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = show(v[i], depth + 1, seen) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local ks = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or "[" .. show(k, depth + 1, seen) .. "]"
    parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1, seen)
    if #parts > 64 then parts[#parts + 1] = "..."; break end
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- How the REPL prints the values of an expression.
function adaspa.repl_print(...)
  local n = select("#", ...)
  local out = {}
  for i = 1, n do out[i] = show((select(i, ...)), 0, {}) end
  io.write(table.concat(out, "\t"), "\n")
end

adaspa.show = function(v) return show(v, 0, {}) end

return adaspa
