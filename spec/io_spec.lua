-- Weights and pictures: adaspa.safetensors (load, info, save) and adaspa.png (read, write),
-- including hand-built malformed files, which must give clear errors and never crash.

local DTYPES = {"f32", "bf16", "f16", "i32", "i16", "u8"}

-- Temporary paths, removed after each spec.
local temps = {}
local function tmp(suffix)
  local p = os.tmpname()
  os.remove(p) -- os.tmpname creates the file; the specs want the name
  p = p .. (suffix or "")
  temps[#temps + 1] = p
  return p
end

local exists = spec_exists
local function slurp(p) return assert(spec_slurp(p)) end

local function spit(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

-- Integers in [lo, hi] from a seeded LCG (plain Lua, so the specs do not depend on ops).
local function ints(n, lo, hi, seed)
  local v, x = {}, seed
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    v[i] = lo + x % (hi - lo + 1)
  end
  return v
end

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

-- A test tensor of any dtype: seeded normals for floats, seeded integers of the dtype's range.
local RANGE = {i32 = {-2000000000, 2000000000}, i16 = {-32768, 32767}, u8 = {0, 255}}
local function sample(shape, dtype, seed)
  if RANGE[dtype] then
    local t = adaspa.tensor(ints(numel(shape), RANGE[dtype][1], RANGE[dtype][2], seed), {dtype = dtype})
    return t:reshape(shape)
  end
  return adaspa.randn(shape, {seed = seed, dtype = dtype})
end

local function flat(t) return t:contiguous():reshape({-1}):totable() end

-- Same dtype, shape and (bitwise, as doubles) values.
local function assert_same(want, got)
  assert.equal(want:dtype(), got:dtype())
  assert.same(want:shape(), got:shape())
  assert.same(flat(want), flat(got))
end

-- 8-byte little-endian length.
local function le64(n)
  local b = {}
  for i = 1, 8 do b[i] = string.char(n % 256); n = math.floor(n / 256) end
  return table.concat(b)
end

-- A safetensors file from its header text and data bytes; returns the path.
local function st_file(header, data)
  local p = tmp(".safetensors")
  spit(p, le64(#header) .. header .. (data or ""))
  return p
end

local ST_LOAD = "adaspa.safetensors.load"

after_each(function()
  for _, p in ipairs(temps) do os.remove(p); os.remove(p .. ".tmp") end
  temps = {}
  collectgarbage()
end)

describe("adaspa.safetensors round trip", function()
  it("keeps every dtype and shape bit for bit, with metadata", function()
    local shapes = {{1}, {7}, {3, 5}, {2, 1, 3}, {2, 1, 3, 1, 5}, {}}
    local tensors, seed = {}, 1
    for _, dt in ipairs(DTYPES) do
      for k, shape in ipairs(shapes) do
        tensors[dt .. "." .. k] = sample(shape, dt, seed)
        seed = seed + 1
      end
    end
    local meta = {format = "pt", note = "quote \" backslash \\ newline \n tab \t café 😀", [""] = ""}
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, tensors, meta)
    local got, gmeta = adaspa.safetensors.load(p)
    local n = 0
    for name, t in pairs(tensors) do
      assert_same(t, got[name])
      assert.equal("cpu", got[name]:device())
      n = n + 1
    end
    for _ in pairs(got) do n = n - 1 end
    assert.equal(0, n)
    assert.same(meta, gmeta)
    assert.same({}, got["u8.6"]:shape()) -- 0-dim
  end)

  it("writes an 8-aligned header, tensors in the given order, and no .tmp file", function()
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {{"zz", adaspa.ones({3})}, {"aa", adaspa.zeros({2}, {dtype = "u8"})}})
    local bytes = slurp(p)
    local hlen = 0
    for i = 8, 1, -1 do hlen = hlen * 256 + bytes:byte(i) end
    assert.equal(0, hlen % 8)
    assert.equal(8 + hlen + 12 + 2, #bytes)
    local header = bytes:sub(9, 8 + hlen)
    assert.truthy(header:find('"zz":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}', 1, true))
    assert.truthy(header:find('"aa":{"dtype":"U8","shape":[2],"data_offsets":[12,14]}', 1, true))
    assert.truthy(header:find('"zz"', 1, true) < header:find('"aa"', 1, true))
    assert.is_nil(header:find("__metadata__", 1, true))
    assert.is_false(exists(p .. ".tmp"))
    assert.equal(string.rep("\0", 2), bytes:sub(-2))
  end)

  it("saves strided and bf16 views as their values", function()
    local base = adaspa.randn({6, 9}, {seed = 11, dtype = "bf16"})
    local tr = base:transpose(1, 2)            -- [9, 6], strided
    local nar = base:narrow(2, 3, 4)           -- [6, 4], rows not contiguous
    local f32 = adaspa.randn({4, 5, 3}, {seed = 12}):permute({3, 1, 2})
    assert.is_false(tr:is_contiguous())
    assert.is_false(nar:is_contiguous())
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {tr = tr, nar = nar, f32 = f32})
    local got = adaspa.safetensors.load(p)
    assert_same(tr, got.tr)
    assert_same(nar, got.nar)
    assert_same(f32, got.f32)
    assert.is_true(got.tr:is_contiguous())
  end)

  it("loads tensors at unaligned offsets as aligned copies with the right values", function()
    local a = adaspa.tensor({1, 2, 3}, {dtype = "u8"})
    local b = sample({5, 3}, "f32", 21)
    local c = sample({7}, "i16", 22)
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {{"a", a}, {"b", b}, {"c", c}}) -- b at byte 3, c at byte 63
    local got = adaspa.safetensors.load(p)
    assert_same(a, got.a)
    assert_same(b, got.b)
    assert_same(c, got.c)
  end)

  it_gpu("saves GPU tensors", function()
    local t = adaspa.randn({5, 7}, {seed = 13, device = "cuda"})
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {t = t})
    assert_same(t:to("cpu"), adaspa.safetensors.load(p).t)
  end)
end)

