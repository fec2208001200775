-- train.py --grow-double / --grow-single (recipes/tools/tinyvideo): an export's DiT made deeper
-- by blocks appended with their modulation zero (each the identity), so the grown model computes
-- what the export does; its export runs in adaspa with the new block counts (read from its
-- metadata). Through Python with torch ($ADASPA_PYTHON or python3); pending without it.
describe("train.py --grow-double / --grow-single / --widen", function()
  -- the helpers of a test whose files go to out: train (the exit code compared, 3: the time limit,
  -- 2: a refusal; the output), meta (an export's metadata), recipe (a 2-step run of recipes/tiny.lua
  -- on out/NAME.safetensors: its folder), latents (a run folder's)
  local function helpers(py, out)
    local base = string.format("cd recipes/tools/tinyvideo && %s train.py --smoke --threads 1 ", py)
    local function train(args, want)
      os.execute(string.format("%s %s > %s/run.log 2>&1; echo $? > %s/rc", base, args, out, out))
      local log = spec_slurp(out .. "/run.log")
      assert.are.equal(want or 0, tonumber(spec_slurp(out .. "/rc")), args .. "\n" .. log)
      return log
    end
    local function meta(name) return select(2, adaspa.safetensors.info(out .. "/" .. name .. ".safetensors")) end
    local function recipe(name, extra)
      local dir = spec_tmpdir()
      local _, se, code = spec_run(string.format("recipe recipes/tiny.lua model.weights=%s/%s.safetensors "
        .. "'prompt=a red square moving left' sampler.steps=2 output.quiet=true output.dir=%s %s", out, name, dir, extra))
      assert.are.equal(0, code, se)
      return dir
    end
    local function latents(dir) return adaspa.safetensors.load(dir .. "/latents.safetensors").latents end
    return train, meta, recipe, latents
  end

  it("appends identity blocks: the export's output before training, in PyTorch and in adaspa; a grown run resumes deeper", function()
    local py, out = spec_torch_workdir()
    if not py then return end
    local train, meta, recipe, latents = helpers(py, out)

    -- the export (smoke: 1 double, 1 single block), and its state for each grown run
    train("--out " .. out .. "/b.safetensors --steps 2")
    for _, n in ipairs({"g", "h"}) do os.execute(string.format("cp %s/b.state.pt %s/%s.state.pt", out, out, n)) end
    -- grown by 1 double and 2 single blocks at learning rate 0: the export holds the grown model as it started
    local log = train(string.format("--out %s/g.safetensors --resume --init-from %s/b.safetensors --grow-double 1"
      .. " --grow-single 2 --steps 2 --lr 0", out, out))
    local gap = log:match("double blocks 1 %-> 2, single blocks 1 %-> 3 %(appended, modulation zero%); max |grown %- export| (%S+)")
    assert.truthy(gap and tonumber(gap) < 1e-5, log)
    local m = meta("g")
    assert.are.equal("2", m["tiny.dit.layers.double"])
    assert.are.equal("3", m["tiny.dit.layers.single"])
    assert.truthy(m.config:find('"layers": {"double": 2, "single": 3, "refiner": 1}', 1, true), m.config)
    -- adaspa builds 2 + 3 blocks from the metadata, and they give the export's latents (dense attention)
    local db, dg = recipe("b", "attention.policy=dense"), recipe("g", "attention.policy=dense")
    assert.truthy(spec_slurp(dg .. "/report.txt"):find("2 double + 3 single blocks", 1, true))
    assert.truthy(spec_slurp(db .. "/report.txt"):find("1 double + 1 single blocks", 1, true))
    local lb, lg = latents(db), latents(dg)
    assert.are.same(lb:shape(), lg:shape())
    local diff = adaspa.add(lb:reshape({-1}), adaspa.scale(lg:reshape({-1}), -1)):norm()
    assert.is_true(diff <= 1e-5 * lb:norm(), tostring(diff))

    -- a grown run the time limit stops resumes from its state alone (no --init-from) as the grown DiT
    train(string.format("--out %s/h.safetensors --resume --init-from %s/b.safetensors --grow-double 1 --grow-single 2"
      .. " --steps 2 --time-limit 0", out, out), 3)
    log = train("--out " .. out .. "/h.safetensors --resume --steps 2")
    assert.truthy(log:find("dit  done: 4 steps", 1, true), log)
    m = meta("h")
    assert.are.equal("2", m["tiny.dit.layers.double"])
    assert.are.equal("3", m["tiny.dit.layers.single"])
    -- the trained grown export runs in adaspa (AdaSpa attention, its search on the first step)
    local dh = recipe("h", "attention.warmup=1 attention.search=1")
    assert.truthy(spec_slurp(dh .. "/report.txt"):find("2 double + 3 single blocks", 1, true))
    -- --init-from a grown export takes its counts, and grows on from them
    os.execute(string.format("cp %s/h.safetensors %s/h0.safetensors", out, out))
    log = train(string.format("--out %s/h.safetensors --resume --init-from %s/h0.safetensors --grow-double 1 --steps 1", out, out))
    assert.truthy(log:find("double blocks 2 -> 3, single blocks 3 -> 3", 1, true), log)
    assert.are.equal("3", meta("h")["tiny.dit.layers.double"])

    -- from an export alone (its state lost: the GPU machine keeps none between sessions):
    -- --refit-encoder fits a fresh encoder to its decoder, then stage 2 grows its DiT as --init-from
    log = train(string.format("--out %s/r.safetensors --refit-encoder %s/b.safetensors --ae-steps 3 --grow-double 1"
      .. " --grow-single 2 --steps 1 --lr 0", out, out))
    assert.truthy(log:find("ae   refit: a fresh encoder against the frozen decoder of", 1, true), log)
    gap = log:match("double blocks 1 %-> 2, single blocks 1 %-> 3 %(appended, modulation zero%); max |grown %- export| (%S+)")
    assert.truthy(gap and tonumber(gap) < 1e-5, log)
    m = meta("r")
    assert.are.equal("2", m["tiny.dit.layers.double"])
    assert.are.equal("3", m["tiny.dit.layers.single"])
    -- the refit's export keeps b's decoder: adaspa runs it, grown, to b's latents (learning rate 0)
    local dr = recipe("r", "attention.policy=dense")
    assert.truthy(spec_slurp(dr .. "/report.txt"):find("2 double + 3 single blocks", 1, true))
    local lr_ = latents(dr)
    diff = adaspa.add(lb:reshape({-1}), adaspa.scale(lr_:reshape({-1}), -1)):norm()
    assert.is_true(diff <= 1e-5 * lb:norm(), tostring(diff))

    -- refused: without --init-from or --refit-encoder, a negative count
    local msg = train("--out " .. out .. "/x.safetensors --grow-double 1", 2)
    assert.truthy(msg:find("--grow-double needs --init-from EXPORT or --refit-encoder EXPORT", 1, true), msg)
    msg = train(string.format("--out %s/g.safetensors --resume --init-from %s/b.safetensors --grow-single -1", out, out), 2)
    assert.truthy(msg:find("--grow-single -1: must be >= 0", 1, true), msg)
  end)

  it("--widen: twice the width computing the export's output, in PyTorch and in adaspa; its state resumes wide", function()
    local py, out = spec_torch_workdir()
    if not py then return end
    local train, meta, recipe, run_latents = helpers(py, out)
    local function latents(name)   -- a dense run's latents and report
      local dir = recipe(name, "attention.policy=dense")
      return run_latents(dir), spec_slurp(dir .. "/report.txt")
    end
    train("--out " .. out .. "/b.safetensors --steps 2")
    os.execute(string.format("cp %s/b.state.pt %s/w.state.pt", out, out))
    -- widened (smoke: hidden 32, 2 heads -> 64, 4) and grown by a single block, at learning rate 0
    local log = train(string.format("--out %s/w.safetensors --resume --init-from %s/b.safetensors --widen --grow-single 1"
      .. " --steps 2 --lr 0", out, out))
    local gap = log:match("%(appended, modulation zero%), hidden 32 %-> 64 and heads 2 %-> 4 %(widened%); max |grown %- export| (%S+)")
    assert.truthy(gap and tonumber(gap) < 1e-5, log)
    local m = meta("w")
    assert.are.equal("64", m["tiny.dit.hidden"])
    assert.are.equal("4", m["tiny.dit.heads"])
    -- adaspa builds the wide DiT from the metadata, and it gives the export's latents (f16 weights)
    local lb = latents("b")
    local lw, report = latents("w")
    assert.truthy(report:find("1 double + 2 single blocks, 4 heads x 16, hidden 64", 1, true), report)
    local diff = adaspa.add(lb:reshape({-1}), adaspa.scale(lw:reshape({-1}), -1)):norm()
    assert.is_true(diff <= 1e-3 * lb:norm(), tostring(diff))
    -- trained on, the two halves part (the noise in the split weights): the latents move
    log = train("--out " .. out .. "/w.safetensors --resume --restart-schedule --steps 3 --lr 1e-2 --warmup 1")
    assert.truthy(log:find("dit  done: 7 steps", 1, true), log)   -- 4 before, 3 under the new schedule
    assert.are.equal("64", meta("w")["tiny.dit.hidden"])
    local lt = latents("w")
    assert.is_true(adaspa.add(lb:reshape({-1}), adaspa.scale(lt:reshape({-1}), -1)):norm() > 1e-3 * lb:norm())
    -- the next call's carry: the wide export and the autoencoder alone (--ae-only-state), not the whole state
    log = train(string.format("--out %s/b.safetensors --resume --ae-only-state %s/a.state.pt", out, out))
    assert.truthy(log:find("without the DiT", 1, true), log)
    log = train(string.format("--out %s/a.safetensors --resume --init-from %s/w.safetensors --restart-schedule --steps 1", out, out))
    assert.truthy(log:find("dit  from " .. out .. "/w.safetensors: 7 steps", 1, true), log)
    assert.are.equal("64", meta("a")["tiny.dit.hidden"])
    train(string.format("--out %s/b.safetensors --resume --ae-only-state %s/a.state.pt", out, out))   -- again: the run above saved its whole state over it
    local msg = train(string.format("--out %s/a.safetensors --resume --restart-schedule --steps 1", out), 2)
    assert.truthy(msg:find("holds the autoencoder alone (--ae-only-state): give --init-from EXPORT", 1, true), msg)
    -- refused without an export to widen
    msg = train("--out " .. out .. "/x.safetensors --widen", 2)
    assert.truthy(msg:find("--widen needs --init-from EXPORT or --refit-encoder EXPORT", 1, true), msg)
  end)
end)
