-- adaspa.jobs.compare: several attention policies on one model, one text and one seed, against a
-- single dense reference run. Writes under output.dir:
--   table.txt (aligned), table.md, results.csv, results.json: per run the attention FLOPs against
--     dense (planning included), attention and sampling time and speedups, mean density and
--     recall, PSNR/SSIM of latents and of preview frames against dense;
--   chart.png: quality (chart.y) against speed (chart.x), one point per run, one line per policy
--     entry across its sweep;
--   gallery.png: the masks each run used at gallery.step for gallery.layers x gallery.heads;
--   previews.png: every run's preview frames, one row per run (output.previews).
-- Policies: a list of entries, each a built-in name ("adaspa"), a table {"adaspa", sparsity = 0.9,
-- label = "...", ...options}, or a policy object defined in the recipe (alone or as entry[1] with a
-- label; sweep = false keeps an entry out of the sweep). sweep = {option = {values}}: each
-- built-in entry that has the option and does not set it runs once per value (several options:
-- the grid). attention = {option = value}: given to every
-- built-in entry that has the option (below the entry's own options and the sweep).
local adaspa = require "adaspa"
local video = require "adaspa.jobs.video"
local policies = require "adaspa.policy"
local dense_policy = require "adaspa.policy.dense"
local sampler = require "adaspa.sampler"
local preview = require "adaspa.preview"
local pictures = require "adaspa.pictures"
local chart = require "adaspa.chart"
local font = require "adaspa.font"
local json = require "adaspa.json"
local recipe = require "adaspa.recipe"

local compare = {}

-- ---- entries ---------------------------------------------------------------------------------------

local function fmt_value(v)
  if type(v) == "number" then return string.format("%g", v) end
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = fmt_value(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return tostring(v)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

-- Command-line paths give string keys ("policies.2.sparsity=0.9"): make them numbers, merging
-- into what the recipe has there (a name becomes {name, sparsity = 0.9}).
local function numeric_keys(t)
  local moves = {}
  for k, v in pairs(t) do
    if type(k) == "string" and k:match("^%d+$") then moves[#moves + 1] = {k, v} end
  end
  for _, m in ipairs(moves) do
    local i, v = tonumber(m[1]), m[2]
    t[m[1]] = nil
    local old = t[i]
    if type(v) == "table" and type(old) == "table" then
      for k, x in pairs(v) do old[k] = x end
    else
      if type(v) == "table" and type(old) == "string" and v[1] == nil then v[1] = old end
      t[i] = v
    end
  end
  return t
end

local function module_of(name)
  local ok, m = pcall(policies.module, name)
  if not ok then return nil, tostring(m):gsub("^[^\n]-%.lua:%d+: ", "") end
  return m
end

local function has_option(m, k)
  for _, o in ipairs(m.options or {}) do if o == k then return true end end
  return false
end

-- The entries of cfg.policies as {index, name, module, object, opts, label}, or nil, a message.
function compare.entries(list)
  numeric_keys(list)
  local n = 0
  for k in pairs(list) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return nil, string.format("key %s is not an entry number", tostring(k)) end
    n = math.max(n, k)
  end
  if n == 0 then return nil, "must list at least one policy" end
  local out = {}
  for i = 1, n do
    local e = list[i]
    local where = string.format("entry %d (%s)", i, recipe.show(e))
    local ent = {index = i, opts = {}}
    if e == nil then return nil, string.format("entry %d is missing", i) end
    if type(e) == "string" then
      ent.name = e
    elseif type(e) == "table" and policies.is_policy(e) then
      ent.object, ent.label = e, e.label
      ent.name = tostring(e.name or "recipe policy")
    elseif type(e) == "table" then
      numeric_keys(e)
      local head = e[1]
      if type(head) == "string" then
        ent.name = head
      elseif type(head) == "table" and policies.is_policy(head) then
        ent.object, ent.name = head, tostring(head.name or "recipe policy")
      else
        return nil, string.format("%s: the first item must be a policy name (%s) or a policy object, got %s", where,
          table.concat(policies.names, ", "), head == nil and "nothing" or recipe.show(head))
      end
      for k, v in pairs(e) do
        if k == "label" then
          if type(v) ~= "string" then return nil, string.format("%s: label must be a string, got %s", where, recipe.show(v)) end
          ent.label = v
        elseif k == "sweep" then
          if type(v) ~= "boolean" then return nil, string.format("%s: sweep must be true or false, got %s", where, recipe.show(v)) end
          ent.no_sweep = v == false
        elseif k ~= 1 then
          if type(k) ~= "string" then return nil, string.format("%s: item %s: options are named (option = value)", where, tostring(k)) end
          ent.opts[k] = v
        end
      end
    else
      return nil, string.format("%s: an entry is a policy name, a table {name, option = value, label = ...} or a policy object", where)
    end
    if ent.object then
      if next(ent.opts) then
        return nil, string.format("%s: a policy object takes no options (%s); set them on the object", where,
          table.concat(sorted_keys(ent.opts), ", "))
      end
    else
      local known = false
      for _, nm in ipairs(policies.names) do if nm == ent.name then known = true end end
      if not known then
        return nil, string.format("%s: unknown policy %s (known: %s, or a policy object defined in the recipe)", where,
          recipe.show(ent.name), table.concat(policies.names, ", "))
      end
      local m, why = module_of(ent.name)
      if not m then return nil, string.format("%s: %s", where, why) end
      ent.module = m
      for _, k in ipairs(sorted_keys(ent.opts)) do
        if not has_option(m, k) then
          return nil, string.format("%s: policy %s has no option %s (options: %s)", where, ent.name, k,
            #(m.options or {}) > 0 and table.concat(m.options, ", ") or "none")
        end
      end
    end
    out[i] = ent
  end
  return out
end

-- Lists every option some listed built-in policy has.
local function all_options(entries)
  local seen, list = {}, {}
  for _, e in ipairs(entries) do
    for _, o in ipairs(e.module and e.module.options or {}) do
      if not seen[o] then seen[o] = true; list[#list + 1] = o end
    end
  end
  table.sort(list)
  return list
end

local function check_options_table(t, entries, what)
  for _, k in ipairs(sorted_keys(t)) do
    if type(k) ~= "string" then return string.format("%s keys are option names, got %s", what, tostring(k)) end
    local any = false
    -- an option of some built-in policy that no listed one has applies to nothing (the recipe's
    -- default sweep over sparsity with policies=dense,estimate); one that no policy has is a typo
    for _, name in ipairs(policies.names) do
      local m = module_of(name)
      if m and has_option(m, k) then any = true end
    end
    if not any then
      local opts = all_options(entries)
      return string.format("no policy has the option %s (the listed ones have: %s)", k, #opts > 0 and table.concat(opts, ", ") or "none")
    end
  end
end

-- A value of a policy option: a single value where the default is a list becomes a list
-- (search = 10 means {10}, as in the video recipe).
local function option_value(m, k, v)
  if type(v) ~= "table" and ((m.defaults and type(m.defaults[k]) == "table") or (m.list_options and m.list_options[k])) then
    return {v}
  end
  return v
end

-- The runs of a configuration: {label, series, point_label, name, entry, opts, object}. The dense
-- entries are the reference (not in the list); returns runs, the reference label.
function compare.plan(cfg)
  local entries = assert(compare.entries(cfg.policies))
  local sweep = cfg.sweep or {}
  local sweep_keys = sorted_keys(sweep)
  local runs, ref_label = {}, nil
  for _, e in ipairs(entries) do
    if e.name == "dense" and not e.object then
      ref_label = ref_label or e.label
    else
      local base = e.label
      if not base then
        local parts = {e.name}
        for _, k in ipairs(sorted_keys(e.opts)) do parts[#parts + 1] = k .. "=" .. fmt_value(e.opts[k]) end
        base = table.concat(parts, " ")
      end
      -- the grid of swept options this entry has and does not set itself
      local combos = {{}}
      if e.module and not e.no_sweep then
        for _, k in ipairs(sweep_keys) do
          if has_option(e.module, k) and e.opts[k] == nil then
            local nxt = {}
            for _, c in ipairs(combos) do
              for _, v in ipairs(sweep[k]) do
                local c2 = {}
                for i, kv in ipairs(c) do c2[i] = kv end
                c2[#c2 + 1] = {k, v}
                nxt[#nxt + 1] = c2
              end
            end
            combos = nxt
          end
        end
      end
      for _, c in ipairs(combos) do
        local opts = {}
        if e.module then
          for k, v in pairs(cfg.attention or {}) do if has_option(e.module, k) then opts[k] = option_value(e.module, k, v) end end
          for k, v in pairs(e.opts) do opts[k] = option_value(e.module, k, v) end
          -- the table has a recall column: policies that can measure it do, unless told not to
          if has_option(e.module, "exact_recall") and opts.exact_recall == nil then opts.exact_recall = true end
        end
        local tags = {}
        for _, kv in ipairs(c) do
          opts[kv[1]] = option_value(e.module, kv[1], kv[2])
          tags[#tags + 1] = kv[1] .. "=" .. fmt_value(kv[2])
        end
        local vals = {}
        for _, kv in ipairs(c) do vals[#vals + 1] = fmt_value(kv[2]) end
        runs[#runs + 1] = {label = #tags > 0 and (base .. " " .. table.concat(tags, " ")) or base, series = base,
                           point_label = #vals > 0 and table.concat(vals, ",") or nil, name = e.name, entry = e.index,
                           module = e.module, opts = opts, object = e.object, swept = c}
      end
    end
  end
  -- unique labels
  local seen = {}
  for _, r in ipairs(runs) do
    if seen[r.label] then
      seen[r.label] = seen[r.label] + 1
      r.label = r.label .. " #" .. seen[r.label]
    else
      seen[r.label] = 1
    end
  end
  return runs, ref_label or "dense (reference)"
end

-- ---- schema ----------------------------------------------------------------------------------------

local C = require "adaspa.check"

compare.metrics = {
  x = {attention_speedup = "attention speedup vs dense (x)", speedup = "sampling speedup vs dense (x)",
       flops = "attention FLOPs, % of dense (planning included)"},
  y = {latent_psnr = "latent PSNR vs dense (dB)", preview_psnr = "preview PSNR vs dense (dB)",
       latent_ssim = "latent SSIM vs dense", preview_ssim = "preview SSIM vs dense"},
}

local function one_of(set)
  return function(v)
    if set[v] == nil then return "one of: " .. table.concat(sorted_keys(set), ", ") end
  end
end

compare.schema = {
  model = video.schema.model,
  video = video.schema.video,
  text = video.schema.text,
  sampler = video.schema.sampler,
  policies = {type = "list", default = {"dense", "adaspa"}, doc = "policy entries: names, {name, option = value, label = ...}, policy objects",
    check = function(v)
      local _, err = compare.entries(v)
      return err
    end},
  sweep = {type = "table", default = {}, doc = "option = {values}: every entry that has the option runs once per value",
    check = function(v, root)
      local entries = compare.entries(root.policies)
      if not entries then return end -- reported by the policies field
      for _, k in ipairs(sorted_keys(v)) do
        local list = v[k]
        if type(list) ~= "table" then list = {list}; v[k] = list end
        numeric_keys(list)
        if #list == 0 then return string.format("%s: needs at least one value", tostring(k)) end
        for i in pairs(list) do
          if type(i) ~= "number" or i > #list then return string.format("%s: must be a list of values", tostring(k)) end
        end
      end
      return check_options_table(v, entries, "sweep")
    end},
  attention = {type = "table", default = {}, doc = "options given to every listed built-in policy that has them",
    check = function(v, root)
      local entries = compare.entries(root.policies)
      if not entries then return end
      return check_options_table(v, entries, "attention")
    end},
  gallery = {
    layers = {type = "list", default = {1}, doc = "layers (1-based) shown in the gallery", check = function(v)
      for i, l in ipairs(v) do
        if type(l) ~= "number" or l % 1 ~= 0 or l < 1 then return string.format("entry %d is not a layer number (1, 2, ...)", i) end
      end
    end},
    heads = {type = "list", default = {1}, doc = "heads (1-based) shown in the gallery", check = function(v)
      for i, h in ipairs(v) do
        if type(h) ~= "number" or h % 1 ~= 0 or h < 1 then return string.format("entry %d is not a head number (1, 2, ...)", i) end
      end
      if #v == 0 then return "must list at least one head" end
    end},
    step = {type = "integer", doc = "the step (0-based) whose masks are shown; default the last", check = function(v, root)
      if not C.finite(v) then return "must be a finite step number" end
      if v < 0 or v >= root.sampler.steps then
        return string.format("must be a step of the schedule (0..%d)", root.sampler.steps - 1)
      end
    end},
    size = C.integer{default = 208, min = 16, max = 4096, doc = "pixels of each mask picture in the gallery"},
  },
  chart = {
    x = {type = "string", default = "attention_speedup", check = one_of(compare.metrics.x),
         doc = "the chart's x axis: attention_speedup, speedup or flops"},
    y = {type = "string", default = "latent_psnr", check = one_of(compare.metrics.y),
         doc = "the chart's y axis: latent_psnr, preview_psnr, latent_ssim or preview_ssim"},
    width = C.integer{default = 900, min = 200, max = 8192, doc = "chart pixels"},
    height = C.integer{default = 560, min = 160, max = 8192, doc = "chart pixels"},
  },
  output = {
    dir = C.dir{doc = "the output folder (default out/<recipe>-<time>)"},
    quiet = C.boolean{default = false, doc = "no progress lines"},
    step_lines = {type = "boolean", default = false, doc = "a progress line per step of every run"},
    previews = {type = "boolean", default = true, doc = "previews.png: every run's preview frames"},
    upscale = C.integer{default = 2, min = 1, max = 64, doc = "preview pixels per latent pixel"},
    error_steps = C.list{default = {}, item = "integer", min = 0, max = 100000,
      doc = "steps (0-based) whose per-layer attention error against dense is reported", extra = function(v, root)
        local n = root.sampler.steps
        for i, s in ipairs(v) do
          if C.finite(n) and s >= n then return string.format("step %d (entry %d) is beyond the schedule (steps 0..%d)", s, i, n - 1) end
        end
      end},
  },
}

-- ---- measuring -------------------------------------------------------------------------------------

-- The schedule's time from medians per step mode (robust to a busy machine): sum over modes of
-- steps x median; returns step seconds, attention seconds.
local function estimate(med)
  local t, a = 0, 0
  for _, m in pairs(med) do t, a = t + m.steps * m.step, a + m.steps * m.attention end
  return t, a
end

local function mean_of(records, get)
  local s, n = 0, 0
  for _, r in ipairs(records) do
    local v = get(r)
    if v then s, n = s + v, n + 1 end
  end
  return n > 0 and s / n or nil
end

-- The row of a run against the reference.
local function summarize(label, res, ref, q, ref_times)
  local med = video.median_steps(res.steps)
  local t_est, a_est = estimate(med)
  local modes = {}
  for m, b in pairs(res.by_mode) do modes[m] = b.steps end
  local row = {
    label = label,
    flops_fraction = res.flops / res.dense_flops,
    plan_fraction = res.plan_flops / res.dense_flops,
    attention_seconds = a_est, sampling_seconds = t_est,
    attention_seconds_measured = res.attention_seconds, sampling_seconds_measured = res.sampling_seconds,
    plan_seconds = res.plan_seconds,
    attention_speedup = ref_times and ref_times.attention / a_est or 1,
    speedup = ref_times and ref_times.sampling / t_est or 1,
    density = mean_of(res.steps, function(r) return r.density and r.density.mean end),
    recall = mean_of(res.steps, function(r) return r.recall end),
    latent_psnr = q.latents.psnr, latent_ssim = q.latents.ssim, latent_rel_l2 = q.latents.rel_l2,
    preview_psnr = q.previews.psnr, preview_ssim = q.previews.ssim,
    steps_by_mode = modes,
  }
  if #q.attention_error > 0 then
    local s = 0
    for _, e in ipairs(q.attention_error) do s = s + e.mean end
    row.attention_error = s / #q.attention_error
    row.attention_error_by_step = q.attention_error
  end
  return row
end

-- ---- the gallery -----------------------------------------------------------------------------------

-- An on_attention hook that draws the masks of the wanted layers and heads at the gallery step
-- into store["layer:head"] = {img, mode, density}.
local function gallery_hook(cfg, step, store, block_of)
  local want = {}
  for _, l in ipairs(cfg.gallery.layers) do want[l] = true end
  return function(ctx, info, mode, out)
    if ctx.step ~= step or not want[info.layer] then return end
    local layout, own
    if mode == "dense" then
      local B = block_of()
      local S = out:shape()[1]
      layout = adaspa.layout.full(out:shape()[2], math.ceil(S / B), math.ceil(info.kv_valid / B), B)
      own = true
    else
      layout = ctx.cache:layout(info.layer)
    end
    if not layout then return end
    local b = pictures.boundaries(info.grid, info.n_txt, layout:block())
    local d = layout:density()
    for _, h in ipairs(cfg.gallery.heads) do
      if h <= layout:heads() then
        store[info.layer .. ":" .. h] = {
          img = pictures.mask(layout, h, {max_size = cfg.gallery.size, frame_blocks = b.frame_blocks, text_block = b.text_block}),
          mode = mode, density = d[h]}
      end
    end
    if own then layout:free() end
  end
end

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
function compare.gallery_image(title, rows, columns)
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

-- Every run's preview frames side by side, one row per run, labelled.
local function previews_image(rows, upscale)
  local gap = 8
  local strips = {}
  local W, H = 0, gap
  for i, r in ipairs(rows) do
    local frames = preview.frames(r.x, upscale)
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

local function f_num(v, fmt)
  if v == nil then return "-" end
  if v == math.huge then return "inf" end
  if v ~= v then return "nan" end
  return string.format(fmt, v)
end

local function f_sec(v) return f_num(v, v and v < 1 and "%.3f" or "%.2f") end

compare.columns = {
  {"run", function(r) return r.label end, "l"},
  {"FLOPs", function(r) return r.error and "FAILED" or f_num(100 * r.flops_fraction, "%.1f%%") end},
  {"plan", function(r) return r.error and "" or f_num(r.plan_fraction > 0 and 100 * r.plan_fraction or nil, "%.1f%%") end},
  {"attn s", function(r) return r.error and "" or f_sec(r.attention_seconds) end},
  {"attn x", function(r) return r.error and "" or f_num(r.attention_speedup, "%.2f") end},
  {"total s", function(r) return r.error and "" or f_sec(r.sampling_seconds) end},
  {"total x", function(r) return r.error and "" or f_num(r.speedup, "%.2f") end},
  {"density", function(r) return r.error and "" or f_num(r.density, "%.3f") end},
  {"recall", function(r) return r.error and "" or f_num(r.recall, "%.3f") end},
  {"lat PSNR", function(r) return r.error and "" or f_num(r.latent_psnr, "%.2f") end},
  {"lat SSIM", function(r) return r.error and "" or f_num(r.latent_ssim, "%.4f") end},
  {"prev PSNR", function(r) return r.error and "" or f_num(r.preview_psnr, "%.2f") end},
  {"prev SSIM", function(r) return r.error and "" or f_num(r.preview_ssim, "%.4f") end},
}

local function columns_for(rows)
  local cols = {}
  for _, c in ipairs(compare.columns) do cols[#cols + 1] = c end
  for _, r in ipairs(rows) do
    if r.attention_error then
      cols[#cols + 1] = {"attn err", function(x) return x.error and "" or f_num(x.attention_error, "%.4f") end}
      break
    end
  end
  return cols
end

-- Aligned text table (first column left, the rest right).
function compare.format_table(rows)
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

function compare.format_markdown(rows)
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

compare.csv_fields = {"label", "policy", "flops_fraction", "plan_fraction", "attention_seconds", "attention_speedup",
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

function compare.format_csv(rows)
  local out = {table.concat(compare.csv_fields, ",")}
  for _, r in ipairs(rows) do
    local v = {}
    for j, k in ipairs(compare.csv_fields) do v[j] = csv_cell(r[k]) end
    out[#out + 1] = table.concat(v, ",")
  end
  return table.concat(out, "\n")
end

-- The chart's series: the reference, then one per policy entry (its sweep as a line).
function compare.chart_spec(rows, runs, cfg, ref_label)
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
          title = string.format("%s against %s", compare.metrics.y[yk]:gsub(" vs dense.*", ""), xk == "flops" and "attention FLOPs" or "speed"),
          x_label = compare.metrics.x[xk], y_label = compare.metrics.y[yk]}
end

local function command_line(job)
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

-- ---- the job ---------------------------------------------------------------------------------------

function compare.run(cfg, job)
  local t_start = adaspa.now()
  local say = cfg.output.quiet and function() end or function(...) io.write(string.format(...), "\n"); io.flush() end
  local runs, ref_label = compare.plan(cfg)

  -- sizes first (cheap), so gallery fields fail before the weights load
  local mcfg = video.resolve(cfg)
  local n_layers = mcfg.layers.double + mcfg.layers.single
  for i, l in ipairs(cfg.gallery.layers) do
    if l > n_layers then
      error(string.format("%s: field gallery.layers = %s: entry %d: layer %d is beyond the model's %d attention layers",
        job.recipe, recipe.show(cfg.gallery.layers), i, l, n_layers), 0)
    end
  end
  for i, h in ipairs(cfg.gallery.heads) do
    if h > mcfg.heads then
      error(string.format("%s: field gallery.heads = %s: entry %d: head %d is beyond the model's %d heads",
        job.recipe, recipe.show(cfg.gallery.heads), i, h, mcfg.heads), 0)
    end
  end
  local gallery_step = cfg.gallery.step or (cfg.sampler.steps - 1)

  -- every policy is built before anything runs: a bad option fails at once, naming its entry
  for _, r in ipairs(runs) do
    if r.object then
      r.policy = r.object
    else
      local ok, p = pcall(policies.build, r.name, r.opts, cfg.sampler.steps)
      if not ok then
        error(string.format("%s: field policies: entry %d (run %q): %s", job.recipe, r.entry, r.label,
          tostring(p):gsub("^[^\n]-%.lua:%d+: ", "")), 0)
      end
      r.policy = p
    end
    r.describe = r.policy.describe and r.policy:describe() or tostring(r.policy.name or r.label)
  end

  local out = recipe.output_folder(cfg, job) -- opened by the runner (or here)
  local dir = out:path()
  local prep = video.prepare(cfg, {say = say, dir = dir})
  local n = #runs + 1
  say("compare: %d runs (the dense reference and %d policy runs), %d steps each, seed %d; output %s", n, #runs,
    cfg.sampler.steps, cfg.sampler.seed, dir)

  local step_say = cfg.output.step_lines and say or function() end
  local opts_base = {quiet_steps = not cfg.output.step_lines}
  local t_runs = adaspa.now()
  local function eta(done)
    if done == 0 then return "?" end
    return sampler.duration((adaspa.now() - t_runs) / done * (n - done))
  end

  -- the reference
  say("[1/%d] %s ...", n, ref_label)
  local ref_gallery = {}
  local ref = video.run_schedule(cfg, prep, dense_policy.new(), step_say, {quiet_steps = opts_base.quiet_steps,
    on_attention = gallery_hook(cfg, gallery_step, ref_gallery, function() return 64 end)})
  local rmed = video.median_steps(ref.steps)
  local rt, ra = estimate(rmed)
  local ref_times = {sampling = rt, attention = ra}
  -- the reference against itself (what video.compare(ref, ref) gives): PSNR inf, SSIM 1, error 0
  local self_quality = {latents = {psnr = math.huge, ssim = 1, rel_l2 = 0}, previews = {psnr = math.huge, ssim = 1},
                        attention_error = {}}
  local ref_row = summarize(ref_label, ref, ref, self_quality, nil)
  ref_row.policy, ref_row.describe = "dense", "dense (the reference every run is compared with)"
  local rows = {ref_row}
  say("[1/%d] %s: %s sampling (attention %s); eta %s", n, ref_label, sampler.duration(ref.sampling_seconds),
    sampler.duration(ref.attention_seconds), eta(1))

  local xs = {{label = ref_label, x = ref.x}}
  local failed = 0
  for i, r in ipairs(runs) do
    say("[%d/%d] %s ...", i + 1, n, r.label)
    local cells = {}
    r.cells = cells
    local p = r.policy
    local ok, res = pcall(video.run_schedule, cfg, prep, p, step_say, {quiet_steps = opts_base.quiet_steps,
      outputs = ref.outputs, outputs_are_reference = true,
      on_attention = gallery_hook(cfg, gallery_step, cells, function() return p.block or 64 end)})
    local row
    if ok then
      row = summarize(r.label, res, ref, video.compare(res, ref), ref_times)
      -- time a plan spends measuring recall against the exact mass is kept apart by the attention
      -- context (each step's measure_seconds): it is off the step's attention and step times already
      local recall_total = 0
      for _, rec in ipairs(res.steps) do recall_total = recall_total + (rec.measure_seconds or 0) end
      row.recall_seconds = recall_total
      xs[#xs + 1] = {label = r.label, x = res.x}
      say("[%d/%d] %s: %s sampling; FLOPs %.1f%% of dense, attention %.2fx, latents PSNR %s dB; eta %s", i + 1, n, r.label,
        sampler.duration(res.sampling_seconds), 100 * row.flops_fraction, row.attention_speedup,
        f_num(row.latent_psnr, "%.2f"), eta(i + 1))
    else
      failed = failed + 1
      local msg = tostring(res):gsub("^[^\n]-%.lua:%d+: ", "")
      row = {label = r.label, error = msg}
      say("[%d/%d] %s: FAILED: %s", i + 1, n, r.label, msg)
    end
    row.policy, row.describe, row.options, row.entry = r.name, r.describe, r.opts, r.entry
    rows[#rows + 1] = row
    collectgarbage()
  end

  -- reports
  local files = {table = dir .. "/table.txt", markdown = dir .. "/table.md", csv = dir .. "/results.csv",
                 json = dir .. "/results.json"}
  local created = os.date("%Y-%m-%d %H:%M:%S")
  local cmd = command_line(job)
  local device_line = prep.device == "cpu" and string.format("cpu, %d threads", adaspa.threads())
    or (function()
      local d = adaspa.cuda.devices()[1]
      return d and string.format("%s (%s)", prep.device, d.name) or prep.device
    end)()
  local head = {
    string.format("adaspa %s compare: %s (%s)", adaspa.version, job.recipe, created),
    string.format("command    %s", cmd),
    string.format("model      HunyuanVideo %s, %d double + %d single blocks, %d heads x %d, %s on %s",
      prep.mcfg.preset, prep.mcfg.layers.double, prep.mcfg.layers.single, prep.mcfg.heads, prep.mcfg.head_dim, prep.dtype, device_line),
    string.format("weights    %s", prep.weights_source),
    string.format("video      %dx%d, %d frames; latent [%s]; %d tokens", cfg.video.width, cfg.video.height,
      cfg.video.frames, table.concat(prep.latent_shape, ", "), prep.n_tokens),
    string.format("sampler    flow-matching Euler, %d steps, shift %g, guidance %g, seed %d (every run)", cfg.sampler.steps,
      cfg.sampler.shift, cfg.sampler.guidance, cfg.sampler.seed),
    "timing     per run: median step (and attention) time per step mode x steps in that mode, summed (time",
    "           spent measuring recall against the exact mass is left out: it is measurement, not the method);",
    "           x = dense reference / run; FLOPs: attention FLOPs done (planning included) / dense",
    "quality    PSNR/SSIM against the dense reference of the same seed: latents, and preview frames (RGB 0..255)",
  }
  if not cfg.model.weights then
    head[#head + 1] = "           (synthetic weights: timings and densities are real; quality numbers describe these weights)"
  end
  local tbl = compare.format_table(rows)
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
  out:write("table.md", compare.format_markdown(rows) .. "\n")
  out:write("results.csv", compare.format_csv(rows) .. "\n")

  -- chart
  local spec = compare.chart_spec(rows, runs, cfg, ref_label)
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
    local g, boxes = compare.gallery_image(string.format("masks at step %d (steps 0..%d) - dark: kept blocks, blue lines: frame starts, red line: text",
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
    adaspa.png.write(files.previews, previews_image(xs, cfg.output.upscale))
  end

  local report = {
    adaspa = adaspa.version, recipe = job.recipe, command = cmd, created = created, device = prep.device,
    device_name = device_line, dtype = prep.dtype, threads = adaspa.threads(),
    model = {preset = prep.mcfg.preset, hidden = prep.mcfg.hidden, heads = prep.mcfg.heads, head_dim = prep.mcfg.head_dim,
             layers = prep.mcfg.layers, weights = prep.weights_source},
    video = cfg.video, latent_shape = prep.latent_shape, tokens = prep.n_tokens, text = prep.cond.source,
    sampler = cfg.sampler, sweep = cfg.sweep, attention = cfg.attention, gallery_step = gallery_step,
    chart = {x = cfg.chart.x, y = cfg.chart.y}, notes = prep.notes,
    timing_method = "medians per step mode x steps per mode; *_measured: raw totals",
    reference = ref_row, runs = {unpack(rows, 2)}, outputs = files, gallery = gallery,
    total_seconds = adaspa.now() - t_start,
  }
  out:write("results.json", json.encode(report, "  ") .. "\n")
  say("%s", table.concat(lines, "\n"))
  say("compare: %s total; wrote %s", sampler.duration(adaspa.now() - t_start), dir)
  report.lines = lines
  report.rows = rows
  if failed > 0 then
    if not cfg.output.quiet then io.stderr:write(string.format("adaspa compare: %d of %d runs failed (see %s)\n", failed, #runs, files.table)) end
    return 1, report
  end
  return 0, report
end

return compare
