-- adaspa.jobs.compare_report: the compare job's report writers (adaspa.jobs.compare runs the
-- policies; this writes what it measured). Under the output folder:
--   table.txt (aligned, with the run's header and each run's description), table.md,
--   results.csv, results.json; chart.png (quality against speed); gallery.png (the masks each
--   run used at the gallery step); previews.png (every run's preview frames, output.previews).
-- report.write(out, s) writes them all; the formatters (format_table, format_markdown,
-- format_csv, chart_spec, gallery_image) serve the specs and other tools too.
local adaspa = require "adaspa"
local preview = require "adaspa.preview"
local chart = require "adaspa.chart"
local font = require "adaspa.font"
local json = require "adaspa.json"

local report = {}

-- The chart's axes: a row's field and its label.
report.metrics = {
  x = {attention_speedup = "attention speedup vs dense (x)", speedup = "sampling speedup vs dense (x)",
       flops = "attention FLOPs, % of dense (planning included)"},
  y = {latent_psnr = "latent PSNR vs dense (dB)", preview_psnr = "preview PSNR vs dense (dB)",
       latent_ssim = "latent SSIM vs dense", preview_ssim = "preview SSIM vs dense"},
}

-- Pastes a u8 image into canvas tensor img at (row y, column x), 1-based, clipped.
local function paste(img, part, y, x)
  local s, p = img:shape(), part:shape()
  local h, w = math.min(p[1], s[1] - y + 1), math.min(p[2], s[2] - x + 1)
  if h < 1 or w < 1 then return end
  img:narrow(1, y, h):narrow(2, x, w):copy(part:narrow(1, 1, h):narrow(2, 1, w))
end

local function text_img(s, scale, color) return font.render(s, {scale = scale, fg = color or {20, 20, 20}}) end

local function caption(cell)
  return cell.mode .. (cell.density and string.format(", %.1f%% kept", 100 * cell.density) or "")
end

-- rows = {{label, cells = {[key] = {img, mode, density}}}}, columns = {{key, title}}. Returns the
-- image and where each mask lies: boxes[i] = {row, key, y, x, h, w} (1-based pixels).
function report.gallery_image(title, rows, columns)
  local gap, ts = 12, 2
  local cw, ch = 16, 16
  for _, r in ipairs(rows) do
    for _, c in ipairs(columns) do
      local cell = r.cells[c.key]
      if cell then
        local s = cell.img:shape()
        cw, ch = math.max(cw, s[2]), math.max(ch, s[1])
      end
    end
  end
  -- column titles at scale 2 where they fit over a mask, else 1; captions fit in a column
  local mask_w = cw
  for _, r in ipairs(rows) do
    for _, c in ipairs(columns) do
      local cell = r.cells[c.key]
      if cell then cw = math.max(cw, font.width(caption(cell), 1)) end
    end
  end
  for _, c in ipairs(columns) do
    c.scale = font.width(c.title, ts) <= mask_w and ts or 1
    cw = math.max(cw, font.width(c.title, c.scale))
  end
  local th2, th1 = font.height(ts), font.height(1)
  local title_h = th1 + gap
  local head_h = th2 + 8
  local row_h = th2 + 6 + ch + 4 + th1 + gap
  local W = math.max(gap + #columns * (cw + gap), font.width(title, 1) + 2 * gap)
  for _, r in ipairs(rows) do W = math.max(W, font.width(r.label, ts) + 2 * gap) end
  local H = gap + title_h + head_h + #rows * row_h
  local img = adaspa.full({H, W, 3}, 255, {dtype = "u8"})
  paste(img, text_img(title, 1), gap, gap)
  local y = gap + title_h
  for j, c in ipairs(columns) do paste(img, text_img(c.title, c.scale), y, gap + (j - 1) * (cw + gap) + 1) end
  y = y + head_h
  local boxes = {}
  for i, r in ipairs(rows) do
    paste(img, text_img(r.label, ts), y, gap)
    local my = y + th2 + 6
    for j, c in ipairs(columns) do
      local x = gap + (j - 1) * (cw + gap) + 1
      local cell = r.cells[c.key]
      if cell then
        paste(img, cell.img, my, x)
        local s = cell.img:shape()
        boxes[#boxes + 1] = {row = i, key = c.key, y = my, x = x, h = s[1], w = s[2]}
        paste(img, text_img(caption(cell), 1, {90, 90, 90}), my + cell.img:shape()[1] + 3, x)
      else
        paste(img, text_img("no mask", 1, {160, 0, 0}), my, x)
      end
    end
    y = y + row_h
  end
  return img, boxes
end

-- Every run's preview frames side by side, one row per run, labelled. A row with decoded frames
-- (r.frames, a model's decoder) shows every fourth of them (one per latent frame).
function report.previews_image(rows, upscale)
  local gap = 8
  local strips = {}
  local W, H = 0, gap
  for i, r in ipairs(rows) do
    local frames
    if r.frames then
      frames = {}
      for j = 1, #r.frames, 4 do frames[#frames + 1] = r.frames[j] end
    else
      frames = preview.frames(r.x, upscale)
    end
    local strip = preview.contact_sheet(frames, #frames)
    local label = text_img(r.label, 2)
    strips[i] = {strip = strip, label = label}
    W = math.max(W, strip:shape()[2], label:shape()[2] + 2 * gap)
    H = H + label:shape()[1] + 2 + strip:shape()[1] + gap
  end
  local img = adaspa.full({H, W, 3}, 255, {dtype = "u8"})
  local y = gap
  for _, s in ipairs(strips) do
    paste(img, s.label, y, gap)
    y = y + s.label:shape()[1] + 2
    paste(img, s.strip, y, 1)
    y = y + s.strip:shape()[1] + gap
  end
  return img
end

-- ---- reports ---------------------------------------------------------------------------------------

function report.f_num(v, fmt)
  if v == nil then return "-" end
  if v == math.huge then return "inf" end
  if v ~= v then return "nan" end
  return string.format(fmt, v)
end

local function f_sec(v) return report.f_num(v, v and v < 1 and "%.3f" or "%.2f") end

report.columns = {
  {"run", function(r) return r.label end, "l"},
  {"FLOPs", function(r) return r.error and "FAILED" or report.f_num(100 * r.flops_fraction, "%.1f%%") end},
  {"plan", function(r) return r.error and "" or report.f_num(r.plan_fraction > 0 and 100 * r.plan_fraction or nil, "%.1f%%") end},
  {"attn s", function(r) return r.error and "" or f_sec(r.attention_seconds) end},
  {"attn x", function(r) return r.error and "" or report.f_num(r.attention_speedup, "%.2f") end},
  {"total s", function(r) return r.error and "" or f_sec(r.sampling_seconds) end},
  {"total x", function(r) return r.error and "" or report.f_num(r.speedup, "%.2f") end},
  {"density", function(r) return r.error and "" or report.f_num(r.density, "%.3f") end},
  {"recall", function(r) return r.error and "" or report.f_num(r.recall, "%.3f") end},
  {"lat PSNR", function(r) return r.error and "" or report.f_num(r.latent_psnr, "%.2f") end},
  {"lat SSIM", function(r) return r.error and "" or report.f_num(r.latent_ssim, "%.4f") end},
  {"prev PSNR", function(r) return r.error and "" or report.f_num(r.preview_psnr, "%.2f") end},
  {"prev SSIM", function(r) return r.error and "" or report.f_num(r.preview_ssim, "%.4f") end},
}

local function columns_for(rows)
  local cols = {}
  for _, c in ipairs(report.columns) do cols[#cols + 1] = c end
  for _, r in ipairs(rows) do
    if r.attention_error then
      cols[#cols + 1] = {"attn err", function(x) return x.error and "" or report.f_num(x.attention_error, "%.4f") end}
      break
    end
  end
  return cols
end

-- Aligned text table (first column left, the rest right).
function report.format_table(rows)
  local cols = columns_for(rows)
  local cells, widths = {}, {}
  for j, c in ipairs(cols) do widths[j] = #c[1] end
  for i, r in ipairs(rows) do
    cells[i] = {}
    for j, c in ipairs(cols) do
      cells[i][j] = c[2](r)
      widths[j] = math.max(widths[j], #cells[i][j])
    end
  end
  local function line(vals)
    local parts = {}
    for j, v in ipairs(vals) do
      parts[j] = (cols[j][3] == "l") and (v .. string.rep(" ", widths[j] - #v)) or (string.rep(" ", widths[j] - #v) .. v)
    end
    return (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  local head = {}
  for j, c in ipairs(cols) do head[j] = c[1] end
  local out = {line(head)}
  for i = 1, #rows do out[#out + 1] = line(cells[i]) end
  return table.concat(out, "\n")
end

function report.format_markdown(rows)
  local cols = columns_for(rows)
  local head, sep = {}, {}
  for j, c in ipairs(cols) do head[j], sep[j] = c[1], "---" end
  local out = {"| " .. table.concat(head, " | ") .. " |", "| " .. table.concat(sep, " | ") .. " |"}
  for _, r in ipairs(rows) do
    local v = {}
    for j, c in ipairs(cols) do v[j] = c[2](r) end
    out[#out + 1] = "| " .. table.concat(v, " | ") .. " |"
  end
  return table.concat(out, "\n")
end

report.csv_fields = {"label", "policy", "flops_fraction", "plan_fraction", "attention_seconds", "attention_speedup",
  "sampling_seconds", "speedup", "attention_seconds_measured", "sampling_seconds_measured", "plan_seconds",
  "recall_seconds", "density",
  "recall", "latent_psnr", "latent_ssim", "latent_rel_l2", "preview_psnr", "preview_ssim", "attention_error", "error"}

local function csv_cell(v)
  if v == nil then return "" end
  if type(v) == "number" then
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    if v ~= v then return "nan" end
    return string.format("%.10g", v)
  end
  local s = tostring(v)
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

function report.format_csv(rows)
  local out = {table.concat(report.csv_fields, ",")}
  for _, r in ipairs(rows) do
    local v = {}
    for j, k in ipairs(report.csv_fields) do v[j] = csv_cell(r[k]) end
    out[#out + 1] = table.concat(v, ",")
  end
  return table.concat(out, "\n")
end

-- The chart's series: the reference, then one per policy entry (its sweep as a line).
function report.chart_spec(rows, runs, cfg, ref_label)
  local xk, yk = cfg.chart.x, cfg.chart.y
  local function xval(r) return xk == "flops" and 100 * r.flops_fraction or r[xk] end
  local series, by = {}, {}
  series[1] = {name = ref_label, points = {{x = xval(rows[1]), y = rows[1][yk]}}}
  for i, run in ipairs(runs) do
    local r = rows[i + 1]
    if not r.error and xval(r) == xval(r) and xval(r) ~= math.huge then
      local s = by[run.series]
      if not s then
        s = {name = run.series, line = true, points = {}}
        by[run.series] = s
        series[#series + 1] = s
      end
      s.points[#s.points + 1] = {x = xval(r), y = r[yk], label = run.point_label}
    end
  end
  for k = 2, #series do
    local sr = series[k]
    if #sr.points == 1 and not sr.points[1].label then sr.points[1].label = sr.name end
  end
  if #series > #chart.palette then
    for _, s in ipairs(series) do
      for _, p in ipairs(s.points) do
        if p.label ~= s.name then p.label = p.label and (s.name .. " " .. p.label) or s.name end
      end
    end
  end
  local points = 0
  for _, s in ipairs(series) do points = points + #s.points end
  return {width = cfg.chart.width, height = cfg.chart.height, series = series, label_scale = points <= 16 and 2 or 1,
          title = string.format("%s against %s", report.metrics.y[yk]:gsub(" vs dense.*", ""), xk == "flops" and "attention FLOPs" or "speed"),
          x_label = report.metrics.x[xk], y_label = report.metrics.y[yk]}
end

function report.command_line(job)
  if type(arg) ~= "table" then return "adaspa recipe " .. job.recipe end
  local lo = 0
  while arg[lo - 1] ~= nil do lo = lo - 1 end
  local parts = {}
  for i = lo, #arg do
    if arg[i] ~= nil then
      local a = arg[i]
      if i == lo then a = a:match("([^/]+)$") or a end
      if a:find("[%s{}'\"]") then a = "'" .. a .. "'" end
      parts[#parts + 1] = a
    end
  end
  return table.concat(parts, " ")
end

-- Writes every report of a compare run into out (adaspa.recipe's output folder handle). s = {cfg,
-- job, prep (video.prepare's), rows (the reference's row first), runs (compare.plan's, with their
-- gallery cells), ref_label, ref_row, ref_gallery, gallery_step, xs ({label, x} per run with a
-- latent), t_start}. Returns the results table (results.json), the table's lines, the files.
function report.write(out, s)
  local cfg, job, prep, rows, runs, ref_label = s.cfg, s.job, s.prep, s.rows, s.runs, s.ref_label
  local ref_row, ref_gallery, gallery_step, xs, t_start = s.ref_row, s.ref_gallery, s.gallery_step, s.xs, s.t_start
  local dir = out:path()
  local files = {table = dir .. "/table.txt", markdown = dir .. "/table.md", csv = dir .. "/results.csv",
                 json = dir .. "/results.json"}
  local created = os.date("%Y-%m-%d %H:%M:%S")
  local cmd = report.command_line(job)
  local device_line = prep.device == "cpu" and string.format("cpu, %d threads", adaspa.threads())
    or (function()
      local d = adaspa.cuda.devices()[1]
      return d and string.format("%s (%s)", prep.device, d.name) or prep.device
    end)()
  local head = {
    string.format("adaspa %s compare: %s (%s)", adaspa.version, job.recipe, created),
    string.format("command    %s", cmd),
    string.format("model      %s, %s on %s", require("adaspa.models").describe(prep.entry, prep.mcfg), prep.dtype, device_line),
    string.format("weights    %s", prep.weights_source),
    string.format("video      %dx%d, %d frames; latent [%s]; %d tokens", cfg.video.width, cfg.video.height,
      cfg.video.frames, table.concat(prep.latent_shape, ", "), prep.n_tokens),
    string.format("sampler    %s, %d steps, shift %g, %s, seed %d (every run)",
      require("adaspa.sampler").name(cfg.sampler.renoise), cfg.sampler.steps,
      cfg.sampler.shift, require("adaspa.jobs.pipeline").guidance_text(prep.guidance), cfg.sampler.seed),
    "timing     per run: median step (and attention) time per step mode x steps in that mode, summed (time",
    "           spent measuring recall against the exact mass is left out: it is measurement, not the method);",
    "           x = dense reference / run; FLOPs: attention FLOPs done (planning included) / dense",
    "quality    PSNR/SSIM against the dense reference of the same seed: latents, and " .. (prep.entry.decode and
      "the decoded video frames (the prev columns; RGB 0..255)" or "preview frames (RGB 0..255)"),
  }
  if not cfg.model.weights then
    head[#head + 1] = "           (synthetic weights: timings and densities are real; quality numbers describe these weights)"
  end
  local tbl = report.format_table(rows)
  local lines = {}
  for _, l in ipairs(head) do lines[#lines + 1] = l end
  lines[#lines + 1] = ""
  lines[#lines + 1] = tbl
  lines[#lines + 1] = ""
  lines[#lines + 1] = "runs"
  local lw = 0
  for _, r in ipairs(rows) do lw = math.max(lw, #r.label) end
  for _, r in ipairs(rows) do
    lines[#lines + 1] = string.format("  %-" .. lw .. "s  %s", r.label, r.error and ("FAILED: " .. r.error) or r.describe)
  end
  out:write("table.txt", table.concat(lines, "\n") .. "\n")
  out:write("table.md", report.format_markdown(rows) .. "\n")
  out:write("results.csv", report.format_csv(rows) .. "\n")

  -- chart
  local spec = report.chart_spec(rows, runs, cfg, ref_label)
  local chart_img = chart.draw(spec)
  files.chart = dir .. "/chart.png"
  adaspa.png.write(files.chart, chart_img)

  -- gallery
  local gallery
  if #cfg.gallery.layers > 0 then
    local columns = {}
    for _, l in ipairs(cfg.gallery.layers) do
      for _, h in ipairs(cfg.gallery.heads) do columns[#columns + 1] = {key = l .. ":" .. h, title = string.format("layer %d, head %d", l, h)} end
    end
    local grows = {}
    for _, r in ipairs(runs) do
      if r.cells and next(r.cells) then grows[#grows + 1] = {label = r.label, cells = r.cells} end
    end
    if #grows == 0 then grows[1] = {label = ref_label, cells = ref_gallery} end
    local g, boxes = report.gallery_image(string.format("masks at step %d (steps 0..%d) - dark: kept blocks, blue lines: frame starts, red line: text",
      gallery_step, cfg.sampler.steps - 1), grows, columns)
    files.gallery = dir .. "/gallery.png"
    adaspa.png.write(files.gallery, g)
    gallery = {step = gallery_step, cells = {}}
    for _, b in ipairs(boxes) do
      local r = grows[b.row]
      local l, h = b.key:match("^(%d+):(%d+)$")
      local cell = r.cells[b.key]
      gallery.cells[#gallery.cells + 1] = {run = r.label, layer = tonumber(l), head = tonumber(h), y = b.y, x = b.x,
                                           h = b.h, w = b.w, mode = cell.mode, density = cell.density}
    end
  end
  if cfg.output.previews then
    files.previews = dir .. "/previews.png"
    adaspa.png.write(files.previews, report.previews_image(xs, cfg.output.upscale))
  end

  local report_t = {
    adaspa = adaspa.version, recipe = job.recipe, command = cmd, created = created, device = prep.device,
    device_name = device_line, dtype = prep.dtype, threads = adaspa.threads(),
    guidance = prep.guidance,
    model = {name = prep.entry.name, preset = prep.mcfg.preset, hidden = prep.mcfg.hidden, heads = prep.mcfg.heads, head_dim = prep.mcfg.head_dim,
             layers = prep.mcfg.layers, weights = prep.weights_source},
    video = cfg.video, latent_shape = prep.latent_shape, tokens = prep.n_tokens, text = prep.cond.source,
    sampler = cfg.sampler, sweep = cfg.sweep, attention = cfg.attention, gallery_step = gallery_step,
    chart = {x = cfg.chart.x, y = cfg.chart.y}, notes = prep.notes,
    timing_method = "medians per step mode x steps per mode; *_measured: raw totals",
    reference = ref_row, runs = {unpack(rows, 2)}, outputs = files, gallery = gallery,
    total_seconds = adaspa.now() - t_start,
  }
  out:write("results.json", json.encode(report_t, "  ") .. "\n")
  return report_t, lines, files
end

return report
