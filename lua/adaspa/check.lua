-- adaspa.check: field specs with limits for job schemas (adaspa.recipe validates them).
--
-- Each constructor returns a field spec {type =, default =, doc =, check = fn(v, root)} whose
-- check rejects what the job could not use, with a message that says what is wrong (adaspa.recipe
-- adds the recipe file, the field path and the value):
--   check.number{min =, max =, above =, below =, default =, doc =, extra = fn(v, root)}
--       a finite number (NaN and +-inf are refused) within [min, max] (above / below: exclusive);
--   check.integer{min =, max =, ...}    the same for integers (a bounded magnitude by default);
--   check.string{one_of = {..}, pattern =, ...}   a non-empty string of bounded length;
--   check.file{...}      a path the user names for reading: an existing, readable regular file;
--   check.dir{...}       a folder path to write to: non-empty, no NUL, bounded length;
--   check.boolean{...}, check.list{item = "integer"|"number"|"string", min =, max =, max_len =,
--       nonempty =}, check.any{check = fn}, check.table{check = fn}.
-- The checks are also usable alone: check.finite(v), check.readable(path).
local check = {}

local MAX_INT = 2 ^ 31 - 1 -- integers beyond this are refused unless a spec says otherwise
local MAX_STRING = 4096     -- bytes in any string field (paths included)

function check.finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

local function fmt(n)
  if n == math.floor(n) and math.abs(n) < 2 ^ 53 then return string.format("%d", n) end
  return string.format("%.6g", n)
end

-- "must be in [a, b]" style range text for the limits of o.
local function range_text(o)
  local lo = o.above and ("(" .. fmt(o.above)) or (o.min and ("[" .. fmt(o.min))) or nil
  local hi = o.below and (fmt(o.below) .. ")") or (o.max and (fmt(o.max) .. "]")) or nil
  if lo and hi then return "must be in " .. lo .. ", " .. hi end
  if lo then return (o.above and "must be > " or "must be >= ") .. fmt(o.above or o.min) end
  if hi then return (o.below and "must be < " or "must be <= ") .. fmt(o.below or o.max) end
  return nil
end

local function in_range(v, o)
  if o.min and v < o.min then return false end
  if o.max and v > o.max then return false end
  if o.above and v <= o.above then return false end
  if o.below and v >= o.below then return false end
  return true
end

-- A number problem or nil: finite, integer when asked, within the limits of o.
function check.number_problem(v, o, integer)
  if type(v) ~= "number" then return "must be a number, got a " .. type(v) end
  if not check.finite(v) then return "must be a finite number" end
  if integer then
    if v % 1 ~= 0 then return "must be an integer" end
    local lim = math.max(MAX_INT, o.max or 0, o.min and -o.min or 0)
    if v < -lim or v > lim then return range_text(o) or string.format("must be in [%d, %d]", -lim, lim) end
  end
  if not in_range(v, o) then return range_text(o) end
  return nil
end

local function spec(o, ftype, fn)
  local s = {type = ftype, default = o.default, doc = o.doc, required = o.required}
  s.check = function(v, root)
    local p = fn(v, root)
    if p then return p end
    if o.extra then return o.extra(v, root) end
  end
  return s
end

function check.number(o)
  o = o or {}
  return spec(o, "number", function(v) return check.number_problem(v, o, false) end)
end

function check.integer(o)
  o = o or {}
  return spec(o, "integer", function(v) return check.number_problem(v, o, true) end)
end

function check.string(o)
  o = o or {}
  return spec(o, "string", function(v)
    if v == "" and not o.empty then return "must not be empty" end
    if #v > (o.max_len or MAX_STRING) then return string.format("is too long (%d bytes, at most %d)", #v, o.max_len or MAX_STRING) end
    if v:find("%z") then return "must not hold a NUL byte" end
    if o.one_of then
      for _, x in ipairs(o.one_of) do if v == x then return nil end end
      if o.pattern and v:match(o.pattern) then return nil end
      return "must be one of: " .. table.concat(o.one_of, ", ") .. (o.pattern_doc and (" or " .. o.pattern_doc) or "")
    end
    if o.pattern and not v:match(o.pattern) then return "must be " .. (o.pattern_doc or ("like " .. o.pattern)) end
  end)
end

-- nil when path names an existing readable regular file, else why not.
function check.readable(path)
  local f, err = io.open(path, "rb")
  if not f then return "cannot be read: " .. tostring(err):gsub("^[^:]*: ", "") end
  -- a folder opens on Linux but fails to read
  local ok, data, rerr = pcall(f.read, f, 1)
  f:close()
  if not ok or (data == nil and rerr) then return "is not a readable file (a folder?)" end
  if data == nil then return "is an empty file" end
  return nil
end

function check.file(o)
  o = o or {}
  return spec(o, "string", function(v)
    if v == "" then return "must name a file (got an empty path)" end
    if #v > MAX_STRING then return string.format("is too long (%d bytes, at most %d)", #v, MAX_STRING) end
    if v:find("%z") then return "must not hold a NUL byte" end
    return check.readable(v)
  end)
end

function check.dir(o)
  o = o or {}
  return spec(o, "string", function(v)
    if v == "" then return "must name a folder (got an empty path; leave the field out for the default)" end
    if #v > MAX_STRING then return string.format("is too long (%d bytes, at most %d)", #v, MAX_STRING) end
    if v:find("%z") then return "must not hold a NUL byte" end
  end)
end

function check.boolean(o)
  o = o or {}
  return spec(o, "boolean", function() end)
end

-- A list of items; item = "integer" | "number" | "string" | nil (anything), each within the
-- limits of o (min, max, ...); at most max_len entries (default 4096); nonempty.
function check.list(o)
  o = o or {}
  return spec(o, "list", function(v)
    local n = 0
    for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k % 1 ~= 0 or k > #v then return "must be a list (1, 2, ...) of values" end
      n = n + 1
    end
    if n > (o.max_len or 4096) then return string.format("has %d entries (at most %d)", n, o.max_len or 4096) end
    if o.nonempty and n == 0 then return "must list at least one value" end
    for i, x in ipairs(v) do
      local p
      if o.item == "integer" or o.item == "number" then
        p = check.number_problem(x, o, o.item == "integer")
      elseif o.item == "string" then
        if type(x) ~= "string" or x == "" then p = "must be a non-empty string" end
      end
      if p then return string.format("entry %d (%s) %s", i, tostring(x), p) end
    end
  end)
end

function check.any(o)
  o = o or {}
  return spec(o, "any", o.check or function() end)
end

function check.table(o)
  o = o or {}
  return spec(o, "table", o.check or function() end)
end

return check
