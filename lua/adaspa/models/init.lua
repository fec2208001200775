-- adaspa.models: the registry of the video models the jobs run (as adaspa.policy is for policies).
--
--   local models = require "adaspa.models"
--   local M = models.get("hunyuan")        -- the model's entry (a module); unknown names fail, listing the known
--   models.names()                         -- {"hunyuan", ...} (sorted)
--   models.register("mine", "adaspa.models.mine")   -- one more model: one line
--
-- Nothing in adaspa.jobs or adaspa.footprint names a model: they go through an entry's interface.
--
-- The entry interface. An entry is a module (a table) with:
--   M.name                         the registered name ("hunyuan");
--   M.doc                          one line for help texts and reports;
--   M.presets                      preset name -> configuration table;
--   M.default_preset               the preset model.preset = "auto" takes on a GPU (the real model);
--   M.cpu_preset                   optional: the one "auto" takes on the CPU (default: "small" when
--                                  the entry has it, else default_preset);
--   M.config(preset, overrides)    -> cfg: the preset with overrides merged in (nested tables field
--                                  by field); cfg.preset is set; cfg.video = the default
--                                  {width, height, frames}; cfg.heads = attention heads per layer;
--                                  errors name the entry, the field and the value;
--   M.overrides(model_fields, preset) -> overrides for M.config from the recipe's model table
--                                  (optional: default, every M.schema field the recipe set);
--   M.grid(video, cfg)             -> token grid {T, H, W} (latent tokens after patching), latent
--                                  shape {C, T, H, W} (what the sampler integrates);
--   M.attention_layers(cfg)        -> the number of self-attention calls per forward that go through
--                                  ctx:attention (layers 1..n of the policy and the cache);
--   M.tokens(cfg, video)           -> {n_img =, n_txt =}: the tokens of each self-attention call
--                                  (latent tokens first; n_txt joined text tokens, 0 when the
--                                  model attends to text by cross-attention);
--   M.weight_shapes(cfg)           -> canonical weight name -> shape;
--   M.load_weights(source, cfg, opts) -> canonical name -> tensor. source: a .safetensors file, a
--                                  list of shard files, or a folder holding a
--                                  *.safetensors.index.json (sharded checkpoints); opts = {device,
--                                  dtype, prefix} (prefix: a key prefix stripped before matching,
--                                  e.g. "model.diffusion_model."). adaspa.weights has the shared
--                                  helpers (weights.files, weights.info, weights.read);
--   M.synthetic_weights(cfg, {seed, device, dtype}) -> canonical name -> tensor;
--   M.conditioning(cfg, {embeds = path or nil, prompt = string, negative = string or nil,
--                  guidance = number, cfg = bool, device, dtype})
--                               -> {cond = <one branch's conditioning>, uncond = <or nil>,
--                                  source = "what it came from"}; uncond is built when opts.cfg
--                                  (classifier-free guidance) asks for it: from the embeddings
--                                  file's negative_text_* entries, else from the negative prompt
--                                  (synthetic). The embeddings file (safetensors): text_states
--                                  [L, D], text_mask [L] (1s then 0s) and any pooled vector the
--                                  model takes (text_pooled [P] for HunyuanVideo), plus optional
--                                  negative_text_states / negative_text_mask / negative_text_pooled;
--   M.new(cfg, weights)            -> model with model:forward(x, t, cond, ctx) -> velocity (x's
--                                  shape); cond: one branch's conditioning (an embedded guidance
--                                  scale travels inside it); ctx: the attention context
--                                  (adaspa.attention) or nil for dense attention; the model calls
--                                  ctx:attention(q, k, v, info) with info = {layer=, kind=, index=,
--                                  kv_valid=, n_img=, n_txt=, grid=};
--   M.sampler_defaults             {shift =, steps =, guidance = {kind = "embedded" | "cfg", scale =}};
--                                  a preset's own cfg.shift, when its config has one, wins;
--   M.fps                          optional: the video's frame rate (default 24; the mp4 of the
--                                  previews plays at fps / 4);
--   M.schema                       optional: the model's own recipe fields under model.* (adaspa.check
--                                  specs; shown by adaspa recipe FILE --help);
--   M.estimate(cfg, video, dtype)  optional (adaspa.footprint): {tokens =, image_tokens =, params =,
--                                  largest = (elements of the largest weight), activation_bytes =
--                                  (peak of one forward), linear_flops =, attention_flops = (dense,
--                                  of one forward), output_bytes = (one layer's attention output),
--                                  heads =, layers = (attention layers)}; without it footprint
--                                  counts the weights and the attention only;
--   M.describe(cfg)                optional: one line naming the model and its sizes, for progress
--                                  lines and reports;
--   M.default_weights()            optional: the checkpoint a recipe without model.weights runs (a
--                                  trained model that ships its weights: tiny); raises, saying how
--                                  to get them, when they are not there. Without it: synthetic;
--   M.decode(model, latent)        optional: the final latent -> the video's frames (a list of u8
--                                  [H, W, 3] tensors), with a decoder that travels with the weights
--                                  (tiny); the job writes them instead of latent previews.
-- M.conditioning's opts also carry model = the model M.new built (a model whose text encoder
-- travels with its weights encodes the prompt with it: tiny).
local models = {}

