-- adaspa.trace: attention traces, the q, k, v a real model computed, recorded once (by
-- recipes/tools/dump_trace.py inside a PyTorch pipeline, or by trace.write) and replayed
-- anywhere (adaspa recipe recipes/replay.lua trace=FILE).
--
-- ## Format (version 1)
--
-- A safetensors file. For every recorded (step, layer) three tensors
--     step{s}.layer{l}.q   step{s}.layer{l}.k   step{s}.layer{l}.v       [S, H, D], BF16 (or F32)
-- s: the denoising step, counted from 0 as adaspa does (0 = the first, noisiest step);
-- l: the attention layer, counted from 1 in the model's order (HunyuanVideo: double blocks
--    1..20, then single blocks 21..60; Wan: blocks 1..n, self-attention only);
-- written in decimal without padding ("step10.layer3.q"). q and k are taken after the q/k norm and
-- RoPE, exactly as they enter the attention kernel; the softmax scale is 1/sqrt(D) (not folded
-- in). One sample of the batch (the conditional branch with classifier-free guidance).
-- The recorded steps and layers form a full grid: every listed step has every listed layer.
--
-- Token order: the n_img = T*Hh*Ww latent tokens first, in (frame, row, column) raster order
-- (column fastest), then the text tokens (text_len of them, valid ones first, padding last).
-- A model that puts text first is reordered by the dumper. Keys at positions > kv_valid
-- (1-based) are padding: attention must ignore them.
--
-- __metadata__ (all values strings, as safetensors requires):
--   format      "adaspa.trace"                                            required
--   version     "1"                                                        required
--   model       the model's name, e.g. "hunyuan-video", "wan2.1-t2v-1.3b"  required
--   grid        "T,Hh,Ww": the latent token grid after patching            required
--   text_len    text tokens after the latent ones (0: none, as in Wan's    required
--               self-attention)
--   kv_valid    valid key tokens, n_img <= kv_valid <= S                   required
--   steps       the recorded steps, increasing: "0,1,10,11,30"             required
--   layers      the recorded layers, increasing: "1,2,21,60"               required
--   num_steps   the pipeline's number of denoising steps                  optional
--   timesteps   the scheduler's timestep of each recorded step, in the    optional
--               order of steps: "1000,995.3,..." (finite, >= 0)
--   layer_kinds the kind of each recorded layer, in the order of layers:  optional
--               "double,double,single,single" (or "self"; no other kinds)
--   step{s}.layer{l}.kv_valid  a record's own kv_valid, when it differs   optional
--   source      free text: pipeline, prompt, resolution, date              optional
-- S = T*Hh*Ww + text_len for every record; q, k and v of a record have one shape and one dtype.
-- Integers are decimal, at most 2147483647 (S too); no other metadata keys; step and layer
-- numbers in keys and names have no leading zeros; the steps x layers grid is no larger than the
-- file's tensors allow (3 per record). Loaded q, k and v must be finite.
--
-- ## API
--   trace.open(path) -> tr: validates the whole header (never reads the tensor data), then
--     tr.path, tr.model, tr.grid {T, Hh, Ww}, tr.n_img, tr.text_len, tr.S, tr.kv_valid,
--     tr.steps {..}, tr.layers {..}, tr.num_steps (or nil), tr.timesteps {[step] = t},
--     tr.kinds {[layer] = kind}, tr.heads, tr.head_dim, tr.dtype, tr.meta (raw strings),
--     tr:records() -> {{step=, layer=}, ...} in (step, layer) order,
--     tr:info(step, layer) -> info as models pass it to ctx:attention,
--     tr:load(step, layer [, {device=, dtype=}]) -> q, k, v, info (lazily: views over the file's
--       mapping, copied only when a device or dtype asks for it),
--     tr:describe() -> one line.
--   trace.encode(records, meta) -> tensors {{name, tensor}, ...}, metadata: the file's content;
--   trace.write(path, records, meta): encode, validate, save. records: {{step=, layer=, q=, k=,
--     v= [, kv_valid=]}, ...}; meta: {model=, grid=, text_len=, kv_valid= [, num_steps=,
--     timesteps = {[step] = t}, kinds = {[layer] = kind}, source=, dtype = "bf16" | "f32"]};
--     tensors are stored in meta.dtype (default bf16).
-- Every error names the file, the record (step s layer l) or the metadata key, and the field.
local adaspa = require "adaspa"

