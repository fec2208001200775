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

-- The environment a recipe runs in (adaspa.sandbox: own library copies, no io/os/debug/package,
-- text-only load, require of sandbox instances of adaspa modules only). The argument is unused
-- (kept for callers that passed the library).
function recipe.sandbox()
  return require("adaspa.sandbox").new()
end

-- The message of an error value, without calling any of its metamethods (a recipe's error
-- object may carry a __tostring of its own).
local function message_of(err)
  if type(err) == "string" then return err end
  if type(err) == "number" then return tostring(err) end
  return "(error object is a " .. type(err) .. " value)"
end
recipe.message_of = message_of

-- A plain copy of the recipe's table: tables without a metatable are copied (so the values the
-- runner validates are the values the job uses: no __index of the recipe's answers differently
-- later), tables with one (policy objects) and functions are kept as they are.
local function snapshot(v, seen, depth)
  if type(v) ~= "table" or getmetatable(v) ~= nil then return v end
  if seen[v] then return seen[v] end
  if depth > 32 then error("the recipe's table nests deeper than 32 levels", 0) end
  local c = {}
  seen[v] = c
  local k, x = next(v)
  while k ~= nil do
    c[snapshot(k, seen, depth + 1)] = snapshot(x, seen, depth + 1)
    k, x = next(v, k)
  end
  return c
end

local function recipe_folder(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- Loads a recipe file (text only, never bytecode) in a fresh sandbox; returns a plain copy of
-- its table. While the chunk runs, nothing may be written and only .safetensors/.png files
-- in the recipe's folder may be read. (Functions the recipe defines stay confined only while
-- a confinement is active: the runner, recipe.run, keeps one over the whole run.)
-- Bounds of a recipe file's chunk (until it returns its table): wall time and Lua memory.
recipe.load_limits = {seconds = 10, lua_mib = 512}

local function load_recipe(path)
  local adaspa = require "adaspa"
  local fh, oerr = io.open(path, "rb")
  if not fh then error(string.format("%s: cannot open the recipe: %s", path, tostring(oerr)), 0) end
  local src = fh:read("*a")
  fh:close()
  if src:byte(1) == 27 then error(path .. ": a recipe must be Lua source; bytecode is refused", 0) end
  local chunk, err = load(src, "@" .. path, "t", recipe.sandbox())
  if not chunk then error(err, 0) end
  local guard
  if not adaspa.sandbox.active() then
    guard = adaspa.sandbox.begin()
    guard:allow_read(recipe_folder(path), true)
  end
  -- The recipe's functions (its chunk and every function it defines, policy callbacks too) run in
  -- the interpreter, so that hooks reach every loop: Ctrl-C's, and the bound of the chunk below.
  jit.off(chunk, true)
  local lim = recipe.load_limits
  local t0, kb0 = adaspa.now(), collectgarbage("count")
  local mem_msg = string.format("%s: the recipe took over %d MiB of Lua memory without returning its table", path, lim.lua_mib)
  -- Past a bound, every instruction but this function's raises the message, so a pcall of the
  -- recipe's cannot catch it for good; large allocations past the memory bound fail at once (in C).
  local over
  local function hook()
    if over then
      if debug.getinfo(2, "f").func ~= load_recipe then error(over, 0) end
      return
    end
    if adaspa.now() - t0 > lim.seconds then
      over = string.format("%s: the recipe ran for over %g s without returning its table (a recipe describes a run; "
        .. "work belongs in the job)", path, lim.seconds)
    elseif collectgarbage("count") - kb0 > lim.lua_mib * 1024 then
      over = mem_msg
    end
    if over then
      debug.sethook(hook, "", 1)
      error(over, 0)
    end
  end
  adaspa.sandbox.lua_memory_cap(lim.lua_mib * 2 ^ 20)
  debug.sethook(hook, "", 10000)
  local ok, value = pcall(chunk)
  debug.sethook()
  adaspa.sandbox.lua_memory_cap(nil)
  if ok then
    if type(value) ~= "table" then
      ok, value = false, string.format("%s: a recipe must return a table, got %s", path, type(value))
    else
      ok, value = pcall(snapshot, value, {}, 0)
    end
  end
  if not ok then value = over or (value == "not enough memory" and mem_msg) or message_of(value) end
  if guard then guard:finish() end
  if not ok then error(value, 0) end
  return value
end
recipe.load = load_recipe

-- The jobs a recipe may name (job = "..."), and the fields of each that name files to read
-- (allowed for reading while the recipe runs; a job module may list its own as .inputs).
recipe.jobs = {
  video = {"model.weights", "text.embeds"},
  compare = {"model.weights", "text.embeds"},
  replay = {"trace"},
}

local function get_path(cfg, dotted)
  local v = cfg
  for k in dotted:gmatch("[^%.]+") do
    if type(v) ~= "table" then return nil end
    v = v[k]
  end
  return v
end