describe("adaspa.safetensors.load", function()
  it("returns views that outlive the file handle, the table and the file itself", function()
    local w = sample({33, 17}, "f32", 31)
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {w = w, x = adaspa.ones({2})})
    local got = adaspa.safetensors.load(p)
    local v = got.w
    got = nil
    collectgarbage()
    collectgarbage()
    os.remove(p)
    assert_same(w, v)
    local view = v:narrow(1, 2, 3)
    v = nil
    collectgarbage()
    assert_same(w:narrow(1, 2, 3), view)
  end)

  it("gives writable tensors whose changes never reach the file", function()
    local p = tmp(".safetensors")
    local w = sample({4, 4}, "f32", 32)
    adaspa.safetensors.save(p, {w = w})
    local before = slurp(p)
    local got = adaspa.safetensors.load(p)
    got.w:fill(7)
    assert.equal(7 * 16, got.w:sum())
    assert.equal(before, slurp(p))
    assert_same(w, adaspa.safetensors.load(p).w)
  end)

  it("loads only the named tensors; a missing name is an error naming it", function()
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {a = adaspa.ones({2}), b = adaspa.zeros({3}), c = adaspa.ones({4})}, {k = "v"})
    local got, meta = adaspa.safetensors.load(p, {names = {"c", "a"}})
    local keys = {}
    for name in pairs(got) do keys[#keys + 1] = name end
    table.sort(keys)
    assert.same({"a", "c"}, keys)
    assert.same({4}, got.c:shape())
    assert.same({k = "v"}, meta)
    assert.is_nil(next((adaspa.safetensors.load(p, {names = {}}))))
    spec_error(function() adaspa.safetensors.load(p, {names = {"a", "nope"}}) end, ST_LOAD, p, "no tensor 'nope'")
    spec_error(function() adaspa.safetensors.load(p, {names = {"a", 3}}) end, ST_LOAD, "names", "position 2")
    spec_error(function() adaspa.safetensors.load(p, {names = "a"}) end, ST_LOAD, "names", "list of strings")
    spec_error(function() adaspa.safetensors.load(p, {nmes = {}}) end, ST_LOAD, "unknown option 'nmes'")
    spec_error(function() adaspa.safetensors.load(nil) end, ST_LOAD, "path must be a string")
  end)

  it("decodes \\u escapes and surrogate pairs in names", function()
    local h = '{"caf\\u00e9":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},' ..
              '"\\ud83d\\ude00\\n":{"dtype":"U8","shape":[],"data_offsets":[1,2]},' ..
              '"__metadata__":{"a\\/b":"\\"q\\" \\\\ \\t"}}   '
    local got, meta = adaspa.safetensors.load(st_file(h, "\5\6"))
    assert.equal(5, got["café"]:get(1))
    assert.equal(6, got["😀\n"]:get())
    assert.same({["a/b"] = '"q" \\ \t'}, meta)
  end)

  it("reads a header padded to the data and files with no tensors", function()
    local got, meta = adaspa.safetensors.load(st_file("{}"))
    assert.same({}, got)
    assert.same({}, meta)
    local h = '{"__metadata__":{"x":"y"}}' .. string.rep(" ", 6)
    got, meta = adaspa.safetensors.load(st_file(h))
    assert.same({}, got)
    assert.same({x = "y"}, meta)
  end)
