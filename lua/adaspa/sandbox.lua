-- adaspa.sandbox: the Lua environment a recipe runs in (the README's "Security: the recipe
-- sandbox" says what it allows). sandbox.new() -> env: a fresh environment per recipe:
--   - its own copies of the pure libraries (string without dump, table, math, bit, coroutine,
--     os.clock/time/date/difftime); changing them changes nothing outside this recipe;
--   - no io, debug, jit, ffi, package loaders, getfenv/setfenv, loadfile/dofile, newproxy,
--     os.getenv/execute/remove/rename/exit (reading one raises "recipe sandbox: ...");
--   - xpcall's handler called after the error unwound (as pcall's caller would);
--   - load/loadstring of text only (a binary chunk is refused), bound to this environment, its
--     functions run interpreted (jit.off, as the recipe file's: hooks reach their loops);
--   - getmetatable/setmetatable only on tables whose metatable this recipe set (a userdata's
--     metatable reads as a copy holding only its __name; a string's is refused);
--   - collectgarbage("collect" | "count" | "step") only;
--   - require: "adaspa" is a copy of the library without adaspa.core, adaspa.outdir and
--     adaspa.sandbox, plus adaspa.output_path(name); "adaspa.<module>" (policies, models,
--     pictures, quality, ...) is this recipe's own instance of that Lua module, loaded from the
--     installed library into this environment; the runner's modules (adaspa.recipe, .cli,
--     .jobs.*, .sandbox) and everything else are refused.
-- Files are confined in C (runtime/io/outdir.h): while a recipe runs, every adaspa writer writes
-- only into the run's output folder and every reader reads only what the user named.
local core = require "adaspa.core"

local sandbox = {}

-- The folder holding adaspa/ (this file's own location, not package.path).
local lua_dir = debug.getinfo(1, "S").source:match("^@(.*)/adaspa/sandbox%.lua$") or "."
sandbox.lua_dir = lua_dir

-- package.path that finds only the installed library (the runner sets it while a recipe runs).
function sandbox.library_path()
  return lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua"
end

local function refuse(what, level)
  error("recipe sandbox: " .. what .. " is not available to recipes", (level or 1) + 1)
end

local function copy(t, skip)
  local c = {}
  for k, v in pairs(t) do if not (skip and skip[k]) then c[k] = v end end
  return c
end

-- A table that raises a clear error when one of the listed names is read.
local function guarded(t, what, names)
  local blocked = {}
  for _, n in ipairs(names) do blocked[n] = true end
  return setmetatable(t, {
    __index = function(_, k) if blocked[k] then refuse(what .. tostring(k), 2) end end,
    __metatable = "recipe sandbox",
  })
end

-- Deep copy of a library table: tables copied (cycles kept), functions and userdata shared.
local function copy_lib(t, seen)
  seen = seen or {}
  if seen[t] then return seen[t] end
  local c = {}
  seen[t] = c
  for k, v in pairs(t) do c[k] = type(v) == "table" and copy_lib(v, seen) or v end
  return c
end

-- The adaspa library as a recipe sees it.
local function facade()
  local real = require "adaspa"
  local f = copy_lib(real)
  f.core, f.outdir, f.sandbox = nil, nil, nil
  local active = core.sandbox.active
  -- output_path(name): NAME inside the run's output folder (output_path() is the folder)
  function f.output_path(name)
    local _, dir = active()
    if not dir then
      error("adaspa.output_path: no output folder is open yet (it opens when the run starts, after the recipe file has loaded)", 2)
    end
    if name == nil then return dir end
    if type(name) ~= "string" then error("adaspa.output_path: name must be a string, got " .. type(name), 2) end
    return dir .. "/" .. name
  end
  return f
end

local runner_modules = {["adaspa.recipe"] = true, ["adaspa.cli"] = true, ["adaspa.sandbox"] = true, ["adaspa.core"] = true,
                        ["adaspa.video_out"] = true}

local function packed(...) return select("#", ...), {...} end

function sandbox.new()
  local env = {}
  local mine = setmetatable({}, {__mode = "k"}) -- tables whose metatable this recipe set
  local loaded = {}

  env._VERSION = _VERSION
  for _, k in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal", "rawget",
                      "rawset", "select", "tonumber", "tostring", "type", "unpack"}) do
    env[k] = _G[k]
  end
  -- xpcall's handler runs once the error has unwound (a recipe has no debug to see the stack it
  -- left), never inside the raise: raised by a hook (recipe.load's bounds, Ctrl-C), it would run
  -- inside the hook, where no hook reaches its loops
  function env.xpcall(f, handler, ...)
    if type(handler) ~= "function" then error("bad argument #2 to 'xpcall' (function expected, got " .. type(handler) .. ")", 2) end
    local n, res = packed(pcall(f, ...))
    if res[1] then return unpack(res, 1, n) end
    return false, handler(res[2])
  end
  env.string = guarded(copy(string, {dump = true}), "string.", {"dump"})
  env.table, env.math, env.bit, env.coroutine = copy(table), copy(math), copy(bit), copy(coroutine)
  env.os = guarded({clock = os.clock, time = os.time, date = os.date, difftime = os.difftime}, "os.",
    {"execute", "exit", "getenv", "remove", "rename", "tmpname", "setlocale"})
  env.package = guarded({loaded = loaded}, "package.", {"path", "cpath", "loadlib", "loaders", "preload", "searchpath", "seeall"})

  function env.getmetatable(x)
    local tx = type(x)
    if tx == "table" then
      local mt = getmetatable(x)
      if mt == nil or mine[x] then return mt end
      refuse("the metatable of a library table", 2)
    elseif tx == "userdata" then
      local mt = getmetatable(x)
      return {__name = type(mt) == "table" and rawget(mt, "__name") or nil} -- a copy: reading only
    elseif tx == "string" then
      refuse("the string metatable", 2)
    end
    return nil
  end

  function env.setmetatable(t, mt)
    if type(t) ~= "table" then error("setmetatable: argument 1 must be a table, got " .. type(t), 2) end
    if mt ~= nil and type(mt) ~= "table" then error("setmetatable: argument 2 must be a table or nil, got " .. type(mt), 2) end
    if getmetatable(t) ~= nil and not mine[t] then refuse("setmetatable on a library table", 2) end
    setmetatable(t, mt)
    mine[t] = mt ~= nil or nil
    return t
  end

  function env.load(chunk, name, mode, fenv)
    if mode ~= nil and mode ~= "t" then
      error("recipe sandbox: load: only text chunks can be loaded (mode \"t\"), got mode " .. tostring(mode), 2)
    end
    if type(chunk) ~= "string" and type(chunk) ~= "function" then
      error("load: chunk must be a string or a function, got " .. type(chunk), 2)
    end
    if fenv ~= nil and type(fenv) ~= "table" then error("load: env must be a table, got " .. type(fenv), 2) end
    if type(chunk) == "string" and chunk:byte(1) == 27 then
      return nil, "recipe sandbox: binary (bytecode) chunks are refused; load text"
    end
    local f, err = load(chunk, name, "t", fenv or env)
    if not f and tostring(err):find("wrong mode", 1, true) then err = "recipe sandbox: binary (bytecode) chunks are refused; load text" end
    if f then jit.off(f, true) end -- the recipe's code runs interpreted, where hooks reach its loops (recipe.load)
    return f, err
  end
  function env.loadstring(s, name) return env.load(s, name, "t") end

  function env.collectgarbage(opt, arg)
    opt = opt or "collect"
    if opt == "collect" or opt == "count" or opt == "step" then return collectgarbage(opt, arg) end
    error("recipe sandbox: collectgarbage(\"" .. tostring(opt) .. "\") is not available to recipes (collect, count and step are)", 2)
  end

  function env.require(name)
    if type(name) ~= "string" then error("require: module name must be a string, got " .. type(name), 2) end
    local v = loaded[name]
    if v ~= nil then
      if v == loaded then error("require: module " .. name .. " requires itself (a loop)", 2) end
      return v
    end
    if name == "adaspa" then
      v = facade()
    elseif runner_modules[name] or name:match("^adaspa%.jobs%.") or name == "adaspa.jobs" then
      refuse("module " .. name, 2)
    elseif name:match("^adaspa%.[%a_][%w_]*$") or name:match("^adaspa%.[%a_][%w_]*%.[%a_][%w_]*$") then
      local rel = name:sub(8):gsub("%.", "/")
      local src, file
      for _, cand in ipairs({lua_dir .. "/adaspa/" .. rel .. ".lua", lua_dir .. "/adaspa/" .. rel .. "/init.lua"}) do
        local fh = io.open(cand, "rb")
        if fh then
          src, file = fh:read("*a"), cand
          fh:close()
          break
        end
      end
      if not src then error("require: no adaspa module " .. name, 2) end
      local chunk, err = load(src, "@" .. file, "t", env)
      if not chunk then error(err, 0) end
      loaded[name] = loaded -- loading
      local ok, res = pcall(chunk, name)
      loaded[name] = nil
      if not ok then error(res, 0) end
      v = res == nil and true or res
    else
      error("recipe sandbox: require of " .. name .. " is not allowed (only adaspa modules)", 2)
    end
    loaded[name] = v
    return v
  end

  env.adaspa = env.require("adaspa")
  env._G = env
  return guarded(env, "", {"io", "debug", "jit", "ffi", "getfenv", "setfenv", "loadfile", "dofile", "newproxy",
                           "module", "gcinfo"})
end

return sandbox
