-- adaspa.recipe: load a recipe in a sandbox, fill defaults, apply command-line overrides,
-- validate every field, then hand the configuration to a job.
--
-- A recipe is a Lua file that returns a table. Fields are described by a schema: a table of
-- field specs { type = "number"|"integer"|"string"|"boolean"|"list"|"table"|"any",
-- default = v, check = function(v, cfg) -> nil or "what is wrong", doc = "..." } or nested
-- schemas (plain tables without a `type`). Unknown fields are errors; so are wrong types and
-- values a check rejects. Every message names the recipe file, the field path and the value.
local recipe = {}

-- ---- values ------------------------------------------------------------------------------------

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = show(x) end
    local keys = {}
    for k in pairs(v) do if type(k) ~= "number" or k < 1 or k > #v or k % 1 ~= 0 then keys[#keys + 1] = k end end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      parts[#parts + 1] = (type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k) .. "]") .. " = " .. show(v[k])
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return tostring(v)
end
recipe.show = show

-- Parses the value of a command-line override: true/false, nil, numbers, lists ({1,2} or
-- 1,2), quoted or plain strings.
function recipe.parse_value(s)
  if s == "true" then return true elseif s == "false" then return false end
  if s == "nil" or s == "none" then return nil end
  local n = tonumber(s)
  if n then return n end
  local q = s:match('^"(.*)"$') or s:match("^'(.*)'$")
  if q then return q end
  local body = s:match("^{(.*)}$")
  if body or s:find(",", 1, true) then
    local list = {}
    body = body or s
    for item in body:gmatch("[^,]+") do
      item = item:match("^%s*(.-)%s*$")
      if item ~= "" then list[#list + 1] = recipe.parse_value(item) end
    end
    return list
  end
  return s
end

-- Splits "a.b.c=value" into {"a","b","c"}, value. Returns nil, message when malformed.
function recipe.parse_override(arg)
  local path, value = arg:match("^([%w_%.]+)=(.*)$")
  if not path then return nil, string.format("override %q is not of the form path.to.field=value", arg) end
  local keys = {}
  for k in path:gmatch("[^%.]+") do keys[#keys + 1] = k end
  if #keys == 0 or path:find("..", 1, true) or path:sub(1, 1) == "." or path:sub(-1) == "." then
    return nil, string.format("override %q has a malformed field path", arg)
  end
  return keys, recipe.parse_value(value)
end

-- Sets cfg[k1][k2]... = value, creating tables on the way.
function recipe.set_path(cfg, keys, value)
  local t = cfg
  for i = 1, #keys - 1 do
    if type(t[keys[i]]) ~= "table" then t[keys[i]] = {} end
    t = t[keys[i]]
  end
  t[keys[#keys]] = value
end

-- ---- validation ---------------------------------------------------------------------------------

local function is_field(spec) return type(spec) == "table" and type(spec.type) == "string" end

local function type_ok(ftype, v)
  if ftype == "any" then return true end
  if ftype == "integer" then return type(v) == "number" and v == math.floor(v) end
  if ftype == "list" then return type(v) == "table" end
  if ftype == "table" then return type(v) == "table" end
  return type(v) == ftype
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return ks
end

-- Fills defaults and checks types and values of cfg against schema, in place. `where` names the
-- recipe file. Raises an error naming the file, the field and the value.
function recipe.validate(cfg, schema, where, root, prefix)
  root = root or cfg
  prefix = prefix or ""
  for k, v in pairs(cfg) do
    if schema[k] == nil then
      error(string.format("%s: unknown field %s%s = %s (known in %s: %s)", where, prefix, tostring(k), show(v),
        prefix == "" and "the recipe" or prefix:sub(1, -2), table.concat(sorted_keys(schema), ", ")), 0)
    end
  end
  for k, spec in pairs(schema) do
    local path = prefix .. k
    if is_field(spec) then
      if cfg[k] == nil and spec.default ~= nil then
        local d = spec.default
        if type(d) == "table" then
          local c = {}
          for i, x in pairs(d) do c[i] = x end
          d = c
        end
        cfg[k] = d
      end
      local v = cfg[k]
      if spec.type == "list" and v ~= nil and type(v) ~= "table" then
        v = {v} -- a single value where a list is expected: search=10 means {10}
        cfg[k] = v
      end
      if v ~= nil and not type_ok(spec.type, v) then
        error(string.format("%s: field %s must be %s %s, got %s (%s)", where, path,
          spec.type == "integer" and "an" or "a", spec.type, show(v), type(v)), 0)
      end
      if v == nil and spec.required then
        error(string.format("%s: field %s is required (%s)", where, path, spec.doc or spec.type), 0)
      end
    else
      if cfg[k] == nil then cfg[k] = {} end
      if type(cfg[k]) ~= "table" then
        error(string.format("%s: field %s must be a table, got %s", where, path, show(cfg[k])), 0)
      end
      recipe.validate(cfg[k], spec, where, root, path .. ".")
    end
  end
  -- value checks run after every default is in place, so they may look at other fields
  if prefix == "" then recipe.check(cfg, schema, where, root, "") end
  return cfg
end

function recipe.check(cfg, schema, where, root, prefix)
  for k, spec in pairs(schema) do
    local path = prefix .. k
    if is_field(spec) then
      if spec.check and cfg[k] ~= nil then
        local problem = spec.check(cfg[k], root)
        if problem then error(string.format("%s: field %s = %s: %s", where, path, show(cfg[k]), problem), 0) end
      end
    else
      recipe.check(cfg[k], spec, where, root, path .. ".")
    end
  end
end

-- ---- sandbox -------------------------------------------------------------------------------------

-- Where sandboxed code may write (the running job's output folder); nil: nowhere.
recipe.write_root = nil

-- Raises unless path lies inside recipe.write_root.
function recipe.check_write(fname, path)
  if type(path) ~= "string" then error(fname .. ": path must be a string", 3) end
  local root = recipe.write_root
  if not root then
    error(string.format("%s: recipes may write only into the run's output folder (writing %s)", fname, path), 3)
  end
  local prefix = root:gsub("/+$", "") .. "/"
  if path:sub(1, #prefix) ~= prefix or path:find("/../", 1, true) or path:sub(-3) == "/.." then
    error(string.format("%s: recipes may write only into the run's output folder %s (writing %s)", fname, root, path), 3)
  end
end

-- The adaspa library as recipes see it: the same, except that functions writing files check
-- recipe.write_root, and the cache (whose save writes anywhere) is left out.
local function sandboxed_adaspa(adaspa)
  local st = setmetatable({save = function(path, ...)
    recipe.check_write("adaspa.safetensors.save", path)
    return adaspa.safetensors.save(path, ...)
  end}, {__index = adaspa.safetensors})
  local png = setmetatable({write = function(path, ...)
    recipe.check_write("adaspa.png.write", path)
    return adaspa.png.write(path, ...)
  end}, {__index = adaspa.png})
  local proxy = {safetensors = st, png = png, Cache = false,
    mkdir = function(path) recipe.check_write("adaspa.mkdir", path .. "/x"); return adaspa.mkdir(path) end}
  return setmetatable({}, {__index = function(_, k)
    local v = proxy[k]
    if v == false then error("recipe sandbox: adaspa." .. k .. " is not available to recipes", 2) end
    if v ~= nil then return v end
    return adaspa[k]
  end})
end

-- The environment a recipe runs in: the adaspa library (file writes confined to the output
-- folder) and pure Lua libraries; no io, no os.execute/remove/rename/exit, no loadfile/dofile;
-- require only of adaspa modules.
function recipe.sandbox(adaspa)
  local env = {
    adaspa = sandboxed_adaspa(adaspa), assert = assert, error = error, ipairs = ipairs, pairs = pairs, next = next,
    pcall = pcall, xpcall = xpcall, print = print, select = select, tonumber = tonumber,
    tostring = tostring, type = type, unpack = unpack, setmetatable = setmetatable,
    getmetatable = getmetatable, rawget = rawget, rawset = rawset, rawequal = rawequal,
    math = math, string = string, table = table, bit = bit,
    os = {clock = os.clock, time = os.time, date = os.date, getenv = os.getenv},
  }
  env.require = function(name)
    if type(name) ~= "string" or not (name == "adaspa" or name:match("^adaspa%.")) then
      error("recipe sandbox: require of " .. tostring(name) .. " is not allowed (only adaspa modules)", 2)
    end
    return require(name)
  end
  env._G = env
  return env
end

-- Finds a recipe: an existing path, else NAME or NAME.lua under ./recipes and the installed
-- recipes folder (adaspa.home/recipes).
function recipe.find(name, home)
  local function exists(p)
    local f = io.open(p, "r")
    if f then f:close() return true end
    return false
  end
  if exists(name) then return name end
  local candidates = {}
  local base = name:gsub("%.lua$", "")
  for _, dir in ipairs({"recipes", home and (home .. "/recipes") or nil}) do
    candidates[#candidates + 1] = dir .. "/" .. base .. ".lua"
  end
  for _, c in ipairs(candidates) do
    if exists(c) then return c end
  end
  return nil, string.format("no recipe %q (looked for %s)", name, table.concat(candidates, ", "))
end

-- Loads a recipe file in the sandbox; returns its table.
function recipe.load(path, adaspa)
  local chunk, err = loadfile(path)
  if not chunk then error(err, 0) end
  setfenv(chunk, recipe.sandbox(adaspa))
  local ok, value = pcall(chunk)
  if not ok then error(value, 0) end
  if type(value) ~= "table" then
    error(string.format("%s: a recipe must return a table, got %s", path, type(value)), 0)
  end
  return value
end

-- adaspa recipe FILE [path=value ...]: load, override, validate, run the recipe's job.
function recipe.main(file, ...)
  local adaspa = require "adaspa"
  if not file then
    io.stderr:write("usage: adaspa recipe FILE [path.to.field=value ...]\n")
    return 1
  end
  local path, err = recipe.find(file, adaspa.home)
  if not path then
    io.stderr:write("adaspa recipe: ", err, "\n")
    return 1
  end
  local ok, result = pcall(function(...)
    local cfg = recipe.load(path, adaspa)
    for _, a in ipairs({...}) do
      local keys, value = recipe.parse_override(a)
      if not keys then error(path .. ": " .. value, 0) end
      recipe.set_path(cfg, keys, value)
    end
    local job = cfg.job or "video"
    local ok_job, runner = pcall(require, "adaspa.jobs." .. tostring(job))
    if not ok_job then
      error(string.format("%s: unknown job %s (%s)", path, show(job), tostring(runner)), 0)
    end
    cfg.job = nil
    recipe.validate(cfg, runner.schema, path)
    return runner.run(cfg, {recipe = path, name = path:match("([^/]+)%.lua$") or path})
  end, ...)
  if not ok then
    io.stderr:write("adaspa recipe: ", tostring(result), "\n")
    return 1
  end
  return result or 0
end

return recipe
