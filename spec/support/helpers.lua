-- Loaded by busted before the specs (spec/busted.lua passes --helper). Shared helpers, as globals
-- prefixed with spec_ so specs read plainly.
adaspa = adaspa or require "adaspa"

local has_gpu = adaspa.cuda.available()

-- it_gpu(name, fn): a spec that needs a GPU; without one it is reported as skipped.
-- (busted's it and pending live in the calling spec file's environment, not in _G.)
function it_gpu(name, fn)
  local env = getfenv(2)
  if has_gpu then
    env.it(name .. " #gpu", fn)
  else
    env.pending(name .. " #gpu (no GPU: " .. adaspa.cuda.reason() .. ")")
  end
end

-- The adaspa binary under test (the asan build sets ADASPA_BIN).
spec_bin = os.getenv("ADASPA_BIN") or "build/adaspa"

-- Runs the binary with a shell command line; returns stdout, stderr, exit status.
function spec_run(cmdline, stdin)
  local out, err = os.tmpname(), os.tmpname()
  local inp
  local cmd = spec_bin .. " " .. cmdline
  if stdin then
    inp = os.tmpname()
    local f = assert(io.open(inp, "w")); f:write(stdin); f:close()
    cmd = cmd .. " < " .. inp
  else
    cmd = cmd .. " < /dev/null"
  end
  local code = os.execute(cmd .. " > " .. out .. " 2> " .. err)
  local function slurp(p) local f = io.open(p); local s = f:read("*a"); f:close(); os.remove(p); return s end
  local so, se = slurp(out), slurp(err)
  if inp then os.remove(inp) end
  -- LuaJIT (5.1 semantics) returns the raw wait status
  if type(code) == "number" and code > 255 then code = math.floor(code / 256) end
  return so, se, code
end

-- A fresh path for a directory (nothing there yet; jobs create it).
function spec_tmpdir()
  local d = os.tmpname()
  os.remove(d)
  return d
end

-- For the specs of recipes/tools/tinyvideo: the Python that has torch ($ADASPA_PYTHON or python3)
-- and a fresh, created folder; nil (and the spec pending, naming what is missing) without torch.
function spec_torch_workdir()
  local py = os.getenv("ADASPA_PYTHON") or "python3"
  if os.execute(py .. " -c 'import torch, safetensors' > /dev/null 2>&1") ~= 0 then
    getfenv(2).pending("needs Python with torch and safetensors (" .. py .. "; set ADASPA_PYTHON)")   -- as it_gpu
    return nil
  end
  local out = spec_tmpdir()
  os.execute("mkdir -p " .. out)
  return py, out
end

-- The contents of file p, or nil when it cannot be opened.
function spec_slurp(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Whether file p can be opened.
function spec_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Writes content to a new temporary .lua file; returns its path (the caller removes it).
function spec_tmpfile(content)
  local p = os.tmpname() .. ".lua"
  local f = assert(io.open(p, "w"))
  f:write(content)
  f:close()
  return p
end

-- Asserts that fn raises an error whose message contains every given plain substring.
function spec_error(fn, ...)
  local ok, msg = pcall(fn)
  assert(not ok, "expected an error, but the call succeeded")
  msg = tostring(msg)
  for _, part in ipairs({...}) do
    assert(msg:find(part, 1, true), string.format("error message %q lacks %q", msg, part))
  end
  return msg
end

-- Maximum absolute difference of two equally shaped tensors (any devices and dtypes).
function spec_maxdiff(a, b)
  local x = a:to("cpu"):to("f32"):contiguous():reshape({-1}):totable()
  local y = b:to("cpu"):to("f32"):contiguous():reshape({-1}):totable()
  assert(#x == #y, "element counts differ")
  local m = 0
  for i = 1, #x do
    local d = math.abs(x[i] - y[i])
    if d ~= d then return math.huge end
    if d > m then m = d end
  end
  return m
end

-- Row-major values of a tensor as a flat Lua list (any dtype, device or view).
function spec_flat(t) return t:to("cpu"):to("f32"):contiguous():reshape({-1}):totable() end

-- Relative L2 error of a flat list against a reference list. Where the reference is -inf the
-- value must be -inf too (those entries stay out of the norm); a NaN makes the error infinite.
function spec_rel_l2(got, ref)
  assert(#got == #ref, string.format("element counts differ: %d vs %d", #got, #ref))
  local num, den = 0, 0
  for i = 1, #ref do
    if ref[i] == -math.huge then
      assert(got[i] == -math.huge, string.format("element %d: expected -inf, got %s", i, tostring(got[i])))
    else
      local e = got[i] - ref[i]
      if e ~= e then return math.huge end
      num, den = num + e * e, den + ref[i] * ref[i]
    end
  end
  if den == 0 then return math.sqrt(num) end
  return math.sqrt(num / den)
end

-- Random block mass [H, nqb, nkb] f32: exp(randn), each row normalized to sum 1 (never zero).
-- Returns the tensor and its values as stored (f32), m[h][qb][kb].
function spec_rand_mass(h, nqb, nkb, seed)
  local t = adaspa.randn({h, nqb, nkb}, {seed = seed}):totable()
  for _, head in ipairs(t) do
    for _, row in ipairs(head) do
      local s = 0
      for j = 1, nkb do row[j] = math.exp(row[j]); s = s + row[j] end
      for j = 1, nkb do row[j] = row[j] / s end
    end
  end
  local m = adaspa.tensor(t)
  return m, m:totable()
end