local registry = {}   -- name -> module name
local order = {}

-- Registers model `name` as module `module_name` (loaded on first use). Re-registering a name
-- replaces it.
function models.register(name, module_name)
  if type(name) ~= "string" or not name:match("^[%w_%-%.]+$") then
    error("models.register: name must be a word (letters, digits, _ - .), got " .. tostring(name), 2)
  end
  if type(module_name) ~= "string" or module_name == "" then
    error("models.register: module_name must be a module name string, got " .. tostring(module_name), 2)
  end
  if not registry[name] then order[#order + 1] = name end
  registry[name] = module_name
end

-- Removes a registered name (for tests and scripts that registered one of their own).
function models.unregister(name)
  if registry[name] == nil then return end
  registry[name] = nil
  for i, n in ipairs(order) do if n == name then table.remove(order, i); break end end
end

-- The registered names, sorted.
function models.names()
  local out = {}
  for _, n in ipairs(order) do out[#out + 1] = n end
  table.sort(out)
  return out
end

-- Whether name is registered.
function models.known(name) return type(name) == "string" and registry[name] ~= nil end

local REQUIRED = {"config", "grid", "attention_layers", "tokens", "weight_shapes", "load_weights",
                  "synthetic_weights", "conditioning", "new"}

-- nil when the module m meets the entry interface, else what it lacks.
function models.check(m)
  if type(m) ~= "table" then return "a model entry must be a table, got " .. type(m) end
  for _, f in ipairs(REQUIRED) do
    if type(m[f]) ~= "function" then return string.format("a model entry needs a function %s, got %s", f, type(m[f])) end
  end
  if type(m.name) ~= "string" then return "a model entry needs name (a string)" end
  if type(m.presets) ~= "table" or m.presets[m.default_preset] == nil then
    return "a model entry needs presets and a default_preset among them"
  end
  local sd = m.sampler_defaults
  if type(sd) ~= "table" or type(sd.guidance) ~= "table" or (sd.guidance.kind ~= "embedded" and sd.guidance.kind ~= "cfg") then
    return "a model entry needs sampler_defaults = {shift =, steps =, guidance = {kind = \"embedded\" | \"cfg\", scale =}}"
  end
end

-- The entry of model `name` (its module, loaded and checked once).
function models.get(name)
  local mod = type(name) == "string" and registry[name] or nil
  if not mod then
    error(string.format("unknown model %s (known models: %s)", type(name) == "string" and string.format("%q", name)
      or tostring(name), table.concat(models.names(), ", ")), 2)
  end
  local ok, m = pcall(require, mod)
  if not ok then error(string.format("model %s (%s): %s", name, mod, tostring(m)), 2) end
  local why = models.check(m)
  if why then error(string.format("model %s (%s): %s", name, mod, why), 2) end
  return m
end

-- The preset model.preset = "auto" means for entry m on device ("cpu" or a GPU).
function models.auto_preset(m, device)
  if device == "cpu" then return m.cpu_preset or (m.presets.small and "small") or m.default_preset end
  return m.default_preset
end

-- The sorted preset names of entry m.
function models.presets(m)
  local out = {}
  for k in pairs(m.presets) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- A one-line description of a resolved configuration of entry m.
function models.describe(m, cfg)
  if m.describe then return m.describe(cfg) end
  return string.format("%s %s, %d attention layers, %d heads", m.name, tostring(cfg.preset), m.attention_layers(cfg),
    cfg.heads or 0)
end

models.register("hunyuan", "adaspa.models.hunyuan")
models.register("wan", "adaspa.models.wan")
models.register("tiny", "adaspa.models.tiny")

-- The model a recipe without model.name runs.
models.default = "hunyuan"

return models
