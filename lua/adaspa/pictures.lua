-- adaspa.pictures: pictures of block-sparse attention, as u8 RGB tensors [H, W, 3] that callers
-- write with adaspa.png.write. One head's layout (kept blocks dark, dropped light), one head's
-- block mass (log10 heat map), a layers x heads density grid, and images side by side.
-- Rows are query blocks, columns key blocks. Few blocks: one colored pixel per block, upscaled
-- (scale pixels per block, by expand views). Many blocks: k x k block tiles reduced to one pixel
-- (mean by default, or max), so pictures stay within opts.max_size (2048) pixels. Thin lines mark
-- where each latent frame starts (blue on masks, white on heat maps) and the first text block (red).
-- Block indices are 1-based, as everywhere in adaspa.
local adaspa = require "adaspa"

local pictures = {}

pictures.colors = {
  kept = {34, 34, 51}, dropped = {238, 238, 238},
  frame = {30, 100, 230}, frame_mass = {255, 255, 255}, text = {230, 30, 30},
  grid = {96, 96, 96}, missing = {255, 255, 255}, nan = {255, 0, 255},
}

-- The heat-map colormap: five stops of viridis (dark purple, blue, teal, green, yellow), linear
-- in RGB between them. Its luminance rises at every stop, hence everywhere between.
pictures.stops = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}}

local function luminance(c) return 0.2126 * c[1] + 0.7152 * c[2] + 0.0722 * c[3] end
pictures.luminance = luminance

-- 256 colors: entry i + 1 is the color of x = i / 255 in [0, 1].
local function build_lut(stops)
  local lut, n = {}, #stops - 1
  for i = 0, 255 do
    local x = i / 255 * n
    local s = math.min(math.floor(x), n - 1)
    local f, a, b = x - s, stops[s + 1], stops[s + 2]
    lut[i + 1] = {}
    for c = 1, 3 do lut[i + 1][c] = math.floor(a[c] + (b[c] - a[c]) * f + 0.5) end
  end
  return lut
end
pictures.colormap = build_lut(pictures.stops)

-- The colormap's color of x in [0, 1] (clamped).
function pictures.color(x)
  x = math.max(0, math.min(1, x))
  return pictures.colormap[math.floor(x * 255 + 0.5) + 1]
end

local function fail(fname, msg, ...) error(string.format("adaspa.pictures.%s: " .. msg, fname, ...), 3) end

local function is_int(v) return type(v) == "number" and v == math.floor(v) and v == v and v ~= math.huge end