end)

describe("adaspa.safetensors.info", function()
  it("lists tensors sorted by name with dtype, shape and bytes, and the metadata", function()
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {{"b", adaspa.ones({2, 3}, {dtype = "bf16"})}, {"a", adaspa.ones({}, {dtype = "i32"})},
                                {"c.w", adaspa.ones({5}, {dtype = "u8"})}}, {format = "pt"})
    local list, meta = adaspa.safetensors.info(p)
    assert.same({
      {name = "a", dtype = "i32", shape = {}, bytes = 4},
      {name = "b", dtype = "bf16", shape = {2, 3}, bytes = 12},
      {name = "c.w", dtype = "u8", shape = {5}, bytes = 5},
    }, list)
    assert.same({format = "pt"}, meta)
  end)

  it("reads only the header: the data is not checked beyond its size", function()
    -- the data bytes are arbitrary; info only needs the header
    local h = '{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}'
    local list = adaspa.safetensors.info(st_file(h, "\255\255\255\255"))
    assert.same({{name = "w", dtype = "f16", shape = {2}, bytes = 4}}, list)
    spec_error(function() adaspa.safetensors.info(st_file("{")) end, "adaspa.safetensors.info", "invalid JSON")
  end)
end)

describe("adaspa.safetensors malformed files", function()
  -- Each case: header text (or raw bytes), data, substrings of the error after "load: <path>: ".
  local W = '"w":{"dtype":"F32","shape":[2, 3],"data_offsets":[0,24]}'
  local D24 = string.rep("\0", 24)
  local cases = {
    {"missing dtype", '{"w":{"shape":[2],"data_offsets":[0,8]}}', D24, {"tensor 'w'", "missing field 'dtype'"}},
    {"unknown dtype", '{"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}', D24, {"tensor 'w'", "unknown dtype \"F33\""}},
    {"F64", '{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}', D24, {"unsupported dtype F64 for tensor 'x'"}},
    {"I64", '{"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}', D24, {"unsupported dtype I64 for tensor 'x'"}},
    {"BOOL", '{"x":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}}', D24, {"unsupported dtype BOOL for tensor 'x'"}},
    {"dtype not a string", '{"w":{"dtype":3,"shape":[2],"data_offsets":[0,8]}}', D24, {"tensor 'w'", "dtype must be a string, found 3"}},
    {"negative shape", '{"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,8]}}', D24,
     {"tensor 'w'", "shape entry 2 must be a non-negative integer, found -3"}},
    {"non-integer shape", '{"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}', D24,
     {"tensor 'w'", "shape entry 1 must be a non-negative integer, found 2.5"}},
    {"string shape", '{"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', D24,
     {"tensor 'w'", "shape must be an array of integers, found \"2\""}},
    {"zero-size dimension", '{"w":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]}}', D24,
     {"tensor 'w'", "shape [2, 0] has a zero-size dimension"}},
    {"six dimensions", '{"w":{"dtype":"U8","shape":[1,1,1,1,1,1],"data_offsets":[0,1]}}', D24,
     {"tensor 'w'", "6 dimensions", "at most 5"}},
    {"offsets out of range", '{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}}', D24,
     {"tensor 'w'", "data_offsets [8, 32]", "data buffer (24 bytes)"}},
    {"data truncated", '{' .. W .. '}', string.rep("\0", 20), {"tensor 'w'", "data_offsets [0, 24]", "(20 bytes)"}},
    {"end before begin", '{"w":{"dtype":"U8","shape":[1],"data_offsets":[9,8]}}', D24, {"tensor 'w'", "[9, 8]", "end before"}},
    {"size mismatch", '{"blocks.0.w":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}}', string.rep("\0", 120),
     {"tensor 'blocks.0.w': data_offsets [0, 100] but shape [5, 6] f32 needs 120 bytes"}},
    {"huge shape", '{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', D24,
     {"tensor 'w'", "needs more than the 24 bytes"}},
    {"offsets of one number", '{"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}}', D24,
     {"tensor 'w'", "data_offsets must be [begin, end]", "found [0]"}},
    {"negative offset", '{"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}', D24, {"tensor 'w'", "found [-1,0]"}},
    {"overlapping tensors", '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},' ..
                            '"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', D24,
     {"tensors 'a' (data_offsets [0, 16]) and 'b' (data_offsets [8, 16]) overlap"}},
    {"duplicate key", '{' .. W .. ',' .. W .. '}', D24, {"duplicate key \"w\""}},
    {"duplicate metadata key", '{"__metadata__":{"k":"a","j":"c","k":"b"}}', "", {"__metadata__: duplicate key \"k\""}},
    {"two __metadata__", '{"__metadata__":{},"__metadata__":{}}', "", {"duplicate key \"__metadata__\""}},
    {"duplicate field", '{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', D24, {"duplicate key \"dtype\""}},
    {"unknown field", '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}', D24, {"tensor 'w'", "unknown field 'x'"}},
    {"entry not an object", '{"w":[1,2]}', D24, {"tensor 'w'", "must be an object", "found [1,2]"}},
    {"root not an object", '[1]', D24, {"header must be a JSON object, found [1]"}},
    {"metadata value not a string", '{"__metadata__":{"k":1}}', "", {"__metadata__ 'k' must be a string, found 1"}},
    {"metadata not an object", '{"__metadata__":"x"}', "", {"__metadata__ must be an object"}},
    {"name with a NUL", '{"a\\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', D24, {"name contains a NUL"}},
    {"empty name", '{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', D24, {"empty name"}},
    {"invalid JSON", '{"w": }', "", {"invalid JSON at byte 14", "expected a JSON value, found '}'"}},
    {"trailing text", '{} x', "", {"invalid JSON at byte 11", "end of input"}},
    {"unterminated string", '{"w', "", {"invalid JSON at byte 9", "unterminated string"}},
    {"missing colon", '{"w" 1}', "", {"expected ':'"}},
    {"bad escape", '{"\\x":1}', "", {"invalid escape \\x"}},
    {"lone surrogate", '{"\\udc00":1}', "", {"lone low surrogate"}},
    {"unpaired high surrogate", '{"\\ud800x":1}', "", {"not followed by a low surrogate"}},
    {"short \\u", '{"\\u12":1}', "", {"4 hex digits"}},
    {"control character", '{"a\nb":1}', "", {"unescaped control character"}},
    {"invalid UTF-8", '{"\192\128":1}', "", {"invalid UTF-8"}},
    {"UTF-8 surrogate", '{"\237\160\128":1}', "", {"invalid UTF-8"}},
    {"leading zero", '{"a":01}', "", {"expected ',' or '}'"}},
    {"bare fraction", '{"a":1.}', "", {"expected a digit after '.'"}},
    {"number out of range", '{"a":1e999}', "", {"out of range"}},
    {"long number", '{"a":' .. string.rep("1", 200) .. '}', "", {"longer than 127"}},
    {"deep nesting", string.rep("[", 65) .. string.rep("]", 65), "", {"nesting deeper than 64"}},
    {"literal", '{"a":tru}', "", {"expected a JSON value"}},
    {"NUL padding", '{}\0\0\0\0\0\0', "", {"found byte 0x00"}},
    {"empty header", '', "", {"invalid JSON at byte 8", "end of input"}},
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      local p = st_file(c[2], c[3])
      spec_error(function() adaspa.safetensors.load(p) end, ST_LOAD .. ": " .. p .. ": ", unpack(c[4]))
      spec_error(function() adaspa.safetensors.info(p) end, "adaspa.safetensors.info: " .. p .. ": ", unpack(c[4]))
    end)
  end

  it("a file shorter than the length field", function()
    local p = tmp(".safetensors")
    spit(p, "\1\0\0")
    spec_error(function() adaspa.safetensors.load(p) end, ST_LOAD, p, "3 bytes", "too short")
    spit(p, "")
    spec_error(function() adaspa.safetensors.load(p) end, ST_LOAD, p, "0 bytes", "too short")
  end)

  it("a header length larger than the file", function()
    local p = tmp(".safetensors")
    spit(p, le64(1000) .. '{"w":{}}')
    spec_error(function() adaspa.safetensors.load(p) end, ST_LOAD, p, "header length 1000 exceeds the 8 bytes")
    spit(p, "\255\255\255\255\255\255\255\255{}")
    spec_error(function() adaspa.safetensors.load(p) end, ST_LOAD, p, "header length 18446744073709551615 exceeds")
  end)

  it("a header over 100 MiB", function()
    local p = tmp(".safetensors")
    local f = assert(io.open(p, "wb"))
    local n = 100 * 1048576 + 8
    f:write(le64(n))
    f:seek("set", 8 + n - 1) -- a sparse file: nothing is really written
    f:write(" ")
    f:close()
    spec_error(function() adaspa.safetensors.load(p) end, ST_LOAD, p, "header length 104857608 exceeds the 100 MiB limit")
  end)

  it("a missing file, a directory, a PNG", function()
    local p = tmp(".safetensors")
    spec_error(function() adaspa.safetensors.load(p) end, ST_LOAD, p, "cannot open", "No such file")
    spec_error(function() adaspa.safetensors.load("/tmp") end, ST_LOAD, "/tmp: not a regular file")
    local png = tmp(".png")
    adaspa.png.write(png, adaspa.zeros({2, 2}, {dtype = "u8"}))
    spec_error(function() adaspa.safetensors.load(png) end, ST_LOAD, png, "header length", "not a safetensors file")
  end)

  -- n one-byte tensors "t1".."tn" (each entry 50-odd bytes of JSON)
  local function many(n)
    local parts = {}
    for i = 1, n do parts[i] = string.format('"t%d":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}', i, i - 1, i) end
    return st_file("{" .. table.concat(parts, ",") .. "}", string.rep("\0", n))
  end

  it("at most 262144 tensors", function()
    local p = many(262145)
    spec_error(function() adaspa.safetensors.info(p) end, "adaspa.safetensors.info: " .. p ..
      ": header holds more than 262144 tensors (the limit)")
  end)

  it("reading a header takes memory in proportion to the file, under three times its size", function()
    local p = many(262144)
    local size = #slurp(p)
    -- the peak resident memory of a fresh process before and after reading the header
    local script = [[
      local function hwm() return tonumber(io.open("/proc/self/status"):read("*a"):match("VmHWM:%s*(%d+)")) * 1024 end
      local before = hwm()
      local t = adaspa.safetensors.load(arg[1], {names = {"t7"}})
      assert(t.t7:totable()[1] == 0)
      io.write(hwm() - before)
    ]]
    local out, err, code = spec_run("- " .. p, script)
    assert.equal(0, code, err)
    local grew = tonumber(out)
    assert.truthy(grew and grew > 0, out)
    -- the mapped header itself (1x) + 72 bytes per tensor (1.1x) + names: 2.2x; the old tree took 21x
    assert.is_true(grew < 3 * size, string.format("grew %d bytes for a %d-byte file", grew, size))
  end)

  it("a valid header whose every later entry is checked before anything loads", function()
    -- the first tensor is fine, the last one is not: nothing is returned
    local h = '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"z":{"dtype":"U8","shape":[1],"data_offsets":[1,3]}}'
    spec_error(function() adaspa.safetensors.load(st_file(h, "\1\2\3"), {names = {"a"}}) end, ST_LOAD,
               "tensor 'z'", "needs 1 bytes")
  end)
end)

