-- adaspa.models.tiny: the small trained video model of recipes/tools/tinyvideo (text encoder,
-- HunyuanVideo DiT, latent decoder) from ONE safetensors file: the DiT under the original
-- checkpoint's names, the text encoder under text_encoder., the decoder under decoder.; its
-- configuration in flat metadata entries "tiny.<path>" (and the vocabulary in "tiny.vocab").
--
--   local tiny = require "adaspa.models.tiny"
--   local m = tiny.load(path)                   -- {cfg=, meta=, vocab=, text=, decoder=, dit=}
--   local text = m.text:encode(prompt)          -- for m.dit:forward(x, t, text, guidance, ctx)
--   local frames = m.decoder:decode(latent)     -- [F, H, W, 3]
--
-- It is also the model registry's entry "tiny" (adaspa.models; the interface is described
-- there): `adaspa recipe tiny prompt="..."` runs it. The entry's sizes come from the export's
-- metadata (tiny.overrides reads them from model.weights, default tiny.weights_path()); the DiT
-- is adaspa.models.hunyuan's; the prompt is encoded by the export's text encoder
-- (tiny.conditioning, given the built model), and the job decodes the final latent into frames
-- with the export's decoder (tiny.decode). The trained export lives at tiny.WEIGHTS under
-- adaspa's home (the repository or the installed share/adaspa).
local adaspa = require "adaspa"
local hy = require "adaspa.models.hunyuan"
local tt = require "adaspa.models.tiny_text"
local td = require "adaspa.models.tiny_decoder"

local tiny = {}

-- The trained export, relative to adaspa's home: the ONE place that names it.
tiny.WEIGHTS = "models/tiny/tiny.safetensors"
-- Keys of the export that are not the DiT's (adaspa.weights.load skips them).
tiny.FOREIGN = {"text_encoder.", "decoder."}
tiny.FORMAT = "adaspa-tiny-1"