local function check_opts(fname, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail(fname, "opts must be a table, got %s", type(opts)) end
  return opts
end

local function check_head(fname, head, H)
  if not is_int(head) or head < 1 or head > H then
    fail(fname, "head must be an integer in 1..%d, got %s", H, tostring(head))
  end
end

local function check_image(fname, what, img)
  if not adaspa.is_tensor(img) then fail(fname, "%s must be a tensor, got %s", what, type(img)) end
  local s = img:shape()
  if img:dtype() ~= "u8" or #s ~= 3 or s[3] ~= 3 then
    fail(fname, "%s must be a u8 tensor [H, W, 3], got %s [%s]", what, img:dtype(), table.concat(s, ", "))
  end
end

local function check_color(fname, key, c)
  if type(c) ~= "table" or #c ~= 3 then fail(fname, "opts.%s must be a table of 3 numbers 0..255", key) end
  for i = 1, 3 do
    if type(c[i]) ~= "number" or c[i] < 0 or c[i] > 255 then
      fail(fname, "opts.%s[%d] must be a number 0..255, got %s", key, i, tostring(c[i]))
    end
  end
  return c
end

-- How blocks map to pixels along the longer side n: {scale = pixels per block, k = blocks per pixel}.
local function plan(fname, n, opts)
  local max_size = opts.max_size or 2048
  if not is_int(max_size) or max_size < 1 then fail(fname, "opts.max_size must be a positive integer, got %s", tostring(max_size)) end
  if opts.scale ~= nil and opts.tile ~= nil then fail(fname, "opts.scale and opts.tile exclude each other") end
  if opts.scale ~= nil then
    if not is_int(opts.scale) or opts.scale < 1 then fail(fname, "opts.scale must be a positive integer, got %s", tostring(opts.scale)) end
    return {scale = opts.scale, k = 1}
  end
  if opts.tile ~= nil then
    if not is_int(opts.tile) or opts.tile < 1 then fail(fname, "opts.tile must be a positive integer, got %s", tostring(opts.tile)) end
    return {scale = 1, k = opts.tile}
  end
  if n > max_size then return {scale = 1, k = math.ceil(n / max_size)} end
  return {scale = math.max(1, math.min(16, math.floor(math.min(1024, max_size) / n))), k = 1}
end

local function check_reduce(fname, opts)
  local r = opts.reduce or "mean"
  if r ~= "mean" and r ~= "max" then fail(fname, "opts.reduce must be \"mean\" or \"max\", got %s", tostring(r)) end
  return r
end

-- Reduces k x k tiles of a row-major nr x nc flat list to a th x tw flat list (mean or max).
local function reduce_tiles(v, nr, nc, k, how)
  if k == 1 then return v end
  local th, tw = math.ceil(nr / k), math.ceil(nc / k)
  local acc = {}
  local init = how == "max" and -math.huge or 0
  for i = 1, th * tw do acc[i] = init end
  for r = 0, nr - 1 do
    local base, src = math.floor(r / k) * tw + 1, r * nc
    for c = 0, nc - 1 do
      local x, i = v[src + c + 1], base + math.floor(c / k)
      if how == "max" then
        if x > acc[i] or x ~= x then acc[i] = x end
      else
        acc[i] = acc[i] + x
      end
    end
  end
  if how == "mean" then
    for tr = 0, th - 1 do
      local rows = math.min(k, nr - tr * k)
      for tc = 0, tw - 1 do
        local i = tr * tw + tc + 1
        acc[i] = acc[i] / (rows * math.min(k, nc - tc * k))
      end
    end
  end
  return acc
end

-- A u8 image [th, tw, 3] from a flat list of palette indices (0-based; palette[i + 1] = {r, g, b}).
local function paint(idx, th, tw, palette)
  local pr, pg, pb = {}, {}, {}
  for i, c in ipairs(palette) do pr[i - 1], pg[i - 1], pb[i - 1] = c[1], c[2], c[3] end
  local px = {}
  local j = 1
  for i = 1, th * tw do
    local p = idx[i]
    px[j], px[j + 1], px[j + 2] = pr[p], pg[p], pb[p]
    j = j + 3
  end
  return adaspa.tensor(px, {dtype = "u8"}):reshape({th, tw, 3})
end

local function upscale(img, s)
  if s == 1 then return img end
  local sh = img:shape()
  return img:reshape({sh[1], 1, sh[2], 1, 3}):expand({sh[1], s, sh[2], s, 3}):contiguous()
    :reshape({sh[1] * s, sh[2] * s, 3})
end

-- The pixel row/column (1-based) where block b starts, under the plan.
local function pixel_of(b, p) return p.k > 1 and math.floor((b - 1) / p.k) + 1 or (b - 1) * p.scale + 1 end

-- Blends color into a 1-pixel-wide line of img (a row when dim = 1, a column when dim = 2).
local function line(img, dim, pos, color, alpha)
  local v = img:narrow(dim, pos, 1)
  local c = adaspa.tensor({color[1] * alpha + 0.5, color[2] * alpha + 0.5, color[3] * alpha + 0.5})
  v:copy(adaspa.add(adaspa.scale(v:to("f32"), 1 - alpha), c))
end

local function check_blocks(fname, opts)
  local fb = opts.frame_blocks
  if fb ~= nil then
    if type(fb) ~= "table" then fail(fname, "opts.frame_blocks must be a list of block indices, got %s", type(fb)) end
    for i, b in ipairs(fb) do
      if not is_int(b) or b < 1 then fail(fname, "opts.frame_blocks[%d] must be a positive integer, got %s", i, tostring(b)) end
    end
  end
  local tb = opts.text_block
  if tb ~= nil and (not is_int(tb) or tb < 1) then
    fail(fname, "opts.text_block must be a positive integer, got %s", tostring(tb))
  end
  local alpha = opts.line_alpha or 0.75
  if type(alpha) ~= "number" or alpha < 0 or alpha > 1 then fail(fname, "opts.line_alpha must be a number 0..1, got %s", tostring(alpha)) end
  return alpha
end

-- Frame lines, then the text line, on both axes; blocks at 1 (the edge) or past the end are skipped.
local function draw_boundaries(img, nqb, nkb, p, opts, frame_color, text_color, alpha)
  local function at(b, color)
    if b > 1 and b <= nqb then line(img, 1, pixel_of(b, p), color, alpha) end
    if b > 1 and b <= nkb then line(img, 2, pixel_of(b, p), color, alpha) end
  end
  for _, b in ipairs(opts.frame_blocks or {}) do at(b, frame_color) end
  if opts.text_block then at(opts.text_block, text_color) end
end

-- mask(layout, head [, opts]) -> u8 [H, W, 3]: one head's layout, kept blocks dark, dropped light
-- (a reduced tile's shade is the share of its blocks kept, or any kept with reduce = "max").
-- opts: scale, tile, max_size, reduce, frame_blocks, text_block, line_alpha (0.75),
-- kept, dropped, frame_color, text_color ({r, g, b}).
function pictures.mask(layout, head, opts)
  local mt = type(layout) == "userdata" and getmetatable(layout)
  if not (mt and mt.__name == "adaspa.Layout") then
    fail("mask", "layout must be an adaspa.Layout, got %s", adaspa.is_tensor(layout) and "a tensor" or type(layout))
  end
  opts = check_opts("mask", opts)
  local H, nqb, nkb = layout:heads(), layout:nqb(), layout:nkb()
  check_head("mask", head, H)
  local alpha = check_blocks("mask", opts)
  local how = check_reduce("mask", opts)
  local p = plan("mask", math.max(nqb, nkb), opts)
  local kept = check_color("mask", "kept", opts.kept or pictures.colors.kept)
  local dropped = check_color("mask", "dropped", opts.dropped or pictures.colors.dropped)
  local k = p.k
  local th, tw = math.ceil(nqb / k), math.ceil(nkb / k)
  -- kept count (or any) per tile, straight from the CSR rows
  local acc = {}
  for i = 1, th * tw do acc[i] = 0 end
  for qb = 1, nqb do
    local base = math.floor((qb - 1) / k) * tw + 1
    for _, kb in ipairs(layout:row(head, qb)) do
      local i = base + math.floor((kb - 1) / k)
      acc[i] = how == "max" and 1 or acc[i] + 1
    end
  end
  -- share kept -> palette index 0 (dropped) .. 255 (kept)
  for tr = 0, th - 1 do
    local rows = math.min(k, nqb - tr * k)
    for tc = 0, tw - 1 do
      local i = tr * tw + tc + 1
      local share = how == "max" and acc[i] or acc[i] / (rows * math.min(k, nkb - tc * k))
      acc[i] = math.floor(share * 255 + 0.5)
    end
  end
  local palette = {}
  for i = 0, 255 do
    local f = i / 255
    palette[i + 1] = {}
    for c = 1, 3 do palette[i + 1][c] = math.floor(dropped[c] + (kept[c] - dropped[c]) * f + 0.5) end
  end
  local img = upscale(paint(acc, th, tw, palette), p.scale)
  draw_boundaries(img, nqb, nkb, p, opts,
    check_color("mask", "frame_color", opts.frame_color or pictures.colors.frame),
    check_color("mask", "text_color", opts.text_color or pictures.colors.text), alpha)
  return img
end

-- mass(mass [H, nqb, nkb], head [, opts]) -> u8 [H, W, 3]: a heat map of log10(mass) over
-- opts.range ({-6, 0}), colored by pictures.colormap (dark purple = low, yellow = high);
-- NaN shows magenta. opts as for mask (reduce applies to the mass before the log), plus range.
function pictures.mass(mass, head, opts)
  if not adaspa.is_tensor(mass) then fail("mass", "mass must be a tensor [H, nqb, nkb], got %s", type(mass)) end
  local s = mass:shape()
  local dt = mass:dtype()
  if #s ~= 3 or not (dt == "f32" or dt == "bf16" or dt == "f16") then
    fail("mass", "mass must be a float tensor [H, nqb, nkb], got %s [%s]", dt, table.concat(s, ", "))
  end
  opts = check_opts("mass", opts)
  local H, nqb, nkb = s[1], s[2], s[3]
  check_head("mass", head, H)
  local alpha = check_blocks("mass", opts)
  local how = check_reduce("mass", opts)
  local p = plan("mass", math.max(nqb, nkb), opts)
  local range = opts.range or {-6, 0}
  if type(range) ~= "table" or type(range[1]) ~= "number" or type(range[2]) ~= "number" or not (range[1] < range[2]) then
    local got = type(range) == "table" and string.format("{%s, %s}", tostring(range[1]), tostring(range[2])) or type(range)
    fail("mass", "opts.range must be {lo, hi} with lo < hi (log10 of mass), got %s", got)
  end
  local lo, span = range[1], range[2] - range[1]
  local v = mass:narrow(1, head, 1):to("cpu"):to("f32"):contiguous():reshape({-1}):totable()
  v = reduce_tiles(v, nqb, nkb, p.k, how)
  local th, tw = math.ceil(nqb / p.k), math.ceil(nkb / p.k)
  local log10 = math.log10
  for i = 1, th * tw do
    local x = v[i]
    if x ~= x or x < 0 then
      v[i] = 256                                   -- NaN (or a negative mass): the nan color
    else
      local t = (log10(x) - lo) / span             -- log10(0) = -inf -> 0
      if t < 0 then t = 0 elseif t > 1 then t = 1 end
      v[i] = math.floor(t * 255 + 0.5)
    end
  end
  local palette = {}
  for i = 1, 256 do palette[i] = pictures.colormap[i] end
  palette[257] = pictures.colors.nan
  local img = upscale(paint(v, th, tw, palette), p.scale)
  draw_boundaries(img, nqb, nkb, p, opts,
    check_color("mass", "frame_color", opts.frame_color or pictures.colors.frame_mass),
    check_color("mass", "text_color", opts.text_color or pictures.colors.text), alpha)
  return img
end

-- density_grid(densities [, opts]) -> u8 image: densities[layer][head] in 0..1 (e.g. a list of
-- layout:density() results); one row per layer, one column per head, each cell opts.cell pixels
-- (default 16, smaller when the grid would pass opts.max_size) colored by pictures.colormap,
-- separated by 1-pixel grid lines (opts.grid_color). Missing heads of a shorter layer are white.
function pictures.density_grid(densities, opts)
  opts = check_opts("density_grid", opts)
  if type(densities) ~= "table" or #densities == 0 then
    fail("density_grid", "densities must be a non-empty list (layers) of per-head lists, got %s", type(densities))
  end
  local rows, cols = #densities, 0
  for l, d in ipairs(densities) do
    if type(d) ~= "table" or #d == 0 then
      fail("density_grid", "densities[%d] must be a non-empty list of per-head densities, got %s", l, type(d))
    end
    for h, x in ipairs(d) do
      if type(x) ~= "number" or not (x >= 0 and x <= 1) then
        fail("density_grid", "densities[%d][%d] must be a number in 0..1, got %s", l, h, tostring(x))
      end
    end
    cols = math.max(cols, #d)
  end
  local max_size = opts.max_size or 2048
  if not is_int(max_size) or max_size < 1 then fail("density_grid", "opts.max_size must be a positive integer, got %s", tostring(max_size)) end
  local cell = opts.cell
  if cell == nil then
    cell = math.max(1, math.min(16, math.floor((max_size - 1) / math.max(rows, cols)) - 1))
  elseif not is_int(cell) or cell < 1 then
    fail("density_grid", "opts.cell must be a positive integer, got %s", tostring(cell))
  end
  local grid = check_color("density_grid", "grid_color", opts.grid_color or pictures.colors.grid)
  local img = adaspa.empty({rows * (cell + 1) + 1, cols * (cell + 1) + 1, 3}, {dtype = "u8"})
  img:copy(adaspa.tensor({{grid}}, {dtype = "u8"}):expand(img:shape()))
  for l, d in ipairs(densities) do
    for h = 1, cols do
      local c = d[h] and pictures.color(d[h]) or pictures.colors.missing
      img:narrow(1, (l - 1) * (cell + 1) + 2, cell):narrow(2, (h - 1) * (cell + 1) + 2, cell)
        :copy(adaspa.tensor({{c}}, {dtype = "u8"}):expand({cell, cell, 3}))
    end
  end
  return img
end

-- side_by_side(images [, gap = 8]) -> one u8 [H, W, 3]: left to right, top-aligned, shorter ones
-- padded with white below, gap white pixels between.
function pictures.side_by_side(images, gap)
  gap = gap or 8
  if not is_int(gap) or gap < 0 then fail("side_by_side", "gap must be a non-negative integer, got %s", tostring(gap)) end
  if type(images) ~= "table" or #images == 0 then
    fail("side_by_side", "images must be a non-empty list of u8 [H, W, 3] tensors, got %s", type(images))
  end
  local H, W = 0, gap * (#images - 1)
  for i, img in ipairs(images) do
    check_image("side_by_side", "images[" .. i .. "]", img)
    local s = img:shape()
    H, W = math.max(H, s[1]), W + s[2]
  end
  local out = adaspa.full({H, W, 3}, 255, {dtype = "u8"})
  local x = 1
  for _, img in ipairs(images) do
    local s = img:shape()
    out:narrow(1, 1, s[1]):narrow(2, x, s[2]):copy(img)
    x = x + s[2] + gap
  end
  return out
end

-- boundaries(grid {T, Hh, Ww}, n_text_tokens [, block = 64]) -> {frame_blocks, text_block, blocks}
-- for the joint sequence [image tokens (T*Hh*Ww, t-major), text tokens]: frame_blocks[f] is the
-- 1-based block holding frame f's first token, text_block the block holding the first text token
-- (nil when there is no text), blocks the number of blocks of the sequence.
function pictures.boundaries(grid, n_text_tokens, block)
  block = block or 64
  if type(grid) ~= "table" or #grid ~= 3 then fail("boundaries", "grid must be {T, Hh, Ww}, got %s", type(grid)) end
  for i = 1, 3 do
    if not is_int(grid[i]) or grid[i] < 1 then fail("boundaries", "grid[%d] must be a positive integer, got %s", i, tostring(grid[i])) end
  end
  if not is_int(n_text_tokens) or n_text_tokens < 0 then
    fail("boundaries", "n_text_tokens must be a non-negative integer, got %s", tostring(n_text_tokens))
  end
  if not is_int(block) or block < 1 then fail("boundaries", "block must be a positive integer, got %s", tostring(block)) end
  local per_frame = grid[2] * grid[3]
  local n_img = grid[1] * per_frame
  local frames = {}
  for f = 1, grid[1] do frames[f] = math.floor((f - 1) * per_frame / block) + 1 end
  return {
    frame_blocks = frames,
    text_block = n_text_tokens > 0 and math.floor(n_img / block) + 1 or nil,
    blocks = math.ceil((n_img + n_text_tokens) / block),
  }
end

return pictures