-- Allows reading what an input field names: a file; a list of files (shards); a folder of
-- shards (its .safetensors files and the index files adaspa.weights looks for); an index file
-- (it and the .safetensors files beside it).
local function allow_input(guard, v)
  if type(v) == "table" then
    for _, p in ipairs(v) do allow_input(guard, p) end
    return
  end
  if type(v) ~= "string" or v == "" then return end
  local weights = require "adaspa.weights"
  if weights.is_dir(v) then
    local dir = v:gsub("/+$", "")
    if dir == "" then dir = "/" end
    guard:allow_read(dir, true)
    for _, n in ipairs(weights.INDEX_NAMES) do pcall(guard.allow_read, guard, dir .. "/" .. n) end
    return
  end
  guard:allow_read(v)
  if v:match("%.index%.json$") then pcall(guard.allow_read, guard, v:match("^(.*)/[^/]*$") or ".", true) end
end

-- The output folder of a job run: the one the runner opened (job.outdir), else (a job called
-- directly, e.g. from a script) cfg.output.dir (new, empty or a previous run's, which is
-- cleared) or a fresh out/<name>-<time>. Returns the adaspa.outdir handle.
function recipe.output_folder(cfg, job)
  if job and job.outdir then return job.outdir end
  local adaspa = require "adaspa"
  local dir = cfg.output and cfg.output.dir
  if dir then return (adaspa.outdir.open(dir, "reuse")) end
  return (adaspa.outdir.open(string.format("out/%s-%s", job and job.name or "run", os.date("%Y%m%d-%H%M%S")), "fresh"))
end

-- Checks output.dir when the recipe file (not the command line) names it: a relative path
-- without "..", so that a recipe cannot aim its outputs at a folder of the user's elsewhere.
local function check_recipe_dir(dir, path)
  if dir == "" or dir:sub(1, 1) == "/" or dir:sub(1, 1) == "~" or ("/" .. dir .. "/"):find("/../", 1, true) then
    error(string.format("%s: field output.dir = %s: a recipe file may name only a relative folder without '..' "
      .. "(any folder may be given on the command line: output.dir=PATH)", path, show(dir)), 0)
  end
end

