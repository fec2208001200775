-- spec/fuzz/tiny_fuzz.lua: fuzzes the tiny model's export reader (lua/adaspa/models/tiny.lua:
-- tiny.check_export, then tiny.load, over the safetensors reader). Run inside the adaspa binary:
--   adaspa spec/fuzz/tiny_fuzz.lua [SECONDS [SEED [RUNS]]]
--
-- The seed is the smoke export spec/fixtures/tiny/tiny_model.safetensors. Each input is one of:
--   - a header-level mutation: 1 to 3 of its tiny.* metadata entries mutated (numeric edge values,
--     splices, dictionary tokens), dropped or added, or a text encoder / decoder tensor dropped,
--     renamed or reshaped, then saved as a well-formed safetensors file (reaches tiny.lua's checks);
--   - a byte-level mutation of the whole file (reaches the safetensors reader through Lua).
-- Acceptable outcomes: the export is refused with a message naming the file ("tiny: <path>: ...",
-- "tiny.load: <path> ...", "adaspa.safetensors.info: <path>: ...", "weights.load: <path> ..."), or it loads,
-- its sizes are inside tiny.LIMITS, and its text encoder encodes a prompt of its own words and its
-- decoder decodes a small latent into frames of the expected shape. Anything else is a crash, and
-- so is an input that takes more than 2 s or allocates more than 4 x its size + 2 MiB of Lua memory.
local fz = dofile("spec/fuzz/mutate.lua")
local tiny = require "adaspa.models.tiny"

local seconds, seed, runs = tonumber(arg[1]) or 10, tonumber(arg[2]) or 1, tonumber(arg[3])
local SEED_FILE = "spec/fixtures/tiny/tiny_model.safetensors"
local path = os.tmpname() .. ".safetensors"

local function slurp(p) local f = assert(io.open(p, "rb")); local s = f:read("*a"); f:close(); return s end
local function spit(p, s) local f = assert(io.open(p, "wb")); f:write(s); f:close() end

local file = slurp(SEED_FILE)
local tensors, meta = adaspa.safetensors.load(SEED_FILE)
local meta_keys, values, foreign = {}, {}, {}
for k, v in pairs(meta) do
  if k:find("^tiny%.") or k == "format" then meta_keys[#meta_keys + 1] = k end
  values[#values + 1] = v
end
for n in pairs(tensors) do
  if n:find("^text_encoder%.") or n:find("^decoder%.") then foreign[#foreign + 1] = n end
end
table.sort(meta_keys); table.sort(values); table.sort(foreign)
local dict = {"tiny.", "dit.", "text.", "ae.", "video.", "layers.", "double", "single", "refiner", "<blank>", " ", ",",
  "16", "64", "4096", "4097", "1025", "65536", "adaspa-tiny-1"}
local extra_keys = {"tiny.dit", "tiny.dit.layers", "tiny.video", "tiny.text.dim.x", "tiny.dit.video.width", "tiny.x"}

local function structured(rng)
  local md, named = {}, {}
  for k, v in pairs(meta) do md[k] = v end
  for n, t in pairs(tensors) do named[n] = t end
  for _ = 1, rng(3) do
    local r = rng(8)
    local k = r == 8 and extra_keys[rng(#extra_keys)] or meta_keys[rng(#meta_keys)]
    if r == 1 then md[k] = nil
    else md[k] = fz.mutate(rng, md[k] or values[rng(#values)], values, dict) end
  end
  if rng(3) == 1 then
    local n = foreign[rng(#foreign)]
    local t, r = named[n], rng(3)
    named[n] = nil
    if r == 2 then named[fz.mutate(rng, n, foreign, dict)] = t
    elseif r == 3 then
      local s = t:shape()
      named[n] = #s == 2 and s[1] % 2 == 0 and t:reshape({s[1] / 2, 2 * s[2]}) or t:reshape({-1})
    end
  end
  local ok = pcall(adaspa.safetensors.save, path, named, md)
  if not ok then return nil end   -- not a writable file (a metadata string with a NUL, a bad name)
  return slurp(path)
end

-- The messages a refusal may carry: each names the file.
local function refusal(msg)
  if type(msg) ~= "string" then return false end
  return msg:sub(1, #("tiny: " .. path .. ": ")) == "tiny: " .. path .. ": "
    or msg:sub(1, #("tiny.load: " .. path)) == "tiny.load: " .. path
    or msg:sub(1, #("weights.load: " .. path)) == "weights.load: " .. path
    or msg:sub(1, #("adaspa.safetensors.info: " .. path .. ": ")) == "adaspa.safetensors.info: " .. path .. ": "
end

local function whole(x, lo, hi) return type(x) == "number" and x == math.floor(x) and x >= lo and x <= hi end

-- What a loaded export must satisfy (so a reader that accepts too much fails here).
local function violation(m)
  local c, L = m.cfg, tiny.LIMITS
  for _, f in ipairs({{c.hidden, 1, L.dim}, {c.heads, 1, L.heads}, {c.head_dim, 2, L.dim}, {c.layers.double, 0, L.layers},
      {c.layers.single, 0, L.layers}, {c.layers.refiner, 0, L.layers}, {c.text_len, 1, L.text_len},
      {c.video.width, 16, L.side}, {c.video.height, 16, L.side}, {c.video.frames, 1, L.frames},
      {c.tiny.text.layers, 0, L.layers}, {c.tiny.ae.dec_mix, 0, L.layers}, {c.tiny.ae.dec_mlp, 0, L.layers}}) do
    if not whole(f[1], f[2], f[3]) then return "accepted the size " .. tostring(f[1]) end
  end
  if c.video.width % 16 ~= 0 or c.video.height % 16 ~= 0 or (c.video.frames - 1) % 4 ~= 0 then
    return "accepted the video " .. c.video.width .. "x" .. c.video.height .. "x" .. c.video.frames
  end
  if not (c.eps > 0 and c.eps < 1 and c.rope_theta > 0 and c.rope_theta < math.huge) then
    return "accepted eps " .. tostring(c.eps) .. " / rope_theta " .. tostring(c.rope_theta)
  end
end

-- The input, written to path (made outside the allocation measurement: the byte-level mutation
-- copies the 335 KB seed several times).
local function make(rng)
  local bytes
  if rng(2) == 1 then bytes = structured(rng) end
  if not bytes then bytes = fz.mutate(rng, file, {file}, dict); spit(path, bytes) end
  return #bytes
end

local loaded, refused = 0, 0
local function one(rng, _, size)
  local ok, m = pcall(tiny.load, path)
  if not ok then
    if refusal(m) then refused = refused + 1; return size, true end
    return size, false, "tiny.load raised " .. fz.show(tostring(m))
  end
  local bad = violation(m)
  if bad then return size, false, bad end
  local words = {}
  for i = 2, math.min(#m.vocab, m.cfg.tiny.text.max_len + 1) do words[#words + 1] = m.vocab[i] end
  local oke, text = pcall(m.text.encode, m.text, #words > 0 and table.concat(words, " ") or "")
  if not oke then return size, false, "encode raised " .. fz.show(tostring(text)) end
  local s = text.states:shape()
  if s[1] ~= m.cfg.text_len or s[2] ~= m.cfg.tiny.text.dim then
    return size, false, "the text states have shape [" .. table.concat(s, ", ") .. "]"
  end
  local okd, frames = pcall(m.decoder.decode, m.decoder, adaspa.randn({16, 2, 1, 2}, {seed = 1}))
  if not okd then return size, false, "decode raised " .. fz.show(tostring(frames)) end
  local f = frames:shape()
  if f[1] ~= 5 or f[2] ~= 8 or f[3] ~= 16 or f[4] ~= 3 then
    return size, false, "decoded frames have shape [" .. table.concat(f, ", ") .. "]"
  end
  loaded = loaded + 1
  return size, true
end

local good = fz.campaign({name = "tiny_fuzz", seconds = seconds, seed = seed, runs = runs, make = make, one = one})
os.remove(path)
print(string.format("tiny_fuzz outcomes: %d inputs loaded (encoded and decoded), %d refused with a message", loaded, refused))
if not good then error("tiny_fuzz: crashes or hangs (see above)", 0) end
