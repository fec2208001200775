-- adaspa.json: encode Lua values as JSON (reports). Tables with only keys 1..n become arrays,
-- others objects with sorted keys; NaN and infinities become null; cycles are an error.
local json = {}

local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}

local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return escapes[c] or string.format("\\u%04x", c:byte()) end) .. '"'
end

local function encode(v, indent, depth, seen)
  local t = type(v)
  if v == nil then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    return string.format("%.10g", v)
  end
  if t == "string" then return str(v) end
  if t ~= "table" then return str(tostring(v)) end
  if seen[v] then error("json.encode: cycle in table", 0) end
  seen[v] = true
  local n, count = #v, 0
  for _ in pairs(v) do count = count + 1 end
  local pad = indent and ("\n" .. string.rep(indent, depth + 1)) or ""
  local close = indent and ("\n" .. string.rep(indent, depth)) or ""
  local sep = indent and ": " or ":"
  local parts = {}
  local out
  if count == n and (n > 0 or next(v) == nil) then
    for i = 1, n do parts[i] = pad .. encode(v[i], indent, depth + 1, seen) end
    out = n == 0 and "[]" or "[" .. table.concat(parts, ",") .. close .. "]"
  else
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for i, k in ipairs(keys) do
      local val = v[k]
      if val == nil then val = v[tonumber(k)] end
      parts[i] = pad .. str(k) .. sep .. encode(val, indent, depth + 1, seen)
    end
    out = "{" .. table.concat(parts, ",") .. close .. "}"
  end
  seen[v] = nil
  return out
end

-- json.encode(value [, indent]): indent "  " gives a readable multi-line document.
function json.encode(v, indent) return encode(v, indent, 0, {}) end

return json