-- The job a loaded recipe names (cfg.job, default "video") and its module; an unknown job is an
-- error listing the known ones (nothing is required for it).
function recipe.job_of(cfg, path)
  local job = cfg.job == nil and "video" or cfg.job
  if type(job) ~= "string" or not recipe.jobs[job] then
    local names = {}
    for n in pairs(recipe.jobs) do names[#names + 1] = n end
    table.sort(names)
    error(string.format("%s: unknown job %s (jobs: %s)", path, show(job), table.concat(names, ", ")), 0)
  end
  return job, require("adaspa.jobs." .. job)
end

-- The confinement of a run's step 1 below: no writes; reads of .safetensors/.png files in the
-- recipe's folder; package.path the installed library only, package.cpath nothing. Calls
-- body(guard) inside it; on an error, on_error(err) (if given) runs still confined and its
-- result replaces the error. Ends the confinement and restores the paths; returns pcall's
-- results as a list with n.
local function confine(path, body, on_error)
  local adaspa = require "adaspa"
  local guard = adaspa.sandbox.begin()
  local saved_path, saved_cpath = package.path, package.cpath
  package.path, package.cpath = require("adaspa.sandbox").library_path(), ""
  local function pack(...) return {n = select("#", ...), ...} end
  local res = pack(pcall(function()
    guard:allow_read(recipe_folder(path), true)
    return body(guard)
  end))
  if not res[1] and on_error then res[2] = on_error(res[2]) end
  guard:finish()
  package.path, package.cpath = saved_path, saved_cpath
  return res
end

-- Calls fn(...) confined as a run's step 1 below (no writes; reads of .safetensors/.png files in
-- the recipe's folder; package.path the installed library only, package.cpath nothing), for
-- trusted code that loads a recipe (recipe.load) and looks into its values: the recipe's functions
-- and metamethods that this runs stay confined. Returns true and fn's results, or false and the
-- error message (never calling a metamethod of the error object).
function recipe.confined(path, fn, ...)
  local n, args = select("#", ...), {...}
  local res = confine(path, function() return fn(unpack(args, 1, n)) end)
  if not res[1] then return false, message_of(res[2]) end
  return unpack(res, 1, res.n)
end

-- Runs the recipe file path with the overrides (a list of "path.to.field=value" strings) in the
-- sandbox, confined from before its first line to after its job's last output:
--   1. a confinement starts: no writes; reads of .safetensors/.png files in the recipe's
--      folder (not its subfolders); package.path finds only the installed library, package.cpath nothing;
--   2. the recipe file runs in a fresh sandbox; its table is copied; overrides apply; the job
--      is one of recipe.jobs; every field is validated;
--   3. the files its input fields name (model.weights, text.embeds, trace) may be read;
--   4. the output folder opens: output.dir from the command line (new, empty, or a previous
--      adaspa run's, whose files are removed), output.dir from the recipe file (relative, no
--      "..", new or empty), else a fresh out/<name>-<time>; writes go there only;
--      (several processes, adaspa launch: ranks other than 0 write to a scratch folder under
--      $TMPDIR that is removed after the run, so the outputs are written once, by rank 0);
--   5. the job runs; on failure the folder is removed if the runner created it and nothing was
--      written, else error.txt in it says what failed;
--   6. the confinement ends; the thread count (adaspa.threads) is restored.
-- opts: say (printf-like, for the "previous run removed" line), warn (printf-like, for an override that does
-- nothing: an attention option the policy's inert() names, e.g. attention.sparsity beside a recall target).
-- Returns true, the job's exit
-- code and its result, or false and the error message.
function recipe.run(path, overrides, opts)
  local adaspa = require "adaspa"
  opts = opts or {}
  overrides = overrides or {}
  local threads = adaspa.threads() -- the recipe may set the thread count for its run only
  local out, scratch
  local rank = adaspa.comm.world():rank()
  local res = confine(path, function(guard)
    local cfg = recipe.load(path)
    local from_cli = {}
    for _, a in ipairs(overrides) do
      local keys, value = recipe.parse_override(a)
      if not keys then error(path .. ": " .. value, 0) end
      recipe.set_path(cfg, keys, value)
      from_cli[table.concat(keys, ".")] = a
    end
    local dir_from_cli = from_cli["output.dir"] ~= nil
    local job, runner = recipe.job_of(cfg, path)
    cfg.job = nil
    recipe.validate(cfg, runner.schema_for and runner.schema_for(cfg, path) or runner.schema, path)
    -- an attention option the command line set that the policy does not use beside the others
    local at = cfg.attention
    local okm, pm = pcall(require("adaspa.policy").module, type(at) == "table" and at.policy or "adaspa")
    if opts.warn and okm and pm.inert and type(at) == "table" then
      for field, why in pairs(pm.inert(at)) do
        local a = from_cli["attention." .. field]
        if a then opts.warn("adaspa: warning: %s is not in force: %s", a, why) end
      end
    end
    for _, field in ipairs(runner.inputs or recipe.jobs[job]) do
      allow_input(guard, get_path(cfg, field))
    end
    -- a model that ships trained weights (models/ under adaspa's home) runs them when the recipe
    -- names none: that one file is readable too
    local mc = type(cfg.model) == "table" and cfg.model or nil
    if mc and mc.weights == nil and type(mc.name) == "string" then
      local okm, M = pcall(require("adaspa.models").get, mc.name)
      if okm and M.default_weights then
        local okw, w = pcall(M.default_weights)
        if okw and type(w) == "string" then allow_input(guard, w) end
      end
    end
    local name = path:match("([^/]+)%.lua$") or "run"
    local dir, mode = cfg.output and cfg.output.dir, "reuse"
    if dir ~= nil and not dir_from_cli then
      check_recipe_dir(dir, path)
      mode = "new"
    end
    if dir == nil then dir, mode = string.format("out/%s-%s", name, os.date("%Y%m%d-%H%M%S")), "fresh" end
    if rank ~= 0 then -- several processes: rank 0 writes the outputs; the others write to a scratch
      -- folder removed after the run (the jobs stay unaware of ranks)
      scratch = string.format("%s/adaspa-rank%d-%s", os.getenv("TMPDIR") or "/tmp", rank,
        (os.getenv("ADASPA_COMM") or tostring(os.time())):match("[^/]*$"))
      dir, mode = scratch, "fresh"
    end
    local cleared
    out, cleared = guard:open_output(dir, mode)
    if cleared > 0 and opts.say and not (cfg.output and cfg.output.quiet) then
      opts.say("adaspa: output folder %s held a previous adaspa run: its %d files were removed", out:path(), cleared)
    end
    return runner.run(cfg, {recipe = path, name = name, outdir = out})
  end, function(err)
    local code = message_of(err)
    if out then
      local dok, removed = pcall(out.discard, out)
      if dok and not removed then
        local wok = pcall(out.write, out, "error.txt", "adaspa: this run failed:\n" .. code .. "\n")
        if wok then code = code .. "\n(the outputs written before the failure are in " .. out:path() .. "; error.txt says why)" end
      end
    end
    return code
  end)
  local ok, code, result = res[1], res[2], res[3]
  adaspa.threads(threads)
  if scratch then -- clear (reuse removes a previous run's files), then remove the folder
    local sok, d = pcall(adaspa.outdir.open, scratch, "reuse")
    if sok then d:discard(); os.remove(scratch .. "/.adaspa-run"); os.remove(scratch) end
  end
  if not ok then return false, code end
  return true, code, result
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

-- adaspa recipe FILE [path=value ...]: find the recipe, run it (recipe.run), return the exit code.
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
  local ok, result = recipe.run(path, {...}, {say = function(...) io.write(string.format(...), "\n"); io.flush() end,
    warn = function(...) io.stderr:write(string.format(...), "\n") end})
  if not ok then
    io.stderr:write("adaspa recipe: ", result, "\n")
    return 1
  end
  return type(result) == "number" and result or 0
end

return recipe
