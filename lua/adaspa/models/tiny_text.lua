-- adaspa.models.tiny_text: the tiny model's text encoder (recipes/tools/tinyvideo/model.py,
-- TextEncoder), run with adaspa's ops: prompt -> word ids -> word embedding + learned positions ->
-- pre-LN transformer layers -> final LayerNorm -> states; pooled = Linear(mean of the states).
--
--   local tt = require "adaspa.models.tiny_text"
--   local enc = tt.new(weights, cfg, vocab)   -- weights: name -> tensor (keys under text_encoder.)
--   local text = enc:encode("a red square moving left over a striped blue background")
--   -- text = {states [text_len, dim] (rows past the prompt zero), valid = words, pooled [1, dim]}
local adaspa = require "adaspa"

local tt = {}
tt.VOCAB_FILE = "recipes/tools/tinyvideo/vocab.txt"
local EPS = 1e-6

local Enc = {}
Enc.__index = Enc

-- cfg = {dim=, layers=, heads=, max_len=, text_len=}; vocab = list of words (id = position - 1).
function tt.new(weights, cfg, vocab)
  local self = setmetatable({w = weights, cfg = cfg, vocab = vocab, index = {}}, Enc)
  for i, word in ipairs(vocab) do self.index[word] = i - 1 end
  local function need(name)
    if not weights[name] then error("tiny_text: missing weight text_encoder." .. name, 3) end
    return weights[name]
  end
  need("embed.weight"); need("pos"); need("norm.weight"); need("pool.weight")
  for i = 0, cfg.layers - 1 do need("blocks." .. i .. ".qkv.weight") end
  return self
end

-- Lower case, commas and full stops dropped, split on white space; "" -> {"<blank>"}.
function tt.words(prompt)
  local out = {}
  for w in prompt:lower():gsub("[,%.]", " "):gmatch("%S+") do out[#out + 1] = w end
  if #out == 0 then out[1] = "<blank>" end
  return out
end

function Enc:ids(prompt)
  if type(prompt) ~= "string" then error("tiny_text: prompt must be a string, got " .. type(prompt), 3) end
  local ids = {}
  for _, w in ipairs(tt.words(prompt)) do
    local id = self.index[w]
    if not id then
      error(string.format("tiny_text: unknown word '%s' in the prompt (the model knows %d words: %s; see %s)",
        w, #self.vocab, table.concat(self.vocab, " ", 2), tt.VOCAB_FILE), 3)
    end
    ids[#ids + 1] = id
  end
  if #ids > self.cfg.max_len then
    error(string.format("tiny_text: the prompt has %d words, the model takes at most %d", #ids, self.cfg.max_len), 3)
  end
  return ids
end

function Enc:lin(x, name, opts)
  return adaspa.linear(x, self.w[name .. ".weight"], self.w[name .. ".bias"], opts)
end

function Enc:ln(x, name)
  return adaspa.layernorm(x, EPS, self.w[name .. ".weight"], self.w[name .. ".bias"])
end

function Enc:encode(prompt)
  local cfg, w = self.cfg, self.w
  local ids = self:ids(prompt)
  local n, D, H = #ids, cfg.dim, cfg.heads
  local rows = {}
  for i, id in ipairs(ids) do rows[i] = w["embed.weight"]:narrow(1, id + 1, 1) end
  local x = adaspa.add(adaspa.concat(rows), w["pos"]:narrow(1, 1, n))
  for i = 0, cfg.layers - 1 do
    local p = "blocks." .. i .. "."
    local qkv = self:lin(self:ln(x, p .. "norm1"), p .. "qkv"):reshape({n, 3, H, D / H})
    local function part(j) return qkv:narrow(2, j, 1):reshape({n, H, D / H}) end
    local a = adaspa.attention(part(1), part(2), part(3))
    x = adaspa.add(x, self:lin(a:reshape({n, D}), p .. "proj"))
    x = adaspa.add(x, self:lin(self:lin(self:ln(x, p .. "norm2"), p .. "fc1", {act = "gelu_tanh"}), p .. "fc2"))
  end
  local states = self:ln(x, "norm")
  local mean = adaspa.matmul(adaspa.full({1, n}, 1 / n, {dtype = states:dtype(), device = states:device()}), states)
  local pooled = self:lin(mean, "pool")
  local L = cfg.text_len or cfg.max_len
  if n < L then
    states = adaspa.concat({states, adaspa.zeros({L - n, D}, {dtype = states:dtype(), device = states:device()})})
  end
  return {states = states, valid = n, pooled = pooled, words = n}
end

return tt
