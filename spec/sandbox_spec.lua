-- The recipe sandbox under attack: every route out of it that we know of, tried from the recipe
-- file's chunk and from policy callbacks the job calls later. Each attempt must fail with a clear
-- error and leave nothing outside the run's output folder (the victim folder is checked after
-- every attempt). Also the output folder's lifecycle: fresh, reused, refused, removed on failure.
local recipe = require "adaspa.recipe"

local TINY = {"model.preset=small", "model.layers.double=1", "model.layers.single=1", "model.layers.refiner=1",
              "video.width=64", "video.height=32", "video.frames=5", "sampler.steps=3", "attention.warmup=1", "attention.search=1", "output.quiet=true",
              "output.previews=false", "output.pictures=false"}

local function with(list, more)
  local out = {}
  for _, a in ipairs(list) do out[#out + 1] = a end
  for _, a in ipairs(more or {}) do out[#out + 1] = a end
  return out
end

local function sh(cmd) assert(os.execute(cmd) == 0, cmd) end

-- Entries of folder d (hidden ones too), sorted, joined by spaces; "" when empty, nil when absent.
local function listing(d)
  local p = io.popen("ls -A '" .. d .. "' 2>/dev/null")
  local names = {}
  for l in p:lines() do names[#names + 1] = l end
  p:close()
  table.sort(names)
  if #names == 0 and os.execute("test -d '" .. d .. "'") ~= 0 then return nil end
  return table.concat(names, " ")
end

local base, victim, rdir

-- Writes a recipe file in rdir; returns its path.
local function recipe_file(body, name)
  local p = rdir .. "/" .. (name or "r") .. ".lua"
  local f = assert(io.open(p, "w"))
  f:write(body)
  f:close()
  return p
end

-- The victim folder must hold only keep.txt with its original content, and nothing may appear
-- next to it.
local function victim_intact()
  assert.equal("keep.txt", listing(victim))
  assert.equal("keep", spec_slurp(victim .. "/keep.txt"))
  for name in listing(base):gmatch("%S+") do
    assert.truthy(({recipes = true, victim = true, run = true, fresh = true, secrets = true})[name], "unexpected " .. name .. " in " .. base)
  end
end

-- Runs a recipe file through the runner; returns ok, message-or-code.
local function run(body, extra)
  local p = recipe_file(body)
  local out = base .. "/out"
  local ok, res = recipe.run(p, with(TINY, with({"output.dir=" .. out}, extra)))
  os.remove(p)
  sh("rm -rf '" .. out .. "'")
  return ok, res
end

-- Expects the recipe to fail with a message holding every given piece, and the victim intact.
local function refused(body, ...)
  local ok, msg = run(body)
  assert.is_false(ok, "the recipe ran")
  msg = tostring(msg)
  for _, part in ipairs({...}) do
    assert.truthy(msg:find(part, 1, true), string.format("message %q lacks %q", msg, part))
  end
  victim_intact()
  return msg
end

-- A recipe whose policy runs `attack` (Lua source of the body of a function of ctx, the host's
-- attention context) when the job first asks it for a layout, and reports
-- "RESULT ok=<bool> <message>" by failing the run with it.
local function from_callback(attack)
  return [[
local function attack(ctx) ]] .. attack .. [[ end
return {attention = {policy = {name = "attacker",
  mode = function(self, step, layer) return "plan" end,
  plan = function(self, q, k, v, info, ctx)
    local ok, err = pcall(attack, ctx)
    error("RESULT ok=" .. tostring(ok) .. " " .. tostring(err), 0)
  end}}}
]]
end

-- Runs the binary in folder dir with the arguments; returns stdout, stderr, exit status.
local function cli_in(dir, args)
  local abs = io.popen("pwd"):read("*l") .. "/" .. spec_bin
  local out, err = os.tmpname(), os.tmpname()
  local code = os.execute(string.format("cd '%s' && '%s' %s > %s 2> %s < /dev/null", dir, abs, args, out, err))
  local so, se = spec_slurp(out), spec_slurp(err)
  os.remove(out)
  os.remove(err)
  if type(code) == "number" and code > 255 then code = math.floor(code / 256) end
  return so, se, code
end

-- The attack, run both in the recipe's chunk and in a callback, must fail with every piece.
local function refused_everywhere(attack, ...)
  refused("local function attack(ctx) " .. attack .. " end\nattack()\nreturn {}", ...)
  local msg = refused(from_callback(attack), "RESULT ok=false", ...)
  return msg
end

local IMG = "adaspa.zeros({2, 2}, {dtype = 'u8'})"

-- A fresh base folder: victim/keep.txt (must stay as it is) and recipes/ (the recipe files).
local function make_base()
  base = spec_tmpdir()
  victim, rdir = base .. "/victim", base .. "/recipes"
  sh("mkdir -p '" .. victim .. "' '" .. rdir .. "'")
  local f = assert(io.open(victim .. "/keep.txt", "w"))
  f:write("keep")
  f:close()
end

describe("recipe sandbox escapes", function()
  setup(function()
    make_base()
  end)
  teardown(function() sh("rm -rf '" .. base .. "'") end)

  it("require('adaspa') is a copy without adaspa.core; adaspa.core, the runner and other modules are refused", function()
    local r = recipe.load(recipe_file([[
local a = require("adaspa")
return {same = a == adaspa, core = a.core == nil, outdir = a.outdir == nil, sb = a.sandbox == nil,
        real = a ~= package.loaded}]]))
    assert.is_true(r.same and r.core and r.outdir and r.sb)
    refused_everywhere("return require('adaspa.core')", "module adaspa.core is not available to recipes")
    refused_everywhere("require('adaspa.recipe').write_root = '/'", "module adaspa.recipe is not available to recipes")
    refused_everywhere("return require('adaspa.jobs.video')", "module adaspa.jobs.video is not available to recipes")
    refused_everywhere("return require('adaspa.sandbox')", "module adaspa.sandbox is not available to recipes")
    refused_everywhere("return require('lfs')", "require of lfs is not allowed")
    refused_everywhere("return require('ffi')", "require of ffi is not allowed")
    refused_everywhere("return require('jit.util')", "require of jit.util is not allowed")
    refused_everywhere("return require('adaspa.x/../../etc')", "require of adaspa.x/../../etc is not allowed")
  end)

  it("writes outside the output folder fail through every writer", function()
    local v = victim
    refused_everywhere(("adaspa.safetensors.save(%q, {a = adaspa.zeros({1})})"):format(v .. "/x.safetensors"),
      "adaspa.safetensors.save", v .. "/x.safetensors", "only into the run's output folder")
    refused_everywhere(("require('adaspa').png.write(%q, %s)"):format(v .. "/x.png", IMG),
      "adaspa.png.write", "only into the run's output folder")
    refused_everywhere(("adaspa.mkdir(%q)"):format(v .. "/d"), "adaspa.mkdir", "only into the run's output folder")
    refused_everywhere(("adaspa.Cache.new(1):save(%q)"):format(v .. "/c.safetensors"), "cache:save",
      "only into the run's output folder")
    refused_everywhere(("require('adaspa.weights').save(%q, {a = adaspa.zeros({1})}, 'original')"):format(v .. "/w.safetensors"),
      "only into the run's output folder")
    -- the attention context's own cache is the host's object: still confined
    refused(from_callback(("return ctx.cache:save(%q)"):format(v .. "/c2.safetensors")), "RESULT ok=false",
      "cache:save", "only into the run's output folder")
  end)

  it("inside the output folder: no '..', no links, no hidden or executable names, no NUL, no long paths", function()
    local inside = "adaspa.output_path(%q)"
    local function attempt(name, ...)
      refused(from_callback(("adaspa.png.write(" .. inside .. ", %s)"):format(name, IMG)), "RESULT ok=false", ...)
    end
    attempt("../victim/x.png", "'..' is not allowed")
    attempt("a/../../victim/x.png", "'..' is not allowed")
    attempt(".bashrc.png", "starts with a letter, a digit or _")
    attempt("evil.pth", "end in .png, .safetensors")
    attempt("evil.so", "end in .png, .safetensors")
    attempt(string.rep("a", 300) .. ".png", "a path component is 304 characters (at most 255)")
    attempt(string.rep("d/", 20) .. "x.png", "more than 16 path components")
    attempt("x.png\0/../../victim/y.png", "NUL byte")
    refused(from_callback(("adaspa.png.write(%q, %s)"):format(string.rep("/x", 2100) .. ".png", IMG)), "RESULT ok=false",
      "path must be 1 to 4095 bytes")
  end)

  it("communicator files are neither created nor opened while a recipe runs", function()
    refused_everywhere(("adaspa.comm.create(%q, 2, 4096)"):format(victim .. "/comm.txt"),
      "adaspa.comm.create: not available while a recipe runs")
    refused_everywhere(("return adaspa.comm.open(0, 2, %q, 1)"):format(victim .. "/keep.txt"),
      "adaspa.comm.open: not available while a recipe runs")
  end)

  it("the attention context leads to no table its class shares; the thread count is the run's own", function()
    local attention = require "adaspa.attention"
    local probe = attention.new({mode = function() return "dense" end, select = function() end}, {layers = 1})
    local set_branch, threads = probe.set_branch, adaspa.threads()
    -- ctx.__index was the metatable itself (the class of every context): now nothing
    refused(from_callback(("local C = ctx.__index; C.set_branch = function() adaspa.png.write(%q, %s) end"):format(
      victim .. "/late.png", IMG)), "RESULT ok=false", "attempt to index local 'C' (a nil value)")
    refused(from_callback("adaspa.threads(1); error('set', 0)"), "RESULT ok=false set")
    local later = attention.new({mode = function() return "dense" end, select = function() end}, {layers = 1})
    assert.equal(set_branch, later.set_branch)
    later:set_branch(2)
    assert.equal(threads, adaspa.threads())
    victim_intact()
  end)

  it("recipe FILE --help looks at the recipe confined, and loads no job from the current folder", function()
    sh("mkdir -p '" .. rdir .. "/adaspa/jobs'")
    local fh = assert(io.open(rdir .. "/adaspa/jobs/pwn.lua", "w"))
    fh:write(("io.open(%q, 'w'):write('pwned'); return {schema = {}}"):format(victim .. "/pwned"))
    fh:close()
    local p = recipe_file("return {job = 'pwn'}")
    local _, e, c = cli_in(rdir, "recipe r.lua --help")
    assert.equal(1, c)
    assert.truthy(e:find("unknown job \"pwn\" (jobs: compare, replay, video)", 1, true), e)
    sh("rm -rf '" .. rdir .. "/adaspa'")
    -- show() reads the policy's mode: the recipe's __index runs, confined
    recipe_file(([[
return {attention = {policy = setmetatable({}, {__index = function(t, k)
  adaspa.png.write(%q, %s)
end})}}]]):format(victim .. "/help.png", IMG))
    _, e, c = cli_in(rdir, "recipe r.lua --help")
    assert.equal(1, c)
    assert.truthy(e:find("adaspa.png.write", 1, true) and e:find("only into the run's output folder", 1, true), e)
    os.remove(p)
    victim_intact()
  end)

  it("the environment, programs, native code and debug facilities are out of reach", function()
    refused_everywhere("return os.getenv('HOME')", "os.getenv is not available to recipes")
    refused_everywhere("return os.execute('touch " .. victim .. "/pwned')", "os.execute is not available to recipes")
    refused_everywhere("return os.remove('" .. victim .. "/keep.txt')", "os.remove is not available to recipes")
    refused_everywhere("return io.open('" .. victim .. "/x', 'w')", "io is not available to recipes")
    refused_everywhere("return package.loadlib('libc.so.6', 'system')", "package.loadlib is not available to recipes")
    refused_everywhere("return package.cpath", "package.cpath is not available to recipes")
    refused_everywhere("return package.path", "package.path is not available to recipes")
    refused_everywhere("return debug.getregistry()", "debug is not available to recipes")
    refused_everywhere("return jit.util", "jit is not available to recipes")
    refused_everywhere("return getfenv(0)", "getfenv is not available to recipes")
    refused_everywhere("return setfenv(1, {})", "setfenv is not available to recipes")
    refused_everywhere("return loadfile('/etc/passwd')", "loadfile is not available to recipes")
    refused_everywhere("return dofile('/etc/passwd')", "dofile is not available to recipes")
    refused_everywhere("return newproxy(true)", "newproxy is not available to recipes")
  end)

  it("bytecode never loads: string.dump is gone, load refuses binary chunks and other modes", function()
    refused_everywhere("return string.dump(print)", "string.dump is not available to recipes")
    -- the shared string metatable still reaches the real string.dump; its output cannot be loaded
    refused_everywhere("local bc = ('').dump(function() return 1 end); local f, e = load(bc); assert(f, e)",
      "binary (bytecode) chunks are refused")
    refused_everywhere("local bc = ('').dump(function() return 1 end); local f, e = loadstring(bc); assert(f, e)",
      "binary (bytecode) chunks are refused")
    refused_everywhere("local bc = ('').dump(function() return 1 end); local once = bc; " ..
      "local f, e = load(function() local s = once; once = nil; return s end); assert(f, e)",
      "binary (bytecode) chunks are refused")
    refused_everywhere("return load('return 1', 'x', 'b')", "only text chunks can be loaded")
    -- text chunks load into the recipe's own environment, never the host's globals
    local r = recipe.load(recipe_file("return {io = pcall(load('return io')), g = load('return _G')() == _G, " ..
      "own = load('x = 1; return x', 'c', 't', {})()}"))
    assert.is_false(r.io)
    assert.is_true(r.g)
    assert.equal(1, r.own)
  end)

  it("library tables are the recipe's own copies; shared metatables are out of reach", function()
    local sub, find = string.sub, string.find
    local tensor = adaspa.zeros({3})
    refused_everywhere("return getmetatable('').__index", "the string metatable is not available to recipes")
    refused_everywhere("setmetatable(string, {})", "setmetatable on a library table is not available to recipes")
    refused_everywhere("setmetatable(_G, nil)", "setmetatable on a library table is not available to recipes")
    refused_everywhere("return getmetatable(_G)", "the metatable of a library table is not available to recipes")
    -- changing the recipe's copies changes nothing outside it
    local ok = run([[
string.sub = function() return "patched" end
string.find = function() return 1, 1 end
table.concat = function() return "patched" end
math.floor = function() return 0 end
adaspa.png = {write = function() end}
rawset(string, "format", function() return "x" end)
local mt = getmetatable(adaspa.zeros({1}))
mt.__index = function() return "patched" end
mt.__gc = function() end
return {}]])
    assert.is_true(ok)
    assert.equal(sub, string.sub)
    assert.equal(find, string.find)
    assert.equal("b", ("abc"):sub(2, 2))
    assert.equal("a,b", table.concat({"a", "b"}, ","))
    assert.equal(2, math.floor(2.5))
    assert.equal(3, tensor:numel())
    assert.equal("function", type(adaspa.png.write))
    victim_intact()
    -- a userdata's metatable reads as a copy holding its name only
    local r = recipe.load(recipe_file("local mt = getmetatable(adaspa.zeros({1})); return {name = mt.__name, gc = mt.__gc, index = mt.__index}"))
    assert.equal("adaspa.Tensor", r.name)
    assert.is_nil(r.gc)
    assert.is_nil(r.index)
    -- the host objects a policy receives (the attention context) keep their metatables
    refused(from_callback("return getmetatable(ctx)"), "RESULT ok=false",
      "the metatable of a library table is not available to recipes")
    refused(from_callback("return setmetatable(ctx, {__index = function() end})"), "RESULT ok=false",
      "setmetatable on a library table is not available to recipes")
  end)

  it("coroutines, error objects with __tostring and collectgarbage do not leave the sandbox", function()
    refused_everywhere(("local co = coroutine.wrap(function() adaspa.png.write(%q, %s) end); co()"):format(victim .. "/co.png", IMG),
      "only into the run's output folder")
    -- the runner never calls a recipe's metamethods on its error objects
    local msg = refused(([[
error(setmetatable({}, {__tostring = function() adaspa.png.write(%q, %s); return "tostring ran" end}))]]):format(
      victim .. "/e.png", IMG), "error object is a table value")
    assert.falsy(msg:find("tostring ran", 1, true))
    msg = refused(from_callback(([[
error(setmetatable({}, {__tostring = function() adaspa.png.write(%q, %s); return "tostring ran" end}))]]):format(
      victim .. "/e.png", IMG)))
    refused_everywhere("collectgarbage('stop')", "collectgarbage(\"stop\") is not available")
    refused_everywhere("collectgarbage('setpause', 1e9)", "collectgarbage(\"setpause\") is not available")
    local r = recipe.load(recipe_file("return {kb = collectgarbage('count')}"))
    assert.is_true(r.kb > 0)
  end)

  it("a recipe's chunk is bounded in time and Lua memory; its loops run where hooks reach them", function()
    local saved = recipe.load_limits
    recipe.load_limits = {seconds = 0.5, lua_mib = 64}
    local t0 = adaspa.now()
    local ok, err = pcall(recipe.load, recipe_file("while true do end"))
    recipe.load_limits = saved
    assert.is_false(ok)
    assert.truthy(err:find("ran for over 0.5 s without returning its table", 1, true), err)
    assert.is_true(adaspa.now() - t0 < 5)
    recipe.load_limits = {seconds = 30, lua_mib = 64}
    ok, err = pcall(recipe.load, recipe_file("local t = {} for i = 1, 1e9 do t[i] = {i} end return t"))
    recipe.load_limits = saved
    assert.is_false(ok)
    assert.truthy(err:find("over 64 MiB of Lua memory", 1, true), err)
    collectgarbage()
    -- a pcall of the recipe's does not catch the bound for good; nor does a chunk it loads escape
    -- the hook (interpreted too); a single string of gigabytes fails at once (the cap is in C)
    recipe.load_limits = {seconds = 0.5, lua_mib = 64}
    for _, body in ipairs({
      "while true do pcall(function() while true do end end) end",
      "while true do xpcall(function() while true do end end, function(e) while true do end end) end",
      "local co = coroutine.wrap(function() while true do pcall(coroutine.yield) end end) while true do pcall(co) end",
      "load('while true do end')()",
    }) do
      t0 = adaspa.now()
      ok, err = pcall(recipe.load, recipe_file(body))
      assert.is_false(ok, body)
      assert.truthy(err:find("ran for over 0.5 s without returning its table", 1, true), err)
      assert.is_true(adaspa.now() - t0 < 5, body)
    end
    for _, body in ipairs({
      "local s = ('x'):rep(2 ^ 31 - 256) return {n = #s}",
      "local t = {} for i = 1, 100 do t[i] = ('x'):rep(2 ^ 30 + i) end return t",
      "local t = {} for i = 1, 2 ^ 16 do t[i] = ('x'):rep(1000) end return {s = table.concat(t, table.concat(t))}",
      "while true do pcall(string.rep, 'x', 2 ^ 30) end",
    }) do
      ok, err = pcall(recipe.load, recipe_file(body))
      assert.is_false(ok, body)
      assert.truthy(err:find("over 64 MiB of Lua memory", 1, true) or err:find("ran for over 0.5 s", 1, true), err)
    end
    recipe.load_limits = saved
    assert.is_false(adaspa.sandbox.active())
    assert.equal(2 ^ 28, #("x"):rep(2 ^ 28)) -- the cap ends with the chunk
    collectgarbage()
    -- a loop in a function the recipe defines (a policy callback, later) runs interpreted: a count
    -- hook fires inside it, as Ctrl-C's does
    local r = recipe.load(recipe_file("return {spin = function(n) local x = 0 for i = 1, n do x = x + i end return x end}"))
    local fired = 0
    debug.sethook(function() fired = fired + 1 end, "", 1000)
    r.spin(1e6)
    debug.sethook()
    assert.is_true(fired > 100, "hook fired " .. fired .. " times")
    victim_intact()
  end)

  it("reads are limited to named files, the recipe's folder (.safetensors, .png) and the output folder", function()
    sh("mkdir -p '" .. base .. "/secrets'")
    local secret = base .. "/secrets/secret.safetensors"
    adaspa.safetensors.save(secret, {a = adaspa.ones({2})})
    local mine = rdir .. "/mine.safetensors"
    adaspa.safetensors.save(mine, {b = adaspa.ones({3})})
    local function check(attack, ...) refused_everywhere(attack, ...) end
    check(("return adaspa.safetensors.load(%q)"):format(secret), "adaspa.safetensors.load", "reads only the files named")
    check(("return adaspa.safetensors.info(%q)"):format(secret), "reads only the files named")
    check("return adaspa.png.read('/etc/passwd')", "adaspa.png.read", "reads only the files named")
    check(("return adaspa.Cache.load(%q)"):format(secret), "reads only the files named")
    check(("return adaspa.safetensors.load(%q)"):format(rdir .. "/../secrets/secret.safetensors"), "reads only the files named")
    -- a link in the recipe's folder to a file elsewhere, or a file in a subfolder of it: refused
    sh(string.format("ln -s '%s' '%s/link.safetensors' && mkdir -p '%s/sub' && cp '%s' '%s/sub/'", secret, rdir, rdir, secret, rdir))
    check(("return adaspa.safetensors.load(%q)"):format(rdir .. "/link.safetensors"), "reads only the files named")
    check(("return adaspa.safetensors.load(%q)"):format(rdir .. "/sub/secret.safetensors"), "reads only the files named")
    sh(string.format("rm -rf '%s/link.safetensors' '%s/sub'", rdir, rdir))
    os.remove(secret)
    -- the recipe's own folder
    local r = recipe.load(recipe_file(("return {n = adaspa.safetensors.load(%q).b:numel()}"):format(mine)))
    assert.equal(3, r.n)
    -- a file named by a field (text.embeds) may be read: the job reads it (and finds no text_states)
    local named = base .. "/secrets/named.safetensors"
    adaspa.safetensors.save(named, {c = adaspa.ones({4})})
    local msg = refused(("return {text = {embeds = %q}}"):format(named), "text_states")
    assert.falsy(msg:find("reads only", 1, true), msg)
    os.remove(named)
    os.remove(mine)
    victim_intact()
  end)

  it("the recipe chooses no output folder outside the current one, and none that holds anything", function()
    local function refused_dir(dir, ...)
      local p = recipe_file(("return {output = {dir = %q}}"):format(dir))
      local ok, msg = recipe.run(p, TINY)
      assert.is_false(ok)
      for _, part in ipairs({...}) do assert.truthy(msg:find(part, 1, true), msg) end
      os.remove(p)
      victim_intact()
    end
    refused_dir(victim, "field output.dir", "a recipe file may name only a relative folder without '..'")
    refused_dir("../victim", "a recipe file may name only a relative folder")
    refused_dir("a/../../victim", "a recipe file may name only a relative folder")
    refused_dir("~/.ssh", "a recipe file may name only a relative folder")
    -- relative to the current folder: only a new or empty one
    local p = recipe_file("return {output = {dir = 'victim'}}")
    local _, e, c = cli_in(base, "recipe '" .. p .. "' " .. table.concat(TINY, " "))
    assert.equal(1, c)
    assert.truthy(e:find("output folder victim is not empty and not an adaspa output folder", 1, true), e)
    victim_intact()
    os.remove(p)
  end)

  it("modules planted next to the recipe or in the current folder never load", function()
    sh("mkdir -p '" .. rdir .. "/adaspa/jobs'")
    local payload = ("io.open(%q, 'w'):write('pwned'); return {schema = {}, run = function() return 0 end}"):format(victim .. "/pwned")
    for _, f in ipairs({"adaspa/jobs/pwn.lua", "adaspa/pwn.lua"}) do
      local fh = assert(io.open(rdir .. "/" .. f, "w"))
      fh:write(payload)
      fh:close()
    end
    local p = recipe_file("return {job = 'pwn'}")
    local _, e, c = cli_in(rdir, "recipe r.lua")
    assert.equal(1, c)
    assert.truthy(e:find("unknown job \"pwn\"", 1, true), e)
    recipe_file("return {x = require('adaspa.pwn')}")
    _, e, c = cli_in(rdir, "recipe r.lua")
    assert.equal(1, c)
    assert.truthy(e:find("no adaspa module adaspa.pwn", 1, true), e)
    sh("rm -rf '" .. rdir .. "/adaspa'")
    os.remove(p)
    victim_intact()
  end)

  it("a policy callback writes into the output folder through adaspa.output_path", function()
    local out = base .. "/outok"
    local p = recipe_file([[
local wrote = false
return {attention = {policy = {name = "mine",
  mode = function(self, step, layer)
    if not wrote then
      adaspa.png.write(adaspa.output_path("mine.png"), adaspa.zeros({2, 2}, {dtype = "u8"}))
      adaspa.mkdir(adaspa.output_path("sub"))
      adaspa.safetensors.save(adaspa.output_path("sub/x.safetensors"), {x = adaspa.ones({1})})
      wrote = true
    end
    return "dense"
  end, select = function() end}}}
]])
    local ok, code = recipe.run(p, with(TINY, {"output.dir=" .. out}))
    assert.is_true(ok, tostring(code))
    assert.equal(0, code)
    assert.same({2, 2, 1}, adaspa.png.read(out .. "/mine.png"):shape())
    assert.equal(1, adaspa.safetensors.load(out .. "/sub/x.safetensors").x:numel())
    assert.truthy(listing(out):find("report.json", 1, true))
    sh("rm -rf '" .. out .. "'")
    os.remove(p)
    victim_intact()
  end)

  it("writes never follow links inside the output folder", function()
    -- the runner refuses folders holding links; links that appear during a run are not followed
    local guard = adaspa.sandbox.begin()
    local ok, od = pcall(guard.open_output, guard, base .. "/links", "new")
    local d = ok and od:path()
    local img = adaspa.zeros({2, 2}, {dtype = "u8"})
    local results = {}
    if ok then
      os.execute(string.format("ln -s '%s' '%s/link' && ln -s '%s/keep.txt' '%s/report.txt'", victim, d, victim, d))
      results[1] = {pcall(adaspa.png.write, d .. "/link/x.png", img)}
      results[2] = {pcall(adaspa.mkdir, d .. "/link/sub")}
      results[3] = {pcall(adaspa.png.write, d .. "/link/../x.png", img)}
      results[4] = {pcall(adaspa.safetensors.save, d .. "/link/x.safetensors", {a = adaspa.ones({1})})}
      results[5] = {pcall(adaspa.png.write, d .. "/report.txt", img)} -- replaces the link itself
    end
    guard:finish()
    assert.is_true(ok, tostring(od))
    for i, want in ipairs({"link is a symbolic link or not a folder", "link is a symbolic link or not a folder",
                           "'..' is not allowed", "link is a symbolic link or not a folder"}) do
      assert.is_false(results[i][1], "attempt " .. i .. " succeeded")
      assert.truthy(tostring(results[i][2]):find(want, 1, true), results[i][2])
    end
    assert.is_true(results[5][1], tostring(results[5][2]))
    assert.same({2, 2, 1}, adaspa.png.read(d .. "/report.txt"):shape())
    assert.equal(0, os.execute("test ! -L '" .. d .. "/report.txt'"))
    -- through the handle too
    spec_error(function() od:write("link/x.txt", "no") end, "link is a symbolic link or not a folder")
    spec_error(function() od:mkdir("link/sub") end, "link is a symbolic link or not a folder")
    -- a folder holding a link is not an adaspa run's folder: not reused
    spec_error(function() adaspa.outdir.open(d, "reuse") end, "link (a symbolic link)", "an adaspa run does not write")
    sh("rm -rf '" .. d .. "'")
    victim_intact()
  end)
end)

describe("recipe output folders", function()
  local d
  setup(function()
    make_base()
    d = base .. "/run"
  end)
  teardown(function() sh("rm -rf '" .. base .. "'") end)

  it("a run that fails before writing anything leaves no folder", function()
    local p = recipe_file("return {attention = {policy = {mode = function() error('policy broke', 0) end, select = function() end}}}")
    local ok, msg = recipe.run(p, with(TINY, {"output.dir=" .. d}))
    assert.is_false(ok)
    assert.truthy(msg:find("policy broke", 1, true), msg)
    assert.is_nil(listing(d))
    -- a recipe that fails while loading or validating never creates one
    p = recipe_file("return {attention = {sparsity = 2}}")
    ok, msg = recipe.run(p, with(TINY, {"output.dir=" .. d}))
    assert.is_false(ok)
    assert.truthy(msg:find("attention.sparsity", 1, true), msg)
    assert.is_nil(listing(d))
    os.remove(p)
  end)

  it("a run that fails after writing, or in a folder the user gave, explains itself in error.txt", function()
    sh("mkdir -p '" .. d .. "'")
    local p = recipe_file("return {attention = {policy = {mode = function() error('policy broke', 0) end, select = function() end}}}")
    local ok, msg = recipe.run(p, with(TINY, {"output.dir=" .. d}))
    assert.is_false(ok)
    assert.truthy(msg:find("error.txt", 1, true), msg)
    assert.equal(".adaspa-run error.txt", listing(d))
    assert.truthy(spec_slurp(d .. "/error.txt"):find("policy broke", 1, true))
    os.remove(p)
  end)

  it("reusing a previous run's folder removes its files first; other folders are refused", function()
    local p = recipe_file("return {}")
    sh("rm -rf '" .. d .. "'")
    local ok, code = recipe.run(p, with(TINY, {"output.dir=" .. d, "output.previews=true", "video.frames=9"}))
    assert.is_true(ok, tostring(code))
    assert.truthy(listing(d):find("frame_002.png", 1, true))
    ok, code = recipe.run(p, with(TINY, {"output.dir=" .. d, "output.previews=true"}))
    assert.is_true(ok, tostring(code))
    local l = listing(d)
    assert.truthy(l:find("frame_001.png", 1, true), l)
    assert.falsy(l:find("frame_002.png", 1, true), l) -- the previous run's third frame is gone
    -- a stranger's file in it: refused, nothing removed
    local f = assert(io.open(d .. "/notes", "w"))
    f:write("mine")
    f:close()
    ok, code = recipe.run(p, with(TINY, {"output.dir=" .. d}))
    assert.is_false(ok)
    assert.truthy(code:find("holds notes, which an adaspa run does not write", 1, true), code)
    assert.equal("mine", spec_slurp(d .. "/notes"))
    -- a non-empty folder without the marker: refused
    ok, code = recipe.run(p, with(TINY, {"output.dir=" .. victim}))
    assert.is_false(ok)
    assert.truthy(code:find("not an adaspa output folder", 1, true), code)
    victim_intact()
    os.remove(p)
  end)

  it("a fresh folder never reuses an existing one", function()
    local a = adaspa.outdir.open(base .. "/fresh", "fresh")
    local b = adaspa.outdir.open(base .. "/fresh", "fresh")
    assert.equal(base .. "/fresh", a:path())
    assert.equal(base .. "/fresh-2", b:path())
    assert.is_true(b:created())
    assert.is_true(b:discard())
    assert.is_nil(listing(base .. "/fresh-2"))
    assert.equal(".adaspa-run", listing(base .. "/fresh"))
  end)
end)
