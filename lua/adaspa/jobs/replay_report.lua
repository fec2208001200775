-- adaspa.jobs.replay_report: the replay job's table (table.txt): per policy the modes, density,
-- FLOPs, recall, errors and time; per step; the stability across replayed steps; pictures and
-- notes. adaspa.jobs.replay measures; this formats.
local adaspa = require "adaspa"

local report = {}

function report.mean(t)
  if #t == 0 then return nil end
  local s = 0
  for _, x in ipairs(t) do s = s + x end
  return s / #t
end

function report.fmt_time(s)
  if s == nil then return "-" end
  if s < 1 then return string.format("%.1f ms", s * 1000) end
  return string.format("%.2f s", s)
end

function report.fmt(x, f)
  if x == nil or x ~= x then return "-" end
  return string.format(f or "%.4f", x)
end

local mean, fmt, fmt_time = report.mean, report.fmt, report.fmt_time

-- The lines of table.txt (the total time line excepted: the job adds it last). results: the job's
-- results table (policies with summaries and records, stability); s = {cfg, job, tr, steps,
-- layers, total_rec, device, dtype, dense_time, stability, stab_density, stab_block, pic_files,
-- dir, notes}.
function report.table_lines(results, s)
  local cfg, job, tr, steps, layers, total_rec = s.cfg, s.job, s.tr, s.steps, s.layers, s.total_rec
  local device, dtype, dense_time, stability, stab_density, stab_block = s.device, s.dtype, s.dense_time, s.stability,
    s.stab_density, s.stab_block
  local pic_files, dir, notes = s.pic_files, s.dir, s.notes
  local L = {}
  local function add(...) L[#L + 1] = string.format(...) end
  add("adaspa %s replay: %s", adaspa.version, job.recipe)
  add("trace      %s", tr:describe())
  if tr.meta.source then add("source     %s", tr.meta.source) end
  add("replayed   steps {%s} x layers {%s} = %d records on %s (%s)", table.concat(steps, ","), table.concat(layers, ","),
    total_rec, device, dtype)
  add("schedule   shared fields: sparsity %g, block %d, warmup %s, search %s (auto: the first replayed step searches with its own LSE)",
    cfg.sparsity, cfg.block, tostring(cfg.warmup), type(cfg.search) == "table" and "{" .. table.concat(cfg.search, ",") .. "}" or tostring(cfg.search))
  add("dense      %s for all records (reference: adaspa.attention)", fmt_time(dense_time))
  add("")
  add("%-18s %-28s %7s %7s %7s %7s %8s %8s %10s %7s", "policy", "modes", "density", "FLOPs", "recall", "sparse", "err mean",
    "err max", "time", "speedup")
  add("%-18s %-28s %7s %7s %7s %7s %8s %8s %10s %7s", "", "", "", "% dense", "", "recall", "", "", "", "")
  for _, p in ipairs(results.policies) do
    local sm = p.summary
    local ms = {}
    for _, m in ipairs({"dense", "search", "plan", "sparse"}) do
      if sm.modes[m] then ms[#ms + 1] = m .. " " .. sm.modes[m] end
    end
    add("%-18s %-28s %7s %6.1f%% %7s %7s %8s %8s %10s %6.2fx", p.name, table.concat(ms, ", "), fmt(sm.density_mean, "%.3f"),
      100 * sm.flop_fraction, fmt(sm.recall_mean, "%.3f"), fmt(sm.sparse_recall_mean, "%.3f"), fmt(sm.rel_error_mean),
      fmt(sm.rel_error_max), fmt_time(sm.seconds), sm.speedup or 0)
  end
  add("")
  add("(means over records; density: fraction of blocks computed (dense and search steps compute all); recall: of the")
  add(" computed blocks against the exact block mass; sparse recall: over the sparse/plan records only; err: relative L2")
  add(" error of the attention output against dense over the valid query rows; time: attention of all records)")
  add("")
  add("per step (means over layers):")
  add("%-18s %6s %-8s %7s %7s %8s %10s", "policy", "step", "mode", "density", "recall", "err", "time")
  for _, p in ipairs(results.policies) do
    for _, s in ipairs(steps) do
      local d, rc, e, t, mode = {}, {}, {}, 0, {}
      for _, rec in ipairs(p.records) do
        if rec.step == s then
          d[#d + 1], rc[#rc + 1], e[#e + 1], t = rec.density, rec.recall, rec.rel_error, t + rec.seconds
          mode[rec.mode] = true
        end
      end
      local ml = {}
      for m in pairs(mode) do ml[#ml + 1] = m end
      table.sort(ml)
      add("%-18s %6d %-8s %7s %7s %8s %10s", p.name, s, table.concat(ml, "/"), fmt(mean(d), "%.3f"), fmt(mean(rc), "%.3f"),
        fmt(mean(e)), fmt_time(t))
    end
  end
  if results.stability then
    add("")
    add("stability across consecutive replayed steps (row-wise top-k at density %.3g, block %d, no forced blocks):", stab_density, stab_block)
    add("%-10s %5s %8s %8s %8s | %8s %8s | %8s %8s | %8s", "steps", "layer", "LSE rel", "LSE rms", "LSE max", "reuse J",
      "reuse R", "cached J", "cached R", "exact R")
    for _, e in ipairs(stability) do
      add("%-10s %5d %8.4f %8.4f %8.4f | %8.4f %8.4f | %8.4f %8.4f | %8.4f", e.from .. "->" .. e.to, e.layer, e.lse_rel_change,
        e.lse_rms_change, e.lse_max_change, e.reuse_jaccard, e.reuse_recall, e.cached_lse_jaccard, e.cached_lse_recall, e.exact_recall)
    end
    local sm = results.stability.summary
    if sm.pairs > 0 then
      add("%-16s %8.4f %8.4f %8.4f | %8.4f %8.4f | %8.4f %8.4f | %8.4f", "mean", sm.lse_rel_change.mean, sm.lse_rms_change.mean,
        sm.lse_max_change.mean, sm.reuse_jaccard.mean, sm.reuse_recall.mean, sm.cached_lse_jaccard.mean,
        sm.cached_lse_recall.mean, sm.exact_recall.mean)
    else
      add("(one replayed step: nothing to compare)")
    end
    add("(LSE rel: ||lse_b - lse_a|| / ||lse_a|| over valid rows; rms and max in nats. reuse: the top-k layout of the earlier")
    add(" step against the later step's own top-k (Jaccard J) and exact mass (recall R). cached: the top-k of the later step's")
    add(" block mass under the earlier step's LSE, as AdaSpa's LSE-cached search finds it. exact R: the later step's own top-k.)")
  end
  if #pic_files > 0 then
    add("")
    add("pictures   %d files in %s: stepSS_layerLL_headHH_mass.png (exact block mass), _<policy>_<mode>.png (masks),", #pic_files, dir)
    add("           _gallery.png (mass, then each policy holding a layout, left to right; columns in results.json)")
  end
  for _, n in ipairs(notes) do add("note       %s", n) end
  return L
end

return report