describe("adaspa.safetensors.save errors", function()
  local SAVE = "adaspa.safetensors.save"
  it("names the argument, and leaves no file behind", function()
    local p = tmp(".safetensors")
    local t = adaspa.ones({2})
    spec_error(function() adaspa.safetensors.save(p, t) end, SAVE, "tensors must be a table")
    spec_error(function() adaspa.safetensors.save(p, {a = 1}) end, SAVE, "tensors['a'] must be a tensor, got number")
    spec_error(function() adaspa.safetensors.save(p, {[1] = t}) end, SAVE, "tensors[1] must be {name, tensor}, got tensor")
    spec_error(function() adaspa.safetensors.save(p, {{t, "a"}}) end, SAVE, "tensors[1]", "name is tensor")
    spec_error(function() adaspa.safetensors.save(p, {{"a", t}, b = t}) end, SAVE, "mixes")
    spec_error(function() adaspa.safetensors.save(p, {{"a", t}, {"a", t}}) end, SAVE, p, "tensor name 'a' appears twice")
    spec_error(function() adaspa.safetensors.save(p, {__metadata__ = t}) end, SAVE, p, "__metadata__")
    spec_error(function() adaspa.safetensors.save(p, {[""] = t}) end, SAVE, p, "empty name")
    spec_error(function() adaspa.safetensors.save(p, {["\255"] = t}) end, SAVE, p, "not valid UTF-8")
    spec_error(function() adaspa.safetensors.save(p, {a = t}, {k = 1}) end, SAVE, "metadata['k'] must be a string, got number")
    spec_error(function() adaspa.safetensors.save(p, {a = t}, "x") end, SAVE, "metadata must be a table")
    local freed = adaspa.ones({3})
    freed:free()
    spec_error(function() adaspa.safetensors.save(p, {a = freed}) end, SAVE, "tensors['a']", "freed")
    assert.is_false(exists(p))
    assert.is_false(exists(p .. ".tmp"))
  end)

  it("writing into a missing directory names the path", function()
    local p = tmp("") .. "/no/such/dir/w.safetensors"
    spec_error(function() adaspa.safetensors.save(p, {a = adaspa.ones({2})}) end, SAVE, p, "cannot create",
               "No such file or directory")
  end)

  it("a failed save keeps the existing file", function()
    local p = tmp(".safetensors")
    adaspa.safetensors.save(p, {a = adaspa.ones({2})})
    local before = slurp(p)
    spec_error(function() adaspa.safetensors.save(p, {{"a", adaspa.ones({2})}, {"a", adaspa.ones({3})}}) end, SAVE, "twice")
    assert.equal(before, slurp(p))
  end)
end)