-- The "tiny.*" metadata entries (but tiny.vocab) as a nested table: "tiny.a.b" = v becomes
-- t.a.b = leaf(v); clash(key) is called for an entry whose name is both a value and a group
-- ("tiny.a" beside "tiny.a.b"), in either order.
local function nest(meta, leaf, clash)
  local cfg = {}
  for k, v in pairs(meta) do
    local path = k:match("^tiny%.(.+)$")
    if path and path ~= "vocab" then
      local t, parts = cfg, {}
      for p in path:gmatch("[^%.]+") do parts[#parts + 1] = p end
      for i = 1, #parts - 1 do
        if t[parts[i]] == nil then t[parts[i]] = {} end
        if type(t[parts[i]]) ~= "table" then clash(k) end
        t = t[parts[i]]
      end
      if type(t[parts[#parts]]) == "table" then clash(k) end
      t[parts[#parts]] = leaf(v)
    end
  end
  return cfg
end

-- The "tiny.*" metadata entries as a nested table (numbers converted, comma lists split); the
-- metadata is one tiny.check_export has passed.
function tiny.meta_config(meta)
  return nest(meta, function(v)
    if not v:find(",") then return tonumber(v) or v end
    local val = {}
    for x in v:gmatch("[^,]+") do val[#val + 1] = tonumber(x) or x end
    return val
  end, function(k) error("tiny: metadata entry " .. k .. " clashes with another tiny.* entry", 0) end)
end

local function sub(weights, prefix)
  local out = {}
  for k, v in pairs(weights) do
    if k:sub(1, #prefix) == prefix then out[k:sub(#prefix + 1)] = v end
  end
  return out
end

-- hunyuan.config overrides (and the tiny model's own parts under .tiny) from the nested metadata
-- configuration c (tiny.meta_config) and the vocabulary.
function tiny.hy_overrides(c, vocab)
  local d = c.dit or {}
  local v = c.video or {}
  local t = c.text or {}
  local function need(x, what)
    if x == nil then error("tiny: the export's metadata has no tiny." .. what .. " (not a complete adaspa-tiny-1 export)", 0) end
    return x
  end
  return {
    hidden = need(d.hidden, "dit.hidden"), heads = need(d.heads, "dit.heads"), head_dim = need(d.head_dim, "dit.head_dim"),
    mlp_ratio = need(d.mlp_ratio, "dit.mlp_ratio"),
    layers = {double = need(d.layers and d.layers.double, "dit.layers.double"),
              single = need(d.layers and d.layers.single, "dit.layers.single"),
              refiner = need(d.layers and d.layers.refiner, "dit.layers.refiner")},
    in_channels = need(d.in_channels, "dit.in_channels"), text_dim = need(d.text_dim, "dit.text_dim"),
    text_len = need(d.text_len, "dit.text_len"), pooled_dim = need(d.pooled_dim, "dit.pooled_dim"),
    rope_axes = need(d.rope_axes, "dit.rope_axes"), rope_theta = need(d.rope_theta, "dit.rope_theta"), eps = need(d.eps, "dit.eps"),
    video = {width = need(v.width, "video.width"), height = need(v.height, "video.height"), frames = need(v.frames, "video.frames")},
    tiny = {text = {dim = need(t.dim, "text.dim"), layers = need(t.layers, "text.layers"), heads = need(t.heads, "text.heads"),
                    max_len = need(t.max_len, "text.max_len")},
            ae = {dec_dim = need(c.ae and c.ae.dec_dim, "ae.dec_dim"), dec_mix = need(c.ae and c.ae.dec_mix, "ae.dec_mix"),
                  dec_mlp = need(c.ae and c.ae.dec_mlp, "ae.dec_mlp")},
            vocab = vocab},
  }
end

local function vocab_of(meta)
  local vocab = {}
  for word in (meta["tiny.vocab"] or ""):gmatch("%S+") do vocab[#vocab + 1] = word end
  return vocab
end

local function check_format(path, meta)
  if meta.format ~= tiny.FORMAT then
    error(string.format("tiny.load: %s is not a tiny model export (metadata format %s, expected %s;"
      .. " write one with recipes/tools/tinyvideo/train.py)", path, tostring(meta.format), tiny.FORMAT), 0)
  end
end

-- ---- validating an export (a file from anyone: checked before any size in it is used) -----------

-- Bounds of an export's configuration: far above the trained model's, low enough that what the
-- metadata claims cannot make a run loop or allocate beyond what the tensors hold.
tiny.LIMITS = {dim = 65536, heads = 1024, layers = 1024, text_len = 4096, side = 4096, frames = 1025,
  words = 65536, word_bytes = 64}

-- The text encoder's and the decoder's tensors (names under text_encoder. / decoder.) and their
-- shapes under configuration c (tiny.meta_config's), as model.py writes them.
function tiny.part_shapes(c, vocab_size)
  local t, a, shapes = c.text, c.ae, {}
  local function lin(pre, name, out, inp, bias)
    shapes[pre .. name .. ".weight"] = {out, inp}
    if bias ~= false then shapes[pre .. name .. ".bias"] = {out} end
  end
  local function ln(pre, name, d) shapes[pre .. name .. ".weight"] = {d}; shapes[pre .. name .. ".bias"] = {d} end
  local D, E = t.dim, "text_encoder."
  shapes[E .. "embed.weight"] = {vocab_size, D}
  shapes[E .. "pos"] = {t.max_len, D}
  for i = 0, t.layers - 1 do
    local b = E .. "blocks." .. i .. "."
    ln(b, "norm1", D); ln(b, "norm2", D)
    lin(b, "qkv", 3 * D, D); lin(b, "proj", D, D); lin(b, "fc1", 4 * D, D); lin(b, "fc2", D, 4 * D)
  end
  ln(E, "norm", D); lin(E, "pool", c.dit.pooled_dim, D)
  local A, P = a.dec_dim, "decoder."
  lin(P, "lin_in", A, c.dit.in_channels)
  for i = 0, a.dec_mix - 1 do
    local b = P .. "mix." .. i .. "."
    ln(b, "norm", A)
    for k = 0, 6 do lin(b, "taps." .. k, A, A, k == 0) end
  end
  for i = 0, a.dec_mlp - 1 do
    local b = P .. "mlp." .. i .. "."
    ln(b, "norm", A); lin(b, "fc1", 2 * A, A); lin(b, "fc2", A, 2 * A)
  end
  ln(P, "norm", A); lin(P, "lin_out", 4 * 8 * 8 * 3, A)
  return shapes
end

-- Checks the export at path before its sizes are used: the format; every configuration entry of
-- the metadata a whole number (or, for eps, rope_theta and mlp_ratio, a finite positive number)
-- inside tiny.LIMITS and consistent with the others (hidden = heads x head_dim, the RoPE axes
-- even and summing to head_dim, a video size the latent grid divides, the text widths equal);
-- the vocabulary's words distinct and bounded; and the text encoder's and decoder's tensors
-- present with the shapes the configuration gives, no others under their prefixes (the DiT's are
-- checked by adaspa.weights.load). info, meta: adaspa.safetensors.info(path)'s, when the caller
-- has them. Returns the checked configuration (numbers), the vocabulary, info and meta. Errors read
-- "tiny: <path>: ...".
function tiny.check_export(path, info, meta)
  if not meta then
    local ok, i, m = pcall(adaspa.safetensors.info, path)
    if not ok then error((tostring(i):gsub("^[^:]*%.lua:%d+: ", "")), 0) end
    info, meta = i, m
  end
  check_format(path, meta)
  local function fail(fmt, ...) error(string.format("tiny: %s: " .. fmt, path, ...), 0) end
  -- the tiny.* entries, nested (as strings); a name that is both a value and a group is refused
  local c = nest(meta, function(v) return v end,
    function(k) fail("metadata entry %s clashes with another tiny.* entry", k) end)
  local L = tiny.LIMITS
  local function get(dotted)
    local v = c
    for part in dotted:gmatch("[^%.]+") do v = type(v) == "table" and v[part] or nil end
    if v == nil then fail("the metadata has no tiny.%s (not a complete %s export)", dotted, tiny.FORMAT) end
    if type(v) == "table" then fail("metadata tiny.%s must be a value, not a group of entries", dotted) end
    return v
  end
  local function int(dotted, lo, hi)
    local s = get(dotted)
    local n = tonumber(s)
    if not n or n ~= math.floor(n) or n < lo or n > hi then
      fail("metadata tiny.%s = %q must be a whole number from %d to %d", dotted, s:sub(1, 40), lo, hi)
    end
    return n
  end
  local function pos(dotted, hi)
    local s = get(dotted)
    local n = tonumber(s)
    if not n or n ~= n or n <= 0 or n >= hi then
      fail("metadata tiny.%s = %q must be a number above 0 and below %g", dotted, s:sub(1, 40), hi)
    end
    return n
  end
  local w = {text = {}, ae = {}, dit = {layers = {}}, video = {}}
  local d = w.dit
  d.heads, d.head_dim = int("dit.heads", 1, L.heads), int("dit.head_dim", 2, L.dim)
  d.hidden = int("dit.hidden", 1, L.dim)
  if d.hidden ~= d.heads * d.head_dim then
    fail("metadata tiny.dit.hidden (%d) must equal tiny.dit.heads (%d) x tiny.dit.head_dim (%d)", d.hidden, d.heads, d.head_dim)
  end
  d.mlp_ratio = pos("dit.mlp_ratio", 65)
  if d.hidden * d.mlp_ratio ~= math.floor(d.hidden * d.mlp_ratio) then
    fail("metadata tiny.dit.mlp_ratio (%s) x tiny.dit.hidden (%d) must be a whole number", get("dit.mlp_ratio"), d.hidden)
  end
  for _, n in ipairs({"double", "single", "refiner"}) do d.layers[n] = int("dit.layers." .. n, 0, L.layers) end
  d.in_channels = int("dit.in_channels", 16, 16)
  d.text_len = int("dit.text_len", 1, L.text_len)
  d.rope_theta, d.eps = pos("dit.rope_theta", math.huge), pos("dit.eps", 1)
  local axes = {}
  for x in get("dit.rope_axes"):gmatch("[^,]+") do axes[#axes + 1] = tonumber(x) or -1 end
  local sum = 0
  for _, a in ipairs(axes) do
    if a ~= math.floor(a) or a < 0 or a % 2 ~= 0 then sum = -1 break end
    sum = sum + a
  end
  if #axes ~= 3 or sum ~= d.head_dim then
    fail("metadata tiny.dit.rope_axes = %q must be three even whole numbers summing to tiny.dit.head_dim (%d)",
      get("dit.rope_axes"):sub(1, 40), d.head_dim)
  end
  d.rope_axes = axes
  -- a block count beyond the file's tensors (each block has several) only makes work before the check
  for _, n in ipairs({"dit.layers.double", "dit.layers.single", "dit.layers.refiner", "text.layers", "ae.dec_mix", "ae.dec_mlp"}) do
    local k = tonumber(get(n))
    if k and k > #info then fail("metadata tiny.%s = %d blocks, but the file holds %d tensors in all", n, k, #info) end
  end
  local t = w.text
  t.dim, t.heads, t.layers = int("text.dim", 1, L.dim), int("text.heads", 1, L.heads), int("text.layers", 0, L.layers)
  t.max_len = int("text.max_len", 1, d.text_len)
  if t.dim % t.heads ~= 0 then fail("metadata tiny.text.dim (%d) must be a multiple of tiny.text.heads (%d)", t.dim, t.heads) end
  d.text_dim, d.pooled_dim = int("dit.text_dim", t.dim, t.dim), int("dit.pooled_dim", 1, L.dim)
  local a = w.ae
  a.dec_dim, a.dec_mix, a.dec_mlp = int("ae.dec_dim", 1, L.dim), int("ae.dec_mix", 0, L.layers), int("ae.dec_mlp", 0, L.layers)
  local v = w.video
  v.width, v.height = int("video.width", 16, L.side), int("video.height", 16, L.side)
  v.frames = int("video.frames", 1, L.frames)
  if v.width % 16 ~= 0 or v.height % 16 ~= 0 or (v.frames - 1) % 4 ~= 0 then
    fail("the metadata's video %dx%d, %d frames: width and height must be multiples of 16 and frames 4k + 1", v.width, v.height, v.frames)
  end
  local vocab, seen = vocab_of(meta), {}
  if #vocab == 0 or #vocab > L.words then fail("metadata tiny.vocab must hold 1 to %d words, has %d", L.words, #vocab) end
  for i, word in ipairs(vocab) do
    if #word > L.word_bytes then fail("metadata tiny.vocab: word %d is over %d bytes", i, L.word_bytes) end
    if word ~= word:lower() or word:find("[,%.]") then   -- tiny_text.words lower-cases prompts and drops , and .
      fail("metadata tiny.vocab: the word %q could never match a prompt's word (lower case, no ',' or '.')", word)
    end
    if seen[word] then fail("metadata tiny.vocab: the word %q appears twice", word) end
    seen[word] = true
  end
  local want = tiny.part_shapes(w, #vocab)
  local have = {}
  for _, e in ipairs(info) do
    for _, pre in ipairs(tiny.FOREIGN) do
      if e.name:sub(1, #pre) == pre then
        if not want[e.name] then fail("unexpected tensor %s (not one of the %s configuration's)", e.name, pre:sub(1, -2)) end
        have[e.name] = e
      end
    end
  end
  local names = {}
  for n in pairs(want) do names[#names + 1] = n end
  table.sort(names)
  for _, n in ipairs(names) do
    local e, s = have[n], want[n]
    if not e then fail("missing tensor %s [%s] (the metadata's configuration has it)", n, table.concat(s, ", ")) end
    if not (e.dtype == "f16" or e.dtype == "bf16" or e.dtype == "f32") then
      fail("tensor %s is %s; the export's tensors are floating point (f16, bf16 or f32)", n, e.dtype)
    end
    if table.concat(e.shape, ",") ~= table.concat(s, ",") then
      fail("tensor %s has shape [%s], the metadata's configuration gives [%s]", n, table.concat(e.shape, ", "), table.concat(s, ", "))
    end
  end
  return w, vocab, info, meta
end

-- The text encoder and the decoder of an export's tensors w (name -> tensor, keys with their
-- text_encoder. / decoder. prefixes) under configuration cfg (tiny.config's).
local function parts(w, cfg)
  local t, a = cfg.tiny.text, cfg.tiny.ae
  return tt.new(sub(w, "text_encoder."), {dim = t.dim, layers = t.layers, heads = t.heads, max_len = t.max_len,
      text_len = cfg.text_len}, cfg.tiny.vocab),
    td.new(sub(w, "decoder."), {dim = a.dec_dim, mix = a.dec_mix, mlp = a.dec_mlp})
end

-- load(path [, {dtype = "f32", device = "cpu"}])
function tiny.load(path, opts)
  opts = opts or {}
  -- the header, read once and checked before any size in it is used
  local ok, err, _, info, meta = pcall(tiny.check_export, path)
  if not ok then error(err, 2) end
  local c = tiny.meta_config(meta)
  local vocab = vocab_of(meta)
  local cfg = tiny.config(tiny.default_preset, tiny.hy_overrides(c, vocab))
  -- the DiT's tensors against the configuration's (the run's path checks them in adaspa.weights.load)
  local want, seen = hy.weight_shapes(cfg), {}
  for _, e in ipairs(info) do
    if not e.name:find("^text_encoder%.") and not e.name:find("^decoder%.") then
      local s = want[e.name]
      if not s then error(string.format("tiny: %s: unexpected tensor %s (not one of the DiT's)", path, e.name), 2) end
      if table.concat(s, ",") ~= table.concat(e.shape, ",") then
        error(string.format("tiny: %s: tensor %s has shape [%s], the metadata's configuration gives [%s]", path, e.name,
          table.concat(e.shape, ", "), table.concat(s, ", ")), 2)
      end
      seen[e.name] = true
    end
  end
  local names = {}
  for n in pairs(want) do if not seen[n] then names[#names + 1] = n end end
  table.sort(names)
  if #names > 0 then error(string.format("tiny: %s: missing tensor %s (and %d more)", path, names[1], #names - 1), 2) end
  local raw = adaspa.safetensors.load(path)
  local dtype, device = opts.dtype or "f32", opts.device or "cpu"
  local w = {}
  for k, t in pairs(raw) do
    local u = t:to(dtype)
    w[k] = u:to(device)
  end
  local dit_w = {}
  for k, t in pairs(w) do
    if not k:find("^text_encoder%.") and not k:find("^decoder%.") then dit_w[k] = t end
  end
  local text, decoder = parts(w, cfg)
  return {cfg = cfg, tiny = c, meta = meta, vocab = vocab, weights = w, text = text, decoder = decoder,
    dit = hy.new(cfg, dit_w)}
end

-- ---- the registry entry (adaspa.models) -------------------------------------------------------------

tiny.name = "tiny"
tiny.doc = "the small video model trained by recipes/tools/tinyvideo (HunyuanVideo's DiT, 256x256x33, its own text "
  .. "encoder and decoder; weights " .. tiny.WEIGHTS .. ")"
tiny.default_preset = "trained"
tiny.cpu_preset = "trained"
-- flow matching as trained (x_s = (1 - s) x0 + s e); the guidance embedder was frozen at zero in
-- training, so the embedded scale changes nothing: guidance_kind = cfg (uncond: the blank prompt,
-- which training used for 10% of the clips) is the guidance that acts
tiny.sampler_defaults = {shift = 3.0, steps = 50, guidance = {kind = "embedded", scale = 6.0}}
tiny.fps = 8

-- The sizes train.py's full run uses (recipes/tools/tinyvideo/train.py, FULL); an export's
-- metadata overrides them (tiny.overrides), so these only stand when no export is there.
tiny.presets = {
  trained = {
    hidden = 128, heads = 2, head_dim = 64, mlp_ratio = 4, layers = {double = 2, single = 2, refiner = 1},
    in_channels = 16, text_dim = 128, text_len = 24, pooled_dim = 128, rope_axes = {16, 24, 24}, rope_theta = 256,
    eps = 1e-6, video = {width = 256, height = 256, frames = 33}, fused_norm_rope = true,
    tiny = {text = {dim = 128, layers = 2, heads = 2, max_len = 24}, ae = {dec_dim = 128, dec_mix = 2, dec_mlp = 2},
            vocab = {}},
  },
}

-- The trained export's path: tiny.WEIGHTS under adaspa's home (the repository, or the installed
-- share/adaspa), or as it stands when the home is unknown.
function tiny.weights_path()
  local home = adaspa.home
  if type(home) == "string" and home ~= "" then return home .. "/" .. tiny.WEIGHTS end
  return tiny.WEIGHTS
end

local function readable(p)
  local f = io.open(p, "rb")
  if f then f:close(); return true end
  return false
end

-- Whether the trained export is there: its path, or nil and why.
function tiny.available()
  local p = tiny.weights_path()
  if readable(p) then return p end
  return nil, string.format("the tiny model's trained weights are not there (%s)", p)
end

-- The weights a recipe without model.weights runs (adaspa.models: M.default_weights): the trained
-- export; its absence is an error saying how to get it.
function tiny.default_weights()
  local p, why = tiny.available()
  if p then return p end
  error(string.format("model tiny: %s: train them with recipes/tools/tinyvideo/train.py (README: A small trained model) "
    .. "and put the export there, or give model.weights=FILE (an adaspa-tiny-1 export)", why), 0)
end

local common = require "adaspa.models.common"

-- A preset with overrides merged in, checked as HunyuanVideo's (the DiT is hunyuan's).
function tiny.config(preset, overrides)
  local p = tiny.presets[preset]
  if not p then
    error(string.format("tiny: unknown preset %q (presets: trained; the sizes come from the export)", tostring(preset)), 2)
  end
  local o = common.merge(common.deep_copy(p), overrides)
  if overrides and overrides.tiny and overrides.tiny.vocab then o.tiny.vocab = overrides.tiny.vocab end
  local ok, cfg = pcall(hy.config, "small", o)
  if not ok then error((tostring(cfg):gsub("hunyuan: ", "tiny: ")), 2) end
  cfg.preset, cfg.model = preset, tiny.name
  return cfg
end

-- The configuration overrides of a recipe's model table: the export's own sizes, read from the
-- metadata of model.weights (default: the trained export). Without a file there the preset stands
-- (the run then stops at the weights, saying where they belong).
function tiny.overrides(m)
  local path = m.weights
  if path == nil then path = tiny.available() end
  if path == nil then return {} end
  if type(path) ~= "string" then
    error("model tiny: model.weights must be one .safetensors file (the tiny export), got a " .. type(path), 0)
  end
  local info, meta = adaspa.safetensors.info(path)
  tiny.check_export(path, info, meta)
  local o = tiny.hy_overrides(tiny.meta_config(meta), vocab_of(meta))
  o.export = path
  return o
end

tiny.grid = hy.grid
tiny.attention_layers = hy.attention_layers
tiny.tokens = hy.tokens
tiny.weight_shapes = hy.weight_shapes
tiny.estimate = hy.estimate

-- How long the export was trained, from its metadata's final_losses (train.py writes ae_seconds,
-- dit_seconds, steps, batch and dit_clips there): a phrase, or nil when the export does not say.
-- batch is the last run's; an export trained on from another at another batch size says how
-- many clips its DiT saw in all (dit_clips), so the phrase gives the clips, not steps x batch.
function tiny.training(path)
  local ok, _, meta = pcall(adaspa.safetensors.info, path)
  local fl = ok and type(meta) == "table" and meta.final_losses
  if type(fl) ~= "string" then return nil end
  -- a key's number in one JSON object: top's keys only with the nested objects cut out
  local function num(k, src) return src and tonumber(src:match('"' .. k .. '"%s*:%s*([%d.eE+-]+)')) end
  local top = (fl:gsub('"[%w_]+"%s*:%s*%b{}', ""))
  local ae, dit, steps, batch = num("ae_seconds", top), num("dit_seconds", top), num("steps", top), num("batch", top)
  if not (ae and dit and steps and batch) then return nil end
  -- decoder_fit.py's refit (its seconds, and those of the fits it went on from) counts with the autoencoder
  local dr = fl:match('"decoder_refit"%s*:%s*(%b{})')
  local refit = (num("seconds", dr) or 0) + (num("before_seconds", dr) or 0)
  local dec = refit > 0 and string.format(" + decoder refit %.0f s", refit) or ""
  local clips = num("dit_clips", top)
  if clips and clips ~= steps * batch then
    return string.format("trained %.0f s: autoencoder %.0f s%s, DiT %d steps, %d clips in %.0f s", ae + refit + dit, ae, dec,
      steps, clips, dit)
  end
  return string.format("trained %.0f s: autoencoder %.0f s%s, DiT %d steps of %d clips in %.0f s", ae + refit + dit, ae, dec,
    steps, batch, dit)
end

function tiny.describe(cfg)
  local t = cfg.export and tiny.training(cfg.export)
  local a = cfg.tiny and cfg.tiny.ae
  return string.format("tiny (HunyuanVideo architecture; %s), %d double + %d single blocks, %d heads x %d, hidden %d%s",
    t or "trained", cfg.layers.double, cfg.layers.single, cfg.heads, cfg.head_dim, cfg.hidden,
    a and string.format("; decoder %d wide, %d mixing + %d MLP blocks", a.dec_dim, a.dec_mix, a.dec_mlp) or "")
end

-- The export's tensors: the DiT's through adaspa.weights.load (checked against cfg; the text
-- encoder's and decoder's keys are foreign to it), then those two under their prefixes.
function tiny.load_weights(source, cfg, opts)
  opts = opts or {}
  local wt = require "adaspa.weights"
  if type(source) ~= "string" then
    error("model tiny: model.weights must be one .safetensors file (the tiny export), got a " .. type(source), 0)
  end
  local info, meta = adaspa.safetensors.info(source)
  tiny.check_export(source, info, meta)
  local okw, w = pcall(wt.load, source, cfg, {device = opts.device, dtype = opts.dtype, prefix = opts.prefix, ignore = tiny.FOREIGN})
  if not okw then error((tostring(w):gsub("^[^:]*%.lua:%d+: ", "")), 0) end
  for _, pre in ipairs(tiny.FOREIGN) do
    local info = wt.info(source, {prefix = (opts.prefix or "") .. pre})
    local names = {}
    for i, e in ipairs(info) do names[i] = e.name end
    for n, t in pairs(wt.read(info, names)) do
      local u = opts.dtype and t:to(opts.dtype) or t
      w[pre .. n] = u:to(opts.device or "cpu")
    end
  end
  return w
end

function tiny.synthetic_weights()
  error("model tiny has no synthetic weights: it is a trained model (its export: " .. tiny.WEIGHTS .. ", or model.weights=FILE)", 0)
end

-- The DiT (adaspa.models.hunyuan) with the export's text encoder (model.text) and decoder
-- (model.decoder) beside it.
function tiny.new(cfg, weights)
  local m = hy.new(cfg, weights)
  m.text, m.decoder = parts(weights, cfg)
  return m
end

-- The conditioning: the prompt encoded by the export's text encoder (opts.model, the built model);
-- uncond (classifier-free guidance) from opts.negative (default "": the blank word, the caption of
-- the clips training dropped). With opts.embeds, a file of text states as for HunyuanVideo.
function tiny.conditioning(cfg, opts)
  if opts.embeds then return hy.conditioning(cfg, opts) end
  local enc = opts.model and opts.model.text
  if not enc then
    error("model tiny: conditioning needs the built model (opts.model): its text encoder encodes the prompt", 2)
  end
  local g = opts.guidance or tiny.sampler_defaults.guidance.scale
  local function encode(prompt)
    local ok, c = pcall(enc.encode, enc, prompt)
    if not ok then error("text.prompt: " .. tostring(c):gsub("^[^\n]-%.lua:%d+: ", ""), 0) end
    c.guidance = g
    return c
  end
  local prompt = opts.prompt or ""
  local cond = encode(prompt)
  local source = string.format("%q, encoded by the tiny model's text encoder (%d words)", prompt, cond.valid)
  local uncond
  if opts.cfg then
    uncond = encode(opts.negative or "")
    source = source .. string.format("; unconditional: %q", opts.negative or "")
  end
  return {cond = cond, uncond = uncond, source = source}
end

-- The video of a final latent [16, T, h, w]: the export's decoder, frames [4T - 3, 8h, 8w, 3] as
-- a list of u8 [8h, 8w, 3] pictures (RGB clamped to -1..1, mapped to 0..255).
function tiny.decode(model, latent)
  local x = latent:to(model.w["img_in.proj.bias"]:dtype())
  return require("adaspa.preview").rgb_frames(model.decoder:decode(x))
end

return tiny