local trace = {}

trace.format = "adaspa.trace"
trace.version = "1"
trace.required = {"format", "version", "model", "grid", "text_len", "kv_valid", "steps", "layers"}
trace.dtypes = {bf16 = true, f32 = true}
trace.kinds = {double = true, single = true, self = true}
trace.optional = {"num_steps", "timesteps", "layer_kinds", "source"}
trace.max_int = 2147483647

local function fail(path, fmt, ...)
  error(string.format("adaspa.trace: %s: " .. fmt, path, ...), 0)
end

function trace.name(step, layer, field) return string.format("step%d.layer%d.%s", step, layer, field) end

local function shape_str(s) return "[" .. table.concat(s, ", ") .. "]" end

-- A decimal integer in [0, trace.max_int] (surrounding spaces allowed), or nil.
local function parse_int(s)
  local digits = type(s) == "string" and s:match("^%s*(%d+)%s*$")
  if not digits then return nil end
  digits = digits:match("^0*(%d-)$")   -- leading zeros do not count towards the length
  if digits == "" then return 0 end
  local n = #digits <= 10 and tonumber(digits)
  return n and n <= trace.max_int and n or nil
end

-- A step or layer number as written in a name: decimal, no leading zeros, at most max_int.
local function parse_index(s)
  if s ~= "0" and s:sub(1, 1) == "0" then return nil end
  return parse_int(s)
end

-- The number of items of a comma-separated list, counted without building them.
local function count_items(s)
  local n, pos = 1, 1
  while true do
    local i = s:find(",", pos, true)
    if not i then return n end
    n, pos = n + 1, i + 1
  end
end

