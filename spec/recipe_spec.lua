-- The recipe runner: override parsing, schema validation, the sandbox, finding recipes.
local recipe = require "adaspa.recipe"

local schema = {
  video = {
    height = {type = "integer", default = 720, check = function(v) if v % 16 ~= 0 then return "must be a multiple of 16" end end},
    frames = {type = "integer", default = 129, check = function(v) if (v - 1) % 4 ~= 0 then return "must be 4k+1" end end},
  },
  sampler = {steps = {type = "integer", default = 50}, shift = {type = "number", default = 7.0}},
  attention = {search = {type = "list", default = {10, 30}}, policy = {type = "any", default = "dense"}},
  name = {type = "string"},
}

describe("recipe overrides", function()
  it("parse numbers, booleans, nil, strings and lists", function()
    assert.equal(0.9, recipe.parse_value("0.9"))
    assert.equal(true, recipe.parse_value("true"))
    assert.equal(false, recipe.parse_value("false"))
    assert.is_nil(recipe.parse_value("nil"))
    assert.equal("hello world", recipe.parse_value("hello world"))
    assert.equal("42", recipe.parse_value('"42"'))
    assert.same({10, 30}, recipe.parse_value("{10,30}"))
    assert.same({10, 30}, recipe.parse_value("10,30"))
    assert.same({"a", true}, recipe.parse_value("{a, true}"))
  end)

  it("split path.to.field=value and set nested fields", function()
    local keys, v = recipe.parse_override("attention.sparsity=0.9")
    assert.same({"attention", "sparsity"}, keys)
    assert.equal(0.9, v)
    local cfg = {}
    recipe.set_path(cfg, {"model", "layers", "double"}, 4)
    assert.equal(4, cfg.model.layers.double)
    local bad, msg = recipe.parse_override("attention.sparsity")
    assert.is_nil(bad)
    assert.truthy(msg:find("path.to.field=value", 1, true))
    assert.is_nil((recipe.parse_override("a..b=1")))
  end)
end)

describe("recipe validation", function()
  it("fills defaults and keeps given values", function()
    local cfg = recipe.validate({video = {frames = 33}}, schema, "r.lua")
    assert.equal(720, cfg.video.height)
    assert.equal(33, cfg.video.frames)
    assert.same({10, 30}, cfg.attention.search)
    assert.equal("dense", cfg.attention.policy)
  end)

  it("rejects unknown fields, naming the file, the field and the value", function()
    spec_error(function() recipe.validate({video = {widht = 3}}, schema, "r.lua") end,
      "r.lua", "unknown field video.widht = 3", "height")
    spec_error(function() recipe.validate({vidoe = {}}, schema, "r.lua") end, "unknown field vidoe")
  end)

  it("rejects wrong types and impossible values", function()
    spec_error(function() recipe.validate({sampler = {steps = 2.5}}, schema, "r.lua") end,
      "r.lua", "sampler.steps", "integer", "2.5")
    spec_error(function() recipe.validate({sampler = {shift = "x"}}, schema, "r.lua") end, "sampler.shift", "number")
    spec_error(function() recipe.validate({video = {height = 100}}, schema, "r.lua") end,
      "r.lua", "video.height = 100", "multiple of 16")
    spec_error(function() recipe.validate({video = {frames = 32}}, schema, "r.lua") end, "video.frames = 32", "4k+1")
    spec_error(function() recipe.validate({video = 5}, schema, "r.lua") end, "field video must be a table")
  end)
end)

describe("recipe sandbox", function()
  it("runs a recipe with the adaspa library but without io or os.execute", function()
    local p = spec_tmpfile("return {n = adaspa.zeros({2, 3}):numel(), m = math.floor(2.5), has_io = pcall(function() return io end), " ..
      "has_exec = pcall(function() return os.execute end), clock = type(os.clock())}")
    local r = recipe.load(p)
    os.remove(p)
    assert.equal(6, r.n)
    assert.equal(2, r.m)
    assert.is_false(r.has_io)
    assert.is_false(r.has_exec)
    assert.equal("number", r.clock)
  end)

  it("confines writes while the recipe file loads and returns a plain copy of its table", function()
    local dir = spec_tmpdir()
    local p = spec_tmpfile(("local ok, err = pcall(adaspa.png.write, %q, adaspa.zeros({2, 2}, {dtype = 'u8'}))\n"):format(dir .. ".png") ..
      "local t = setmetatable({}, {__index = function() return 'changing' end})\n" ..
      "return {ok = ok, err = err, plain = {a = 1}, object = t}")
    local r = recipe.load(p)
    os.remove(p)
    assert.is_false(r.ok)
    assert.truthy(r.err:find("only into the run's output folder", 1, true), r.err)
    assert.is_false(spec_exists(dir .. ".png"))
    assert.is_nil(getmetatable(r.plain))
    assert.equal("changing", r.object.anything) -- objects (tables with a metatable) stay as they are
    assert.is_false((adaspa.sandbox.active())) -- the confinement ended with the chunk
  end)

  it("gives each recipe its own sandbox and its own instances of adaspa modules", function()
    local p = spec_tmpfile("local pol = require('adaspa.policy'); pol.names = {'patched'}; string.upper = nil\n" ..
      "return {names = #require('adaspa.policy').names}")
    local r = recipe.load(p)
    assert.equal(1, r.names)
    assert.equal(5, #require("adaspa.policy").names) -- the host's module is untouched
    assert.equal("X", ("x"):upper())
    local p2 = spec_tmpfile("return {names = #require('adaspa.policy').names, upper = string.upper ~= nil}")
    local r2 = recipe.load(p2)
    assert.equal(5, r2.names)
    assert.is_true(r2.upper)
    os.remove(p)
    os.remove(p2)
  end)

  it("refuses require of non-adaspa modules and reports the recipe's own errors", function()
    local p = spec_tmpfile("local lfs = require 'lfs'\nreturn {}")
    spec_error(function() recipe.load(p) end, "require of lfs is not allowed")
    os.remove(p)
    p = spec_tmpfile("return 5")
    spec_error(function() recipe.load(p) end, "must return a table, got number")
    os.remove(p)
    p = spec_tmpfile("local x = \nreturn {}")
    spec_error(function() recipe.load(p) end, p)
    os.remove(p)
  end)

  it("finds recipes by path or by name under recipes/", function()
    assert.equal("recipes/examples/tour.lua", recipe.find("recipes/examples/tour.lua"))
    local found, msg = recipe.find("no_such_recipe_xyz")
    assert.is_nil(found)
    assert.truthy(msg:find("recipes/no_such_recipe_xyz.lua", 1, true))
  end)

  it("the CLI names a missing recipe and exits 1", function()
    local _, err, code = spec_run("recipe no_such_recipe_xyz")
    assert.equal(1, code)
    assert.truthy(err:find("no recipe", 1, true), err)
  end)
end)
