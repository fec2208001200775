-- adaspa.weights: checkpoints in safetensors: the shared helpers every model's loader uses
-- (single files, sharded checkpoints, a key prefix to strip), and HunyuanVideo's loader in
-- either of its key layouts.
--
-- Shared helpers (any model):
--   weights.files(source) -> {paths}: source is a .safetensors file, a list of shard files, a
--     *.safetensors.index.json (a sharded checkpoint's index: its weight_map names the shards,
--     found beside it), or a folder holding diffusion_pytorch_model.safetensors.index.json or
--     model.safetensors.index.json (diffusers and transformers name them so; another index is
--     named as the source itself), or holding exactly one .safetensors file;
--   weights.info(source [, {prefix =, ignore =}]) -> {{name=, key=, file=, dtype=, shape=, bytes=}, ...}
--     sorted by name: every tensor of every shard (a key in two shards is an error); with a
--     prefix (e.g. "model.diffusion_model."), keys that start with it are listed without it and
--     the others (a VAE's or a text encoder's in an all-in-one file) are left out; no key with
--     the prefix is an error naming the first keys; ignore = {"text_encoder.", "decoder."}: keys
--     (after the prefix is stripped) that start with one of these foreign prefixes are left out
--     too (a file that carries other networks beside the DiT: the tiny model's export), and are
--     counted in the second result;
--   weights.read(entries, names) -> name -> tensor: the named entries of weights.info's list,
--     read shard by shard.
--   weights.describe_source(source) -> "file" or "N shards under DIR" (for reports).
--
-- HunyuanVideo:
--   local weights = require "adaspa.weights"
--   local w = weights.load(source, cfg, {device = "cuda", dtype = "bf16", prefix = nil, ignore = nil})
--   local model = hy.new(cfg, w)
--   weights.save(path, w, "diffusers")            -- or "original"
--   local report = weights.describe(path)         -- layout, sizes, completeness per preset
--   weights.to_diffusers(name) -> {parts = {diffusers names}, kind = "plain"|"qkv"|"qkv_mlp"|"swap"}
--
-- The model uses the original checkpoint's names (hy.weight_shapes). A diffusers file
-- (HunyuanVideoTransformer3DModel, as written by diffusers' convert_hunyuan_video_to_diffusers.py)
-- renames every key, splits the fused qkv projections into to_q/to_k/to_v (add_*_proj for the
-- text stream), splits the single blocks' linear1 into to_q/to_k/to_v/proj_mlp, and stores the
-- final layer's adaLN rows as (scale, shift) instead of (shift, scale). Loading undoes all of it;
-- saving does it, so the two layouts round-trip exactly.
local adaspa = require "adaspa"
local hy = require "adaspa.models.hunyuan"

local weights = {}

local FLOAT = {f32 = true, bf16 = true, f16 = true}
local SHOW = 5   -- problems listed per kind in describe()

-- ---- the key mapping (original -> diffusers) ----------------------------------------------------

-- Top-level stems. A string is a plain rename; {swap = name} stores the two row halves swapped.
local TOP = {
  ["img_in.proj"] = "x_embedder.proj",
  ["time_in.mlp.0"] = "time_text_embed.timestep_embedder.linear_1",
  ["time_in.mlp.2"] = "time_text_embed.timestep_embedder.linear_2",
  ["guidance_in.mlp.0"] = "time_text_embed.guidance_embedder.linear_1",
  ["guidance_in.mlp.2"] = "time_text_embed.guidance_embedder.linear_2",
  ["vector_in.in_layer"] = "time_text_embed.text_embedder.linear_1",
  ["vector_in.out_layer"] = "time_text_embed.text_embedder.linear_2",
  ["txt_in.input_embedder"] = "context_embedder.proj_in",
  ["txt_in.t_embedder.mlp.0"] = "context_embedder.time_text_embed.timestep_embedder.linear_1",
  ["txt_in.t_embedder.mlp.2"] = "context_embedder.time_text_embed.timestep_embedder.linear_2",
  ["txt_in.c_embedder.linear_1"] = "context_embedder.time_text_embed.text_embedder.linear_1",
  ["txt_in.c_embedder.linear_2"] = "context_embedder.time_text_embed.text_embedder.linear_2",
  ["final_layer.linear"] = "proj_out",
  ["final_layer.adaLN_modulation.1"] = {swap = "norm_out.linear"},
}

-- Blocks: original prefix, diffusers prefix, and the stems inside a block. {qkv = {q, k, v}}
-- splits rows in thirds; {qkv_mlp = {q, k, v, mlp}} splits rows hidden/hidden/hidden/rest.
local QKV = {"attn.to_q", "attn.to_k", "attn.to_v"}
local BLOCKS = {
  {orig = "txt_in.individual_token_refiner.blocks", diff = "context_embedder.token_refiner.refiner_blocks",
   count = "refiner", stems = {
    norm1 = "norm1", norm2 = "norm2", self_attn_qkv = {qkv = QKV}, self_attn_proj = "attn.to_out.0",
    ["mlp.fc1"] = "ff.net.0.proj", ["mlp.fc2"] = "ff.net.2", ["adaLN_modulation.1"] = "norm_out.linear"}},
  {orig = "double_blocks", diff = "transformer_blocks", count = "double", stems = {
    ["img_mod.linear"] = "norm1.linear", ["txt_mod.linear"] = "norm1_context.linear",
    img_attn_qkv = {qkv = QKV}, txt_attn_qkv = {qkv = {"attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"}},
    img_attn_q_norm = "attn.norm_q", img_attn_k_norm = "attn.norm_k",
    txt_attn_q_norm = "attn.norm_added_q", txt_attn_k_norm = "attn.norm_added_k",
    img_attn_proj = "attn.to_out.0", txt_attn_proj = "attn.to_add_out",
    ["img_mlp.fc1"] = "ff.net.0.proj", ["img_mlp.fc2"] = "ff.net.2",
    ["txt_mlp.fc1"] = "ff_context.net.0.proj", ["txt_mlp.fc2"] = "ff_context.net.2"}},
  {orig = "single_blocks", diff = "single_transformer_blocks", count = "single", stems = {
    linear1 = {qkv_mlp = {"attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"}}, linear2 = "proj_out",
    q_norm = "attn.norm_q", k_norm = "attn.norm_k", ["modulation.linear"] = "norm.linear"}},
}

local ROOTS = {
  original = {"img_in.", "time_in.", "guidance_in.", "vector_in.", "txt_in.", "double_blocks.", "single_blocks.",
    "final_layer."},
  diffusers = {"x_embedder.", "time_text_embed.", "context_embedder.", "transformer_blocks.",
    "single_transformer_blocks.", "proj_out.", "norm_out."},
}

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- original name -> {parts = {diffusers names}, kind = "plain" | "qkv" | "qkv_mlp" | "swap"}, or nil.
local function to_diffusers(name)
  local stem, suffix = name:match("^(.+)%.(%w+)$")
  if not stem then return nil end
  local function with(kind, prefix, list)
    local parts = {}
    for i, p in ipairs(list) do parts[i] = prefix .. p .. "." .. suffix end
    return {parts = parts, kind = kind}
  end
  local top = TOP[stem]
  if type(top) == "string" then return with("plain", "", {top}) end
  if top then return with("swap", "", {top.swap}) end
  for _, b in ipairs(BLOCKS) do
    local idx, inner = stem:match("^" .. escape(b.orig) .. "%.(%d+)%.(.+)$")
    local m = inner and b.stems[inner]
    if m then
      local prefix = b.diff .. "." .. idx .. "."
      if type(m) == "string" then return with("plain", prefix, {m}) end
      if m.qkv then return with("qkv", prefix, m.qkv) end
      return with("qkv_mlp", prefix, m.qkv_mlp)
    end
  end
  return nil
end

-- Row sizes of the parts of an original tensor with `rows` rows (hidden: the model width).
local function part_rows(kind, rows, hidden)
  if kind == "plain" or kind == "swap" then return {rows} end
  if kind == "qkv" then return {rows / 3, rows / 3, rows / 3} end
  return {hidden, hidden, hidden, rows - 3 * hidden}
end

local function shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end
local function same_shape(a, b) return table.concat(a, ",") == table.concat(b, ",") end

local function sorted_keys(t)
  local k = {}
  for name in pairs(t) do k[#k + 1] = name end
  table.sort(k)
  return k
end

local function cfg_str(cfg)
  return string.format("config %s: hidden %d, heads %d x %d, double %d, single %d, refiner %d, text %d, pooled %d",
    tostring(cfg.name or cfg.preset or "custom"), cfg.hidden, cfg.heads, cfg.head_dim, cfg.layers.double,
    cfg.layers.single, cfg.layers.refiner, cfg.text_dim, cfg.pooled_dim)
end

-- The keys and shapes a complete file of cfg has in the given layout.
local function expected_shapes(cfg, layout)
  local shapes = hy.weight_shapes(cfg)
  if layout == "original" then return shapes end
  local out = {}
  for name, shape in pairs(shapes) do
    local m = assert(to_diffusers(name), name)
    local rows = part_rows(m.kind, shape[1], cfg.hidden)
    for i, p in ipairs(m.parts) do
      local s = {unpack(shape)}
      s[1] = rows[i]
      out[p] = s
    end
  end
  return out
end

-- The key layout a model's loader decides from counts n = {original =, diffusers =} of the
-- names that look like each: the larger count, or nil and a message naming both counts, what
-- each layout's keys look like (original_looks, diffusers_looks) and the first keys.
function weights.pick_layout(n, names, original_looks, diffusers_looks)
  if n.original > n.diffusers then return "original" end
  if n.diffusers > n.original then return "diffusers" end
  local first = {}
  for i = 1, math.min(3, #names) do first[i] = "'" .. names[i] .. "'" end
  return nil, string.format("cannot tell the key layout: %d of %d keys look like the original release's (%s) and %d " ..
    "like diffusers' (%s); first keys: %s", n.original, #names, original_looks, n.diffusers, diffusers_looks,
    #first > 0 and table.concat(first, ", ") or "none")
end

-- The layout of a list of key names: "original" | "diffusers", or nil and the reason.
local function detect(names)
  local n = {original = 0, diffusers = 0}
  for _, name in ipairs(names) do
    for layout, roots in pairs(ROOTS) do
      for _, r in ipairs(roots) do   -- an anchored plain match: no substring per key and root
        if name:find(r, 1, true) == 1 then n[layout] = n[layout] + 1; break end
      end
    end
  end
  return weights.pick_layout(n, names, "double_blocks.N, single_blocks.N, img_in.proj, ...",
    "transformer_blocks.N, single_transformer_blocks.N, x_embedder.proj, context_embedder, ...")
end

-- Compares a file's info against expected shapes: lists (sorted by key) of missing,
-- unexpected, wrong shape and unsupported dtype entries.
local function check(info, expected)
  local r = {missing = {}, unexpected = {}, shape = {}, dtype = {}}
  local found = {}
  for _, e in ipairs(info) do
    found[e.name] = e
    local want = expected[e.name]
    if not want then
      r.unexpected[#r.unexpected + 1] = e
    elseif not same_shape(want, e.shape) then
      r.shape[#r.shape + 1] = {name = e.name, expected = want, found = e.shape}
    end
    if not FLOAT[e.dtype] then r.dtype[#r.dtype + 1] = e end
  end
  for _, name in ipairs(sorted_keys(expected)) do
    if not found[name] then r.missing[#r.missing + 1] = {name = name, expected = expected[name]} end
  end
  local by = function(a, b) return a.name < b.name end
  table.sort(r.unexpected, by); table.sort(r.shape, by); table.sort(r.dtype, by)
  return r
end

local function info_names(info)
  local names = {}
  for i, e in ipairs(info) do names[i] = e.name end
  return names
end

-- ---- sources: files, shards, prefixes (shared by every model) -------------------------------------

local INDEX_NAMES = {"diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json"}
weights.INDEX_NAMES = INDEX_NAMES

local function readable(p)
  local f = io.open(p, "rb")
  if not f then return false end
  local ok, data = pcall(f.read, f, 1)
  f:close()
  return ok and data ~= nil
end

local function is_dir(p)
  local f = io.open(p, "rb")
  if not f then return false end
  local ok, data, err = pcall(f.read, f, 1)
  f:close()
  return ok and data == nil and err ~= nil and tostring(err):find("directory", 1, true) ~= nil
end
weights.is_dir = is_dir

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

-- The shard files an index names (the values of its weight_map), in order of first mention.
-- The largest shard index read (diffusers' 14B index is about 100 KB).
weights.INDEX_MAX_BYTES = 16 * 2 ^ 20

local function index_files(index)
  local f, err = io.open(index, "rb")
  if not f then error(string.format("weights: cannot read the index %s: %s", index, tostring(err)), 0) end
  local size = f:seek("end")
  if not size or size > weights.INDEX_MAX_BYTES then
    f:close()
    error(string.format("weights: the index %s has %s bytes; an index of shards is at most %d (it lists names only)",
      index, tostring(size), weights.INDEX_MAX_BYTES), 0)
  end
  f:seek("set", 0)
  local text = f:read("*a")
  f:close()
  local map = text:match('"weight_map"%s*:%s*(%b{})')
  if not map then error(string.format("weights: %s: no \"weight_map\" object (a *.safetensors.index.json has one)", index), 0) end
  local files, seen = {}, {}
  for file in map:gmatch(':%s*"([^"]+)"') do
    if not file:find("^[^/%c]+$") or file == "." or file == ".." then   -- no folder, no control byte (a NUL would cut it)
      error(string.format("weights: %s: shard name %q must be a file name beside the index", index, file), 0)
    end
    if not seen[file] then seen[file] = true; files[#files + 1] = dirname(index) .. "/" .. file end
  end
  if #files == 0 then error(string.format("weights: %s: the weight_map names no shard", index), 0) end
  return files
end

-- The files of a weights source (see the header).
function weights.files(source)
  if type(source) == "table" then
    if #source == 0 then error("weights: a list of shard files must not be empty", 0) end
    local out = {}
    for i, p in ipairs(source) do
      if type(p) ~= "string" then error(string.format("weights: shard %d must be a path, got %s", i, type(p)), 0) end
      out[i] = p
    end
    return out
  end
  if type(source) ~= "string" or source == "" then
    error("weights: the source must be a path (file, index or folder) or a list of files, got " .. type(source), 0)
  end
  if source:match("%.index%.json$") then return index_files(source) end
  if is_dir(source) then
    local dir = source:gsub("/+$", "")
    for _, n in ipairs(INDEX_NAMES) do
      if readable(dir .. "/" .. n) then return index_files(dir .. "/" .. n) end
    end
    for _, n in ipairs({"diffusion_pytorch_model.safetensors", "model.safetensors"}) do
      if readable(dir .. "/" .. n) then return {dir .. "/" .. n} end
    end
    error(string.format("weights: folder %s holds none of %s, diffusion_pytorch_model.safetensors, model.safetensors " ..
      "(name another index or file as the source itself)", source, table.concat(INDEX_NAMES, ", ")), 0)
  end
  return {source}
end

-- "path" for one file, "N shards under DIR" for several.
function weights.describe_source(source)
  local ok, files = pcall(weights.files, source)
  if not ok or #files == 1 then return type(source) == "string" and source or (ok and files[1] or "?") end
  return string.format("%d shards under %s", #files, dirname(files[1]))
end

-- Every tensor of a source, prefix stripped (see the header).
function weights.info(source, opts)
  opts = opts or {}
  local prefix = opts.prefix
  if prefix ~= nil and (type(prefix) ~= "string" or prefix == "") then
    error("weights: prefix must be a non-empty string, got " .. tostring(prefix), 0)
  end
  local ignore = opts.ignore or {}
  if type(ignore) ~= "table" then error("weights: ignore must be a list of key prefixes, got " .. type(ignore), 0) end
  for i, p in ipairs(ignore) do
    if type(p) ~= "string" or p == "" then
      error(string.format("weights: ignore entry %d must be a non-empty string (a key prefix), got %s", i, tostring(p)), 0)
    end
  end
  local function ignored(name)
    for _, p in ipairs(ignore) do if name:sub(1, #p) == p then return true end end
    return false
  end
  local out, by, skipped, first = {}, {}, 0, {}
  for _, file in ipairs(weights.files(source)) do
    for _, e in ipairs(adaspa.safetensors.info(file)) do
      local name = e.name
      if #first < 3 then first[#first + 1] = "'" .. name .. "'" end
      if prefix then
        if name:sub(1, #prefix) == prefix then name = name:sub(#prefix + 1) else name = nil end
      end
      if name and ignored(name) then name = nil end
      if name then
        if by[name] then
          error(string.format("weights: key '%s' is in two shards: %s and %s", e.name, by[name].file, file), 0)
        end
        local r = {name = name, key = e.name, file = file, dtype = e.dtype, shape = e.shape, bytes = e.bytes}
        by[name] = r
        out[#out + 1] = r
      else
        skipped = skipped + 1
      end
    end
  end
  if prefix and #out == 0 then
    error(string.format("weights: no key starts with the prefix '%s' (first keys: %s)", prefix,
      #first > 0 and table.concat(first, ", ") or "none"), 0)
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out, skipped
end

-- name -> tensor for the names (a list) among entries (weights.info's list), one read per shard.
function weights.read(entries, names)
  local by = {}
  for _, e in ipairs(entries) do by[e.name] = e end
  local per_file, order = {}, {}
  for _, n in ipairs(names) do
    local e = by[n]
    if not e then error(string.format("weights: no tensor '%s' in the source", n), 0) end
    if not per_file[e.file] then per_file[e.file] = {}; order[#order + 1] = e.file end
    table.insert(per_file[e.file], e)
  end
  local out = {}
  for _, file in ipairs(order) do
    local keys = {}
    for i, e in ipairs(per_file[file]) do keys[i] = e.key end
    local t = adaspa.safetensors.load(file, {names = keys})
    for _, e in ipairs(per_file[file]) do out[e.name] = t[e.key] end
  end
  return out
end

-- ---- load ----------------------------------------------------------------------------------------

-- load(source, cfg [, {device=, dtype=, prefix=, ignore=}]) -> name -> tensor in the original layout
-- of cfg. source: a file, a list of shards, an index or a folder (weights.files); prefix: stripped
-- from every key first; ignore: a list of foreign key prefixes whose keys are skipped instead of
-- being reported as unexpected (weights.info).
function weights.load(source, cfg, opts)
  local fn = "weights.load"
  if type(source) ~= "string" and type(source) ~= "table" then
    error(fn .. ": source must be a path or a list of shard paths, got " .. type(source), 2)
  end
  if type(cfg) ~= "table" or type(cfg.hidden) ~= "number" or type(cfg.layers) ~= "table" then
    error(fn .. ": cfg must be a model config (hy.config(...)), got " .. type(cfg), 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error(fn .. ": opts must be a table, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if k ~= "device" and k ~= "dtype" and k ~= "prefix" and k ~= "ignore" then
      error(fn .. ": unknown option '" .. tostring(k) .. "' (options: device, dtype, prefix, ignore)", 2)
    end
  end
  local device = opts.device or "cpu"
  if type(device) ~= "string" then error(fn .. ": opts.device must be a string, got " .. type(device), 2) end
  if opts.dtype ~= nil and not FLOAT[opts.dtype] then
    error(string.format("%s: opts.dtype must be f32, bf16 or f16, got %s", fn, tostring(opts.dtype)), 2)
  end

  local path = weights.describe_source(source)
  local okinfo, info = pcall(weights.info, source, {prefix = opts.prefix, ignore = opts.ignore})
  if not okinfo then error(string.format("%s: %s", fn, tostring(info)), 2) end
  local layout, why = detect(info_names(info))
  if not layout then error(string.format("%s: %s: %s", fn, path, why), 2) end
  local r = check(info, expected_shapes(cfg, layout))
  local n_bad = #r.shape + #r.missing + #r.unexpected + #r.dtype
  if n_bad > 0 then   -- the first problem (wrong shapes first: they tell a file of other sizes)
    local msg
    if #r.shape > 0 then
      local e = r.shape[1]
      msg = string.format("key '%s' has shape %s, expected %s", e.name, shape_str(e.found), shape_str(e.expected))
    elseif #r.missing > 0 then
      local e = r.missing[1]
      msg = string.format("missing key '%s' (expected shape %s)", e.name, shape_str(e.expected))
    elseif #r.unexpected > 0 then
      local e = r.unexpected[1]
      msg = string.format("unexpected key '%s' (%s %s found, expected no such key)", e.name, e.dtype,
        shape_str(e.shape))
    else
      local e = r.dtype[1]
      msg = string.format("key '%s' has dtype %s, expected f32, bf16 or f16", e.name, e.dtype)
    end
    local all = n_bad > 1 and string.format(" (in all: %d wrong shape, %d missing, %d unexpected, %d not float)",
      #r.shape, #r.missing, #r.unexpected, #r.dtype) or ""
    error(string.format("%s: %s (%s layout): %s%s; expected the keys of %s", fn, path, layout, msg, all,
      cfg_str(cfg)), 2)
  end

  local raw = weights.read(info, info_names(info))
  local out = {}
  local function finish(t)   -- converted on the CPU, then moved; copies left behind are freed now
    local u = opts.dtype and t:to(opts.dtype) or t
    local v = u:to(device)
    if u ~= t and u ~= v then u:free() end
    if t ~= v then t:free() end
    return v
  end
  for name, shape in pairs(hy.weight_shapes(cfg)) do
    local t
    if layout == "original" then
      t = raw[name]
    else
      local m = to_diffusers(name)
      local parts = {}
      for i, p in ipairs(m.parts) do parts[i] = raw[p] end
      if m.kind == "plain" then
        t = parts[1]
      elseif m.kind == "swap" then
        local half = shape[1] / 2
        t = adaspa.concat({parts[1]:narrow(1, half + 1, half), parts[1]:narrow(1, 1, half)})
      else
        local dt = parts[1]:dtype()
        for i = 2, #parts do parts[i] = parts[i]:to(dt) end   -- a mixed-dtype file: the first part's dtype
        t = adaspa.concat(parts)
      end
      if t ~= parts[1] then for _, p in ipairs(parts) do p:free() end end
    end
    out[name] = finish(t)
  end
  return out
end

-- ---- save ----------------------------------------------------------------------------------------

-- save(path, w, layout): w is name -> tensor in the original layout; layout "original" | "diffusers".
function weights.save(path, w, layout)
  local fn = "weights.save"
  if type(path) ~= "string" then error(fn .. ": path must be a string, got " .. type(path), 2) end
  if type(w) ~= "table" then error(fn .. ": weights must be a table of name -> tensor, got " .. type(w), 2) end
  if layout ~= "original" and layout ~= "diffusers" then
    error(string.format("%s: layout must be \"original\" or \"diffusers\", got %s", fn, tostring(layout)), 2)
  end
  for _, name in ipairs(sorted_keys(w)) do
    if not adaspa.is_tensor(w[name]) then
      error(string.format("%s: weights['%s'] must be a tensor, got %s", fn, tostring(name), type(w[name])), 2)
    end
  end
  if layout == "original" then return adaspa.safetensors.save(path, w) end
  local out = {}
  for _, name in ipairs(sorted_keys(w)) do
    local t = w[name]
    local m = to_diffusers(name)
    if not m then error(string.format("%s: key '%s' is not a HunyuanVideo weight (no diffusers name)", fn, name), 2) end
    local rows = t:shape()[1]
    if m.kind == "plain" then
      out[m.parts[1]] = t
    elseif m.kind == "swap" then
      if rows % 2 ~= 0 then
        error(string.format("%s: key '%s' has %d rows, expected an even count", fn, name, rows), 2)
      end
      out[m.parts[1]] = adaspa.concat({t:narrow(1, rows / 2 + 1, rows / 2), t:narrow(1, 1, rows / 2)})
    else
      local hidden
      if m.kind == "qkv_mlp" then
        local wname = name:gsub("%.%w+$", ".weight")
        if not w[wname] then
          error(string.format("%s: key '%s' needs '%s' (its in-features give the split)", fn, name, wname), 2)
        end
        hidden = w[wname]:shape()[2]
      elseif rows % 3 ~= 0 then
        error(string.format("%s: key '%s' has %d rows, expected a multiple of 3 (q, k, v)", fn, name, rows), 2)
      end
      local sizes, start = part_rows(m.kind, rows, hidden), 1
      if sizes[#sizes] < 1 then
        error(string.format("%s: key '%s' has %d rows, expected more than 3 x hidden (%d)", fn, name, rows, hidden), 2)
      end
      for i, p in ipairs(m.parts) do
        out[p] = t:narrow(1, start, sizes[i])
        start = start + sizes[i]
      end
    end
  end
  return adaspa.safetensors.save(path, out)
end

-- ---- describe --------------------------------------------------------------------------------------

-- The block counts of a file's keys: per kind, the number of indices present from 0 up without a
-- gap, so a count never exceeds the keys the file holds (a lone "transformer_blocks.1000000000.*"
-- key counts 0 blocks, not a billion). Also the first key past a gap, for the report.
local function block_counts(names, layout)
  local counts, gaps = {double = 0, single = 0, refiner = 0}, {}
  for _, b in ipairs(BLOCKS) do
    local prefix = layout == "original" and b.orig or b.diff
    local pat = "^" .. escape(prefix) .. "%.(%d+)%."
    local seen = {}   -- index -> first key with it; at most one entry per key
    for _, name in ipairs(names) do
      local i = name:match(pat)
      if i then
        local n = tonumber(i)
        if not seen[n] or name < seen[n] then seen[n] = name end
      end
    end
    local n = 0
    while seen[n] do n = n + 1 end
    counts[b.count] = n
    local past
    for i in pairs(seen) do
      if i > n and (not past or i < past) then past = i end
    end
    if past then
      gaps[#gaps + 1] = string.format("%s block indices must run from 0 without gaps: key '%s' has index %s " ..
        "but no key has index %d (counted %d %s blocks)", b.count, seen[past], (seen[past]:match(pat)), n, n, b.count)
    end
  end
  return counts, gaps
end

-- Sizes implied by the keys: a config plus the fields that had to be assumed.
local function infer(info, layout)
  local shape = {}
  for _, e in ipairs(info) do shape[e.name] = e.shape end
  local function get(orig)   -- the shape of an original (plain) key in the file's layout
    if layout == "original" then return shape[orig] end
    return shape[to_diffusers(orig).parts[1]]
  end
  local base = hy.presets["720p"]
  local counts, gaps = block_counts(info_names(info), layout)
  local inf, assumed = {layers = counts}, {}
  local s = get("img_in.proj.weight")
  if s then inf.hidden, inf.in_channels = s[1], s[2] end
  if not inf.hidden then s = get("final_layer.linear.weight"); inf.hidden = s and s[2] end
  s = get("double_blocks.0.img_attn_q_norm.weight") or get("single_blocks.0.q_norm.weight")
  inf.head_dim = s and s[1]
  s = get("double_blocks.0.img_mlp.fc1.weight") or get("txt_in.individual_token_refiner.blocks.0.mlp.fc1.weight")
  if s and inf.hidden then inf.mlp_ratio = s[1] / inf.hidden end
  s = get("single_blocks.0.linear2.weight")
  if s and inf.hidden and not inf.mlp_ratio then inf.mlp_ratio = (s[2] - inf.hidden) / inf.hidden end
  s = get("txt_in.input_embedder.weight") or get("txt_in.c_embedder.linear_1.weight")
  inf.text_dim = s and s[2]
  s = get("vector_in.in_layer.weight")
  inf.pooled_dim = s and s[2]
  for _, k in ipairs({"hidden", "in_channels", "head_dim", "mlp_ratio", "text_dim", "pooled_dim"}) do
    if not inf[k] then inf[k] = base[k]; assumed[#assumed + 1] = k end
  end
  inf.heads = inf.hidden / inf.head_dim
  -- the non-weight fields (text_len, video, rope) come from the preset of that width, else small
  local preset = inf.hidden == base.hidden and "720p" or "small"
  local ok, cfg
  if inf.heads % 1 ~= 0 then
    ok, cfg = false, string.format("hidden %d is not a multiple of head_dim %d", inf.hidden, inf.head_dim)
  else
    ok, cfg = pcall(hy.config, preset, inf)
  end
  local err
  if not ok then   -- still describe the file against these sizes; the config is just not runnable
    err = tostring(cfg)
    cfg = {}
    for k, v in pairs(hy.presets[preset]) do cfg[k] = v end
    for k, v in pairs(inf) do cfg[k] = v end
  end
  cfg.name = "inferred"
  if #gaps > 0 then err = table.concat(gaps, "; ") .. (err and "; " .. err or "") end
  return cfg, assumed, err
end

local function candidate(name, cfg, info, layout)
  local r = check(info, expected_shapes(cfg, layout))
  local c = {name = name, cfg = cfg, n_missing = #r.missing, n_unexpected = #r.unexpected,
    n_shape = #r.shape, missing = {}, unexpected = {}, mismatched = {}}
  for i = 1, math.min(SHOW, #r.missing) do
    c.missing[i] = r.missing[i].name .. " " .. shape_str(r.missing[i].expected)
  end
  for i = 1, math.min(SHOW, #r.unexpected) do
    c.unexpected[i] = r.unexpected[i].name .. " " .. shape_str(r.unexpected[i].shape)
  end
  for i = 1, math.min(SHOW, #r.shape) do
    local s = r.shape[i]
    c.mismatched[i] = string.format("%s: expected %s, found %s", s.name, shape_str(s.expected), shape_str(s.found))
  end
  c.complete = #r.missing == 0 and #r.unexpected == 0 and #r.shape == 0 and #r.dtype == 0
  return c
end

-- describe(path) -> {path, layout, layout_error, tensors, bytes, dtypes = {dtype = count},
-- bad_dtypes = {"name (dtype)"}, inferred = cfg, assumed = {fields}, inferred_error,
-- candidates = {{name, cfg, complete, n_missing, missing, n_unexpected, unexpected, n_shape,
-- mismatched}, ...} (presets by name, then "inferred"), complete = {names of complete candidates}}.
function weights.describe(path)
  if type(path) ~= "string" then error("weights.describe: path must be a string, got " .. type(path), 2) end
  local info = adaspa.safetensors.info(path)
  local rep = {path = path, tensors = #info, bytes = 0, dtypes = {}, bad_dtypes = {}, candidates = {}, complete = {}}
  for _, e in ipairs(info) do
    rep.bytes = rep.bytes + e.bytes
    rep.dtypes[e.dtype] = (rep.dtypes[e.dtype] or 0) + 1
    if not FLOAT[e.dtype] then rep.bad_dtypes[#rep.bad_dtypes + 1] = e.name .. " (" .. e.dtype .. ")" end
  end
  table.sort(rep.bad_dtypes)
  rep.layout, rep.layout_error = detect(info_names(info))
  if not rep.layout then return rep end
  for _, name in ipairs(sorted_keys(hy.presets)) do
    rep.candidates[#rep.candidates + 1] = candidate(name, hy.config(name), info, rep.layout)
  end
  rep.inferred, rep.assumed, rep.inferred_error = infer(info, rep.layout)
  local c = candidate("inferred", rep.inferred, info, rep.layout)
  if rep.inferred_error then c.complete = false; c.error = rep.inferred_error end
  rep.candidates[#rep.candidates + 1] = c
  for _, cand in ipairs(rep.candidates) do
    if cand.complete then rep.complete[#rep.complete + 1] = cand.name end
  end
  return rep
end

weights.to_diffusers = to_diffusers     -- exposed for tools and specs

return weights
