-- spec/fuzz/trace_fuzz.lua: fuzzes the trace reader (lua/adaspa/trace.lua over the safetensors
-- reader). Run inside the adaspa binary:  adaspa spec/fuzz/trace_fuzz.lua [SECONDS [SEED [RUNS]]]
--
-- Seeds are small valid traces written with trace.write. Each input is one of:
--   - a header-level mutation: the metadata strings and tensor names mutated, tensors dropped,
--     duplicated or reshaped, then saved as a well-formed safetensors file (reaches trace.lua's
--     own checks);
--   - a byte-level mutation of a whole seed file (reaches the safetensors reader through Lua).
-- Acceptable outcomes: trace.open succeeds (then every record is loaded and described) or fails
-- with a message "adaspa.trace: <path>: ...". Anything else is a crash, and so is an input that
-- takes more than 2 s or allocates more than 4 x its size + 2 MiB.
local fz = dofile("spec/fuzz/mutate.lua")
local trace = require "adaspa.trace"

local seconds, seed, runs = tonumber(arg[1]) or 10, tonumber(arg[2]) or 1, tonumber(arg[3])
local path = os.tmpname() .. ".safetensors"

local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
local function spit(p, s) local f = assert(io.open(p, "wb")); f:write(s); f:close() end

-- Seeds: grid 1x2x2 + 1 text token (S = 5), 1 head x 2; two shapes of schedule.
local function record(step, layer, s)
  local q = adaspa.randn({5, 1, 2}, {seed = s})
  return {step = step, layer = layer, q = q, k = adaspa.scale(q, 0.5), v = adaspa.scale(q, -1)}
end
local seeds = {
  {{record(0, 1, 1), record(0, 2, 2), record(3, 1, 3), record(3, 2, 4)},
   {model = "hunyuan-video", grid = {1, 2, 2}, text_len = 1, kv_valid = 5, num_steps = 4,
    timesteps = {[0] = 1000, [3] = 250.5}, kinds = {[1] = "double", [2] = "single"}, source = "fuzz"}},
  {{record(7, 5, 5)}, {model = "wan", grid = {1, 2, 2}, text_len = 1, kv_valid = 4, dtype = "f32", kinds = {[5] = "self"}}},
}
seeds[1][1][4].kv_valid = 4
local files, metas = {}, {}
for i, sd in ipairs(seeds) do
  trace.write(path, sd[1], sd[2])
  files[i] = slurp(path)
  local tensors, md = trace.encode(sd[1], sd[2])
  metas[i] = {tensors = tensors, md = md}
end
local dict = {"step", ".layer", ".kv_valid", ",", "grid", "steps", "layers", "text_len", "kv_valid", "num_steps",
  "timesteps", "layer_kinds", "double", "single", "self", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "BF16", "F32"}
local meta_keys = {"format", "version", "model", "grid", "text_len", "kv_valid", "steps", "layers", "num_steps",
  "timesteps", "layer_kinds", "source", "step0.layer1.kv_valid", "step3.layer2.kv_valid", "step03.layer2.kv_valid"}

-- A header-level input: mutated metadata and tensor set, saved as valid safetensors.
local function structured(rng)
  local sd = metas[rng(#metas)]
  local md = {}
  for k, v in pairs(sd.md) do md[k] = v end
  local values = {}
  for _, v in pairs(sd.md) do values[#values + 1] = v end
  for _ = 1, rng(3) do
    local k = meta_keys[rng(#meta_keys)]
    local r = rng(6)
    if r == 1 then md[k] = nil
    else md[k] = fz.mutate(rng, md[k] or values[rng(#values)], values, dict) end
  end
  local named, names = {}, {}
  for _, nt in ipairs(sd.tensors) do named[nt[1]] = nt[2]; names[#names + 1] = nt[1] end
  if rng(3) == 1 then
    local n = names[rng(#names)]
    local t = named[n]
    local r = rng(4)
    named[n] = nil
    if r == 2 then named[fz.mutate(rng, n, names, dict)] = t
    elseif r == 3 then named[n] = t:reshape({-1})
    elseif r == 4 then named[n] = t:to(t:dtype() == "f32" and "bf16" or "f32") end
  end
  local ok = pcall(adaspa.safetensors.save, path, named, md)
  if not ok then return nil end   -- not a writable file (e.g. a metadata string with a NUL)
  return slurp(path)
end

-- What an opened trace must satisfy (the format's rules, so a reader that accepts too much fails).
local function violation(tr)
  local known = {}
  for _, k in ipairs(trace.required) do known[k] = true end
  for _, k in ipairs({"num_steps", "timesteps", "layer_kinds", "source"}) do known[k] = true end
  for k in pairs(tr.meta) do
    local s, l = k:match("^step(%d+)%.layer(%d+)%.kv_valid$")
    if not known[k] and not (s and trace.name(tonumber(s), tonumber(l), "kv_valid") == k) then
      return "accepted the metadata key " .. k
    end
  end
  for _, t in pairs(tr.timesteps) do
    if not (t >= 0 and t < math.huge) then return "accepted the timestep " .. tostring(t) end
  end
  for _, kind in pairs(tr.kinds) do
    if kind ~= "double" and kind ~= "single" and kind ~= "self" then return "accepted the layer kind " .. kind end
  end
  for _, v in ipairs({tr.S, tr.n_img, tr.text_len, tr.kv_valid, tr.num_steps or 0, tr.steps[#tr.steps], tr.layers[#tr.layers]}) do
    if not (v >= 0 and v <= 2147483647 and v % 1 == 0) then return "accepted the integer " .. tostring(v) end
  end
end

local function one(rng, i)
  local bytes
  if rng(2) == 1 then bytes = structured(rng) end
  if not bytes then bytes = fz.mutate(rng, files[rng(#files)], files, dict); spit(path, bytes) end
  local ok, tr = pcall(trace.open, path)
  local prefix = "adaspa.trace: " .. path .. ": "
  if not ok then
    if type(tr) == "string" and tr:sub(1, #prefix) == prefix and #tr > #prefix then return #bytes, true end
    return #bytes, false, "trace.open raised " .. fz.show(tostring(tr)) .. " on " .. fz.show(bytes)
  end
  local bad = violation(tr)
  if bad then return #bytes, false, bad .. " in " .. fz.show(bytes) end
  for _, r in ipairs(tr:records()) do
    local okl, q, k, v, info = pcall(tr.load, tr, r.step, r.layer)
    if okl then
      if info.step ~= r.step or info.layer ~= r.layer or q:shape()[1] ~= tr.S then
        return #bytes, false, "tr:load gave the wrong record for " .. fz.show(bytes)
      end
      q:free(); k:free(); v:free()
    elseif type(q) ~= "string" or q:sub(1, #prefix) ~= prefix then
      return #bytes, false, "tr:load raised " .. fz.show(tostring(q)) .. " on " .. fz.show(bytes)
    end
  end
  local okd, desc = pcall(tr.describe, tr)
  if not okd or desc:find("%-9223372036854775808") then
    return #bytes, false, "tr:describe gave " .. fz.show(tostring(desc)) .. " on " .. fz.show(bytes)
  end
  return #bytes, true
end

local good = fz.campaign({name = "trace_fuzz", seconds = seconds, seed = seed, runs = runs, one = one})
os.remove(path)
if not good then error("trace_fuzz: crashes or hangs (see above)", 0) end
