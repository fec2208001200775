-- spec/fuzz/index_fuzz.lua: fuzzes the reader of sharded checkpoints' indexes
-- (*.safetensors.index.json: adaspa.weights.files, which HunyuanVideo's, Wan's and the tiny
-- model's loaders share). Run inside the adaspa binary:
--   adaspa spec/fuzz/index_fuzz.lua [SECONDS [SEED [RUNS]]]
--
-- Seeds are diffusers-style indexes (metadata, a weight_map of tensor name -> shard file). Each
-- input is a byte-level mutation (edge values, splices, dictionary tokens such as "../", "/",
-- quotes and braces). Acceptable outcomes: weights.files returns shard paths that are all the
-- index's folder + "/" + a plain file name (no "/", not "." or ".."), each once; or it fails with
-- a message "weights: ..." that names the index. Anything else is a crash, as is an input taking
-- over 2 s or allocating over 4 x its size + 2 MiB of Lua memory.
local fz = dofile("spec/fuzz/mutate.lua")
local weights = require "adaspa.weights"

local seconds, seed, runs = tonumber(arg[1]) or 10, tonumber(arg[2]) or 1, tonumber(arg[3])
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'") == 0 or true)
local path = dir .. "/model.safetensors.index.json"

local seeds = {
  '{"metadata": {"total_size": 123456}, "weight_map": {"double_blocks.0.img_mod.linear.weight": ' ..
    '"diffusion_pytorch_model-00001-of-00002.safetensors", "final_layer.linear.bias": ' ..
    '"diffusion_pytorch_model-00002-of-00002.safetensors"}}',
  '{"weight_map":{"a":"x.safetensors","b":"x.safetensors","c":"y.safetensors"}}',
  '{\n  "metadata": {},\n  "weight_map": {\n    "blocks.0.attn1.to_q.weight": "shard-1.safetensors"\n  }\n}\n',
}
local dict = {'"weight_map"', '"weight_map": {}', '../', '/', '..', '.', '"', '\\"', '{', '}', ':', ',', '"a": "b"',
  '/etc/passwd', 'x.safetensors', '\\u002f', '%', '\0'}

local function spit(s) local f = assert(io.open(path, "wb")); f:write(s); f:close() end

local function make(rng)
  local s = fz.mutate(rng, seeds[rng(#seeds)], seeds, dict)
  spit(s)
  return #s
end

local listed, refused = 0, 0
local function one(_, _, size)
  local ok, files = pcall(weights.files, path)
  if not ok then
    if type(files) == "string" and files:find("^weights: ") and files:find(path, 1, true) then
      refused = refused + 1
      return size, true
    end
    return size, false, "weights.files raised " .. fz.show(tostring(files))
  end
  if type(files) ~= "table" or #files == 0 then return size, false, "weights.files gave no shard" end
  local seen = {}
  for _, f in ipairs(files) do
    local name = type(f) == "string" and f:sub(1, #dir + 1) == dir .. "/" and f:sub(#dir + 2)
    if not name or name == "" or name:find("/", 1, true) or name == "." or name == ".." then
      return size, false, "weights.files gave the shard path " .. fz.show(tostring(f))
    end
    if seen[name] then return size, false, "weights.files gave the shard " .. fz.show(name) .. " twice" end
    seen[name] = true
  end
  listed = listed + 1
  return size, true
end

local good = fz.campaign({name = "index_fuzz", seconds = seconds, seed = seed, runs = runs, make = make, one = one})
os.remove(path)
os.remove(dir)
print(string.format("index_fuzz outcomes: %d inputs listed shards, %d refused with a message", listed, refused))
if not good then error("index_fuzz: crashes or hangs (see above)", 0) end