describe("adaspa.png", function()
  local function image(shape, seed)
    return adaspa.tensor(ints(numel(shape), 0, 255, seed), {dtype = "u8"}):reshape(shape)
  end

  it("writes and reads back gray, RGB and RGBA exactly", function()
    for k, shape in ipairs({{1, 1}, {7, 5}, {13, 9, 1}, {5, 11, 3}, {1, 6, 3}, {9, 4, 4}}) do
      local img = image(shape, k)
      local p = tmp(".png")
      adaspa.png.write(p, img)
      local back = adaspa.png.read(p)
      local want = #shape == 2 and img:reshape({shape[1], shape[2], 1}) or img
      assert_same(want, back)
      assert.is_false(exists(p .. ".tmp"))
    end
  end)

  it("writes strided views", function()
    local base = image({6, 10, 3}, 40)
    local tr = base:transpose(1, 2)          -- [10, 6, 3]
    local crop = base:narrow(2, 3, 5)        -- [6, 5, 3]
    local chans = image({4, 7, 5}, 41):narrow(3, 2, 4) -- [4, 7, 4], pixels 5 bytes apart
    for _, v in ipairs({tr, crop, chans}) do
      assert.is_false(v:is_contiguous())
      local p = tmp(".png")
      adaspa.png.write(p, v)
      assert_same(v, adaspa.png.read(p))
    end
  end)

  -- tiny PNGs made by hand with a stored (uncompressed) zlib stream
  local function crc32(s)
    local crc = 0xffffffff
    for i = 1, #s do
      crc = bit.bxor(crc, s:byte(i))
      for _ = 1, 8 do
        local m = bit.band(crc, 1) ~= 0
        crc = bit.rshift(crc, 1)
        if m then crc = bit.bxor(crc, 0xedb88320) end
      end
    end
    return bit.bnot(crc) % 4294967296
  end
  local function be32(n)
    return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  end
  local function chunk(kind, data) return be32(#data) .. kind .. data .. be32(crc32(kind .. data)) end
  local function zstored(raw)
    local a, b = 1, 0
    for i = 1, #raw do a = (a + raw:byte(i)) % 65521; b = (b + a) % 65521 end
    local n = #raw
    return "\120\1\1" .. string.char(n % 256, math.floor(n / 256), 255 - n % 256, 255 - math.floor(n / 256)) ..
           raw .. be32(b * 65536 + a)
  end
  local function png(w, h, depth, ctype, rows, extra)
    local ihdr = be32(w) .. be32(h) .. string.char(depth, ctype, 0, 0, 0)
    return "\137PNG\r\n\26\n" .. chunk("IHDR", ihdr) .. (extra or "") .. chunk("IDAT", zstored(rows)) .. chunk("IEND", "")
  end

  it("reads what other writers produce: 16-bit, palette, gray+alpha, 1-bit", function()
    local p = tmp(".png")
    -- 2x1 16-bit gray: 0x1234, 0xff00 scaled to 8 bits (v / 257, rounded): 0x12, 0xfe
    spit(p, png(2, 1, 16, 0, "\0\18\52\255\0"))
    local g = adaspa.png.read(p)
    assert.same({1, 2, 1}, g:shape())
    assert.same({0x12, 0xfe}, flat(g))
    -- 3x1 palette with transparency on entry 1 -> RGBA
    spit(p, png(3, 1, 8, 3, "\0\0\1\2", chunk("PLTE", "\10\20\30\40\50\60\70\80\90") .. chunk("tRNS", "\255\128")))
    assert.same({10, 20, 30, 255, 40, 50, 60, 128, 70, 80, 90, 255}, flat(adaspa.png.read(p)))
    -- 2x1 gray+alpha -> RGBA
    spit(p, png(2, 1, 8, 4, "\0\7\8\9\10"))
    assert.same({7, 7, 7, 8, 9, 9, 9, 10}, flat(adaspa.png.read(p)))
    -- 3x2 1-bit gray -> 0 or 255
    spit(p, png(3, 2, 1, 0, "\0\160\0\64"))
    assert.same({255, 0, 255, 0, 255, 0}, flat(adaspa.png.read(p)))
  end)

  it("refuses pictures over the size limits before allocating their pixels", function()
    local p = tmp(".png")
    -- 65535 x 65535 RGBA claims 17 GB: more than its bytes can hold compressed
    local bomb = png(65535, 65535, 8, 6, "\0" .. string.rep("\0", 4))
    spit(p, bomb)
    local t0 = adaspa.now()
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p, "a 65535 x 65535 image holds 17179344900 " ..
      "bytes of pixel data, more than a " .. #bomb .. "-byte file can (deflate expands at most 1032 times)")
    -- padded past IEND to 20 MB, it could hold that much: the 1 GiB limit refuses it, still before any pixel
    spit(p, bomb .. string.rep("\0", 20 * 1048576))
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p,
      "image of 65535 x 65535 pixels x 4 channels needs 17179344900 bytes, over the limit of 1073741824")
    assert.is_true(adaspa.now() - t0 < 2)
    -- a side over 65535 pixels: refused on the header
    spit(p, png(70000, 1, 8, 0, "\0\0"))
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p, "Invalid IHDR data (Image width exceeds user limit")
    spit(p, png(0, 1, 8, 0, "\0"))
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p, "Image width is zero")
    -- a text chunk is skipped, never decoded: the picture still reads
    spit(p, png(1, 1, 8, 0, "\0\77", chunk("zTXt", "k\0\0" .. string.rep("\255", 40))))
    assert.same({77}, adaspa.png.read(p):reshape({-1}):totable())
  end)

  it("rejects wrong dtypes and shapes, naming the function and the path", function()
    local p = tmp(".png")
    spec_error(function() adaspa.png.write(p, adaspa.zeros({4, 4})) end, "adaspa.png.write", p, "u8 tensor, got f32")
    spec_error(function() adaspa.png.write(p, adaspa.zeros({4}, {dtype = "u8"})) end, "adaspa.png.write", p,
               "shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got [4]")
    spec_error(function() adaspa.png.write(p, adaspa.zeros({4, 4, 2}, {dtype = "u8"})) end, "adaspa.png.write", "got [4, 4, 2]")
    spec_error(function() adaspa.png.write(p, adaspa.zeros({2, 4, 4, 3}, {dtype = "u8"})) end, "adaspa.png.write", "got [2, 4, 4, 3]")
    spec_error(function() adaspa.png.write(p, "x") end, "adaspa.png.write", "image must be a tensor, got string")
    spec_error(function() adaspa.png.write(nil, adaspa.zeros({2, 2}, {dtype = "u8"})) end, "adaspa.png.write", "path must be a string")
    assert.is_false(exists(p))
    local missing = tmp("") .. "/no/dir/x.png"
    spec_error(function() adaspa.png.write(missing, adaspa.zeros({2, 2}, {dtype = "u8"})) end, "adaspa.png.write",
               missing, "cannot create", "No such file or directory")
  end)

  it("reading a missing, foreign, truncated or corrupt file is an error", function()
    local p = tmp(".png")
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p, "cannot open")
    spit(p, "GIF89a not a png")
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p, "not a PNG file")
    spit(p, "\137PNG")
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p, "not a PNG file")
    adaspa.png.write(p, image({31, 17, 3}, 50))
    local good = slurp(p)
    spit(p, good:sub(1, math.floor(#good / 2)))
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p)
    spit(p, good:sub(1, 40))
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p)
    spit(p, good:sub(1, 29) .. string.char(255 - good:byte(30)) .. good:sub(31)) -- IHDR CRC broken
    spec_error(function() adaspa.png.read(p) end, "adaspa.png.read", p, "CRC")
    spec_error(function() adaspa.png.read(nil) end, "adaspa.png.read", "path must be a string")
  end)
end)