-- The items of a comma-separated list (empty items included).
local function split(s)
  local out = {}
  for item in (s .. ","):gmatch("([^,]*),") do out[#out + 1] = item end
  return out
end

-- A comma-separated list of integers (strictly increasing when `increasing`).
local function parse_ints(path, key, s, increasing)
  local out = {}
  for _, item in ipairs(split(s)) do
    local n = parse_int(item)
    if not n then
      fail(path, "metadata %s = %q: %q is not an integer in [0, %d]", key, s, item, trace.max_int)
    end
    if increasing and #out > 0 and n <= out[#out] then
      fail(path, "metadata %s = %q: entries must be strictly increasing", key, s)
    end
    out[#out + 1] = n
  end
  return out
end

-- Parses and checks the metadata; returns the trace's description (without tensor shapes).
-- n_tensors bounds the lists (a record has 3 tensors), so work stays in proportion to the file.
local function parse_meta(path, meta, n_tensors)
  local known = {}
  for _, k in ipairs(trace.required) do known[k] = true end
  for _, k in ipairs(trace.optional) do known[k] = true end
  for k in pairs(meta) do
    if not known[k] then
      local s, l = k:match("^step(%d+)%.layer(%d+)%.kv_valid$")
      if not s then
        fail(path, "metadata key %q is not part of a version %s trace (keys: %s, %s, step{s}.layer{l}.kv_valid)", k,
          trace.version, table.concat(trace.required, ", "), table.concat(trace.optional, ", "))
      end
      local si, li = parse_index(s), parse_index(l)
      if not si or not li then
        fail(path, "metadata key %s: step and layer must be integers in [0, %d] written without leading zeros%s", k,
          trace.max_int, (si or parse_int(s)) and (li or parse_int(l)) and
          string.format(" (%s)", trace.name(parse_int(s), parse_int(l), "kv_valid")) or "")
      end
    end
  end
  for _, k in ipairs(trace.required) do
    if meta[k] == nil then
      fail(path, "metadata lacks %s (a trace needs %s in its __metadata__)", k, table.concat(trace.required, ", "))
    end
  end
  if meta.format ~= trace.format then
    fail(path, "metadata format = %q: not an adaspa trace (expected %q)", meta.format, trace.format)
  end
  if meta.version ~= trace.version then
    fail(path, "metadata version = %q: this adaspa reads trace version %s", meta.version, trace.version)
  end
  local d = {path = path, model = meta.model, meta = meta}
  local records = math.floor(n_tensors / 3)
  for _, k in ipairs({"steps", "layers"}) do
    local n = count_items(meta[k])
    if n > records then
      fail(path, "metadata %s lists %d entries but the file holds %d tensors, enough for %d records (3 each)", k, n,
        n_tensors, records)
    end
  end
  d.grid = parse_ints(path, "grid", meta.grid)
  if #d.grid ~= 3 then fail(path, "metadata grid = %q: must be T,Hh,Ww (3 integers)", meta.grid) end
  for i = 1, 3 do
    if d.grid[i] < 1 then fail(path, "metadata grid = %q: sizes must be >= 1", meta.grid) end
  end
  d.n_img = d.grid[1] * d.grid[2] * d.grid[3]
  if d.n_img > trace.max_int then
    fail(path, "metadata grid = %q: %.0f latent tokens, more than %d", meta.grid, d.n_img, trace.max_int)
  end
  d.text_len = parse_int(meta.text_len)
  if not d.text_len then
    fail(path, "metadata text_len = %q: must be an integer in [0, %d]", meta.text_len, trace.max_int)
  end
  d.S = d.n_img + d.text_len
  if d.S > trace.max_int then
    fail(path, "metadata grid = %q and text_len = %q: S = %.0f tokens, more than %d", meta.grid, meta.text_len, d.S,
      trace.max_int)
  end
  d.kv_valid = parse_int(meta.kv_valid)
  if not d.kv_valid then
    fail(path, "metadata kv_valid = %q: must be an integer in [0, %d]", meta.kv_valid, trace.max_int)
  end
  if d.kv_valid > d.S or d.kv_valid < d.n_img then
    fail(path, "metadata kv_valid = %d: must lie in [%d, %d] (grid %s = %d latent tokens, + text_len %d = S)",
      d.kv_valid, d.n_img, d.S, meta.grid, d.n_img, d.text_len)
  end
  d.steps = parse_ints(path, "steps", meta.steps, true)
  d.layers = parse_ints(path, "layers", meta.layers, true)
  for _, l in ipairs(d.layers) do
    if l < 1 then fail(path, "metadata layers = %q: layers count from 1", meta.layers) end
  end
  if meta.num_steps ~= nil then
    d.num_steps = parse_int(meta.num_steps)
    if not d.num_steps or d.num_steps < 1 then
      fail(path, "metadata num_steps = %q: must be an integer in [1, %d]", meta.num_steps, trace.max_int)
    end
    if d.steps[#d.steps] >= d.num_steps then
      fail(path, "metadata steps = %q: step %d is beyond num_steps = %d (steps count from 0)", meta.steps,
        d.steps[#d.steps], d.num_steps)
    end
  end
  d.timesteps = {}
  if meta.timesteps ~= nil then
    local n = count_items(meta.timesteps)
    if n ~= #d.steps then fail(path, "metadata timesteps has %d entries but steps has %d", n, #d.steps) end
    for i, item in ipairs(split(meta.timesteps)) do
      local t = item:match("^%s*[-+]?[%d.]+[eE]?[-+]?%d*%s*$") and tonumber(item)
      if not t then fail(path, "metadata timesteps = %q: entry %d (%q) is not a decimal number", meta.timesteps, i, item) end
      if not (t >= 0 and t < math.huge) then
        fail(path, "metadata timesteps = %q: entry %d (%q) must be finite and >= 0", meta.timesteps, i, item)
      end
      d.timesteps[d.steps[i]] = t
    end
  end
  d.kinds = {}
  if meta.layer_kinds ~= nil then
    local n = count_items(meta.layer_kinds)
    if n ~= #d.layers then fail(path, "metadata layer_kinds has %d entries but layers has %d", n, #d.layers) end
    for i, item in ipairs(split(meta.layer_kinds)) do
      if not trace.kinds[item] then
        fail(path, "metadata layer_kinds = %q: entry %d (%q) is not a layer kind (double, single or self)",
          meta.layer_kinds, i, item)
      end
      d.kinds[d.layers[i]] = item
    end
  end
  -- per-record kv_valid, keyed "step:layer" (the key's numbers were checked above)
  d.record_kv = {}
  for k, v in pairs(meta) do
    local s, l = k:match("^step(%d+)%.layer(%d+)%.kv_valid$")
    if s then
      local n = parse_int(v)
      if not n or n > d.S or n < d.n_img then
        fail(path, "metadata %s = %q: must be an integer in [%d, %d]", k, tostring(v), d.n_img, d.S)
      end
      d.record_kv[tonumber(s) .. ":" .. tonumber(l)] = {n = n, key = k}
    end
  end
  return d
end

-- Checks the tensors (entries: name -> {dtype=, shape=}) against the description d.
local function check_tensors(d, entries)
  local path = d.path
  local step_set, layer_set = {}, {}
  for _, s in ipairs(d.steps) do step_set[s] = true end
  for _, l in ipairs(d.layers) do layer_set[l] = true end
  for name in pairs(entries) do
    local s, l, f = name:match("^step(%d+)%.layer(%d+)%.([qkv])$")
    if not s then
      fail(path, "unexpected tensor %s (trace tensors are named step{s}.layer{l}.q, .k and .v)", name)
    end
    local si, li = parse_index(s), parse_index(l)
    if not si or not li then
      local ps, pl = parse_int(s), parse_int(l)
      fail(path, "tensor %s: step and layer must be integers in [0, %d] written without leading zeros%s", name,
        trace.max_int, ps and pl and string.format(" (%s)", trace.name(ps, pl, f)) or "")
    end
    s, l = si, li
    if not step_set[s] then fail(path, "tensor %s: step %d is not among the recorded steps (metadata steps = %q)", name, s, d.meta.steps) end
    if not layer_set[l] then fail(path, "tensor %s: layer %d is not among the recorded layers (metadata layers = %q)", name, l, d.meta.layers) end
  end
  for key, r in pairs(d.record_kv) do
    local s, l = key:match("^(%d+):(%d+)$")
    if not (step_set[tonumber(s)] and layer_set[tonumber(l)]) then
      fail(path, "metadata %s names a record that is not in the trace", r.key)
    end
  end
  d.shapes = {}
  for _, s in ipairs(d.steps) do
    for _, l in ipairs(d.layers) do
      local where = string.format("step %d layer %d", s, l)
      local q = entries[trace.name(s, l, "q")]
      for _, f in ipairs({"q", "k", "v"}) do
        local e = entries[trace.name(s, l, f)]
        if not e then
          fail(path, "%s: missing tensor %s (field %s)", where, trace.name(s, l, f), f)
        end
        if not trace.dtypes[e.dtype] then
          fail(path, "%s: field %s (%s) is %s; a trace stores bf16 or f32", where, f, trace.name(s, l, f), e.dtype)
        end
        if #e.shape ~= 3 then
          fail(path, "%s: field %s (%s) has shape %s; it must be [S, H, D]", where, f, trace.name(s, l, f), shape_str(e.shape))
        end
      end
      for _, f in ipairs({"k", "v"}) do
        local e = entries[trace.name(s, l, f)]
        for i = 1, 3 do
          if e.shape[i] ~= q.shape[i] then
            fail(path, "%s: field %s has shape %s but q has %s (q, k and v of a record share [S, H, D])", where, f,
              shape_str(e.shape), shape_str(q.shape))
          end
        end
        if e.dtype ~= q.dtype then
          fail(path, "%s: field %s is %s but q is %s (q, k and v of a record share a dtype)", where, f, e.dtype, q.dtype)
        end
      end
      if q.shape[1] ~= d.S then
        fail(path, "%s: field q has S = %d tokens but grid %s (%d latent tokens) + text_len %d = %d", where,
          q.shape[1], table.concat(d.grid, "x"), d.n_img, d.text_len, d.S)
      end
      d.shapes[s .. ":" .. l] = {q.shape[1], q.shape[2], q.shape[3], dtype = q.dtype}
    end
  end
  local first = d.shapes[d.steps[1] .. ":" .. d.layers[1]]
  d.heads, d.head_dim, d.dtype = first[2], first[3], first.dtype
end

local Trace = {}
Trace.__index = Trace

-- Opens and validates a trace (reads the header only).
function trace.open(path)
  if type(path) ~= "string" then error("adaspa.trace.open: path must be a string, got " .. type(path), 2) end
  local ok, info, meta = pcall(adaspa.safetensors.info, path)
  if not ok then
    local msg = tostring(info):gsub("^adaspa%.safetensors%.info: ", "")
    if msg:sub(1, #path + 2) == path .. ": " then msg = msg:sub(#path + 3) end
    fail(path, "not a readable safetensors file: %s", msg)
  end
  local d = parse_meta(path, meta, #info)
  local entries = {}
  for _, e in ipairs(info) do entries[e.name] = e end
  check_tensors(d, entries)
  return setmetatable(d, Trace)
end

function Trace:records()
  local out = {}
  for _, s in ipairs(self.steps) do
    for _, l in ipairs(self.layers) do out[#out + 1] = {step = s, layer = l} end
  end
  return out
end

function Trace:has(step, layer) return self.shapes[step .. ":" .. tostring(layer)] ~= nil end

local function check_record(tr, fname, step, layer)
  if not tr:has(step, layer) then
    error(string.format("adaspa.trace: %s: %s: no record step %s layer %s (steps %s, layers %s)", tr.path, fname,
      tostring(step), tostring(layer), tr.meta.steps, tr.meta.layers), 3)
  end
end

-- info for ctx:attention: {layer=, kind=, index=, n_img=, n_txt=, kv_valid=, grid=}.
function Trace:info(step, layer)
  check_record(self, "info", step, layer)
  local r = self.record_kv[step .. ":" .. layer]
  local kv = r and r.n or self.kv_valid
  local index = 0
  for i, l in ipairs(self.layers) do if l == layer then index = i - 1 end end
  return {layer = layer, kind = self.kinds[layer] or "trace", index = index, n_img = self.n_img, n_txt = self.text_len,
          kv_valid = kv, grid = {self.grid[1], self.grid[2], self.grid[3]}, step = step}
end

-- q, k, v [S, H, D] of a record and its info; opts: {device = "cpu" | "cuda[:N]", dtype = "f32" | "bf16"}.
function Trace:load(step, layer, opts)
  check_record(self, "load", step, layer)
  opts = opts or {}
  local names = {trace.name(step, layer, "q"), trace.name(step, layer, "k"), trace.name(step, layer, "v")}
  local ok, t = pcall(adaspa.safetensors.load, self.path, {names = names})
  if not ok then fail(self.path, "step %d layer %d: cannot read: %s", step, layer, tostring(t)) end
  local out = {}
  for i, n in ipairs(names) do
    local x = t[n]
    local sum = x:sum()   -- in double: finite unless an element is NaN or infinite
    if not (sum == sum and math.abs(sum) < math.huge) then
      local mx, mn = x:max(), x:min()
      local what = mx ~= mx and "NaN" or (mx == math.huge and "+inf" or (mn == -math.huge and "-inf" or "non-finite"))
      for _, y in pairs(t) do y:free() end
      for _, y in ipairs(out) do y:free() end
      fail(self.path, "step %d layer %d: field %s (%s) holds %s values; a trace's q, k and v must be finite", step,
        layer, ({"q", "k", "v"})[i], n, what)
    end
    local y = x:to(opts.dtype or x:dtype(), opts.device or x:device()) -- one conversion, x itself when none
    if y ~= x then x:free() end
    out[i] = y
  end
  return out[1], out[2], out[3], self:info(step, layer)
end

function Trace:describe()
  return string.format("%s: %s, grid %s (%d latent tokens) + %d text = %d tokens (%d valid), %d heads x %d, %s; steps {%s}, layers {%s}%s",
    self.path, self.model, table.concat(self.grid, "x"), self.n_img, self.text_len, self.S, self.kv_valid, self.heads,
    self.head_dim, self.dtype, self.meta.steps, self.meta.layers,
    self.num_steps and string.format(" of %d", self.num_steps) or "")
end

-- ---- writing ------------------------------------------------------------------------------------

local function join(list, fmt)
  local parts = {}
  for i, x in ipairs(list) do parts[i] = fmt and string.format(fmt, x) or tostring(x) end
  return table.concat(parts, ",")
end

local function is_int(v) return type(v) == "number" and v == math.floor(v) and v >= 0 and v < 2 ^ 53 end

-- The file's content: a list of {name, tensor} and the metadata. Raises (naming path, when
-- given) on records or meta fields of the wrong type.
function trace.encode(records, meta, path)
  path = path or "(trace.encode)"
  if type(records) ~= "table" or #records == 0 then fail(path, "records must be a non-empty list of {step=, layer=, q=, k=, v=}") end
  if type(meta) ~= "table" then fail(path, "meta must be a table {model=, grid=, text_len=, kv_valid=, ...}") end
  local dtype = meta.dtype or "bf16"
  if not trace.dtypes[dtype] then fail(path, "meta.dtype = %s: bf16 or f32", tostring(dtype)) end
  if type(meta.model) ~= "string" or meta.model == "" then fail(path, "meta.model must be a non-empty string, got %s", tostring(meta.model)) end
  if type(meta.grid) ~= "table" or #meta.grid ~= 3 then fail(path, "meta.grid must be {T, Hh, Ww}") end
  for i = 1, 3 do if not is_int(meta.grid[i]) then fail(path, "meta.grid[%d] must be an integer, got %s", i, tostring(meta.grid[i])) end end
  for _, k in ipairs({"text_len", "kv_valid"}) do
    if not is_int(meta[k]) then fail(path, "meta.%s must be a non-negative integer, got %s", k, tostring(meta[k])) end
  end
  local steps, layers, seen_s, seen_l, seen = {}, {}, {}, {}, {}
  local tensors = {}
  local md = {format = trace.format, version = trace.version, model = meta.model, grid = join(meta.grid),
              text_len = tostring(meta.text_len), kv_valid = tostring(meta.kv_valid)}
  for i, r in ipairs(records) do
    if type(r) ~= "table" or not is_int(r.step) or not is_int(r.layer) then
      fail(path, "records[%d] must be {step = integer >= 0, layer = integer >= 1, q=, k=, v=}", i)
    end
    local key = r.step .. ":" .. r.layer
    if seen[key] then fail(path, "records[%d]: step %d layer %d is recorded twice", i, r.step, r.layer) end
    seen[key] = true
    if not seen_s[r.step] then seen_s[r.step] = true; steps[#steps + 1] = r.step end
    if not seen_l[r.layer] then seen_l[r.layer] = true; layers[#layers + 1] = r.layer end
    for _, f in ipairs({"q", "k", "v"}) do
      local t = r[f]
      if not adaspa.is_tensor(t) then
        fail(path, "step %d layer %d: field %s must be a tensor [S, H, D], got %s", r.step, r.layer, f, type(t))
      end
      if t:dtype() ~= dtype then t = t:to(dtype) end
      tensors[#tensors + 1] = {trace.name(r.step, r.layer, f), t}
    end
    if r.kv_valid ~= nil and r.kv_valid ~= meta.kv_valid then
      if not is_int(r.kv_valid) then fail(path, "records[%d].kv_valid must be an integer", i) end
      md[string.format("step%d.layer%d.kv_valid", r.step, r.layer)] = tostring(r.kv_valid)
    end
  end
  table.sort(steps)
  table.sort(layers)
  md.steps, md.layers = join(steps), join(layers)
  if meta.num_steps ~= nil then
    if not is_int(meta.num_steps) then fail(path, "meta.num_steps must be an integer, got %s", tostring(meta.num_steps)) end
    md.num_steps = tostring(meta.num_steps)
  end
  if meta.timesteps ~= nil then
    local ts = {}
    for i, s in ipairs(steps) do
      local t = meta.timesteps[s]
      if type(t) ~= "number" then fail(path, "meta.timesteps[%d] (step %d) must be a number, got %s", s, s, tostring(t)) end
      ts[i] = t
    end
    md.timesteps = join(ts, "%.9g")
  end
  if meta.kinds ~= nil then
    local ks = {}
    for i, l in ipairs(layers) do
      local k = meta.kinds[l]
      if type(k) ~= "string" or k == "" or k:find(",", 1, true) then
        fail(path, "meta.kinds[%d] (layer %d) must be a word such as \"double\", got %s", l, l, tostring(k))
      end
      ks[i] = k
    end
    md.layer_kinds = table.concat(ks, ",")
  end
  if meta.source ~= nil then md.source = tostring(meta.source) end
  return tensors, md
end

-- Writes a trace; validates it as trace.open would before anything is written.
function trace.write(path, records, meta)
  if type(path) ~= "string" then error("adaspa.trace.write: path must be a string, got " .. type(path), 2) end
  -- while a recipe runs, adaspa.safetensors.save confines the write to its output folder (outdir.h)
  local tensors, md = trace.encode(records, meta, path)
  local d = parse_meta(path, md, #tensors)
  local entries = {}
  for _, nt in ipairs(tensors) do entries[nt[1]] = {dtype = nt[2]:dtype(), shape = nt[2]:shape()} end
  check_tensors(d, entries)
  adaspa.safetensors.save(path, tensors, md)
  return path
end

return trace
