-- train.py --weight-ema and --latent-cache (recipes/tools/tinyvideo). --weight-ema: the export
-- holds the average of the text encoder's and DiT's weights over the optimizer's steps, decay
-- min(D, (1 + n) / (10 + n)) at the n-th update, kept across --resume. --latent-cache N: stage 2
-- trains on N clips drawn and encoded once. Through Python with torch ($ADASPA_PYTHON or
-- python3); pending without it.
describe("train.py --weight-ema and --latent-cache", function()
  -- A fresh folder and train(args, want): train.py --smoke ARGS there, its exit code compared
  -- (3: the time limit; 2: a refusal), its log returned; nil (the spec pending) without torch.
  local function trainer()
    local py, out = spec_torch_workdir()
    if not py then return nil end
    return out, function(args, want)
      os.execute(string.format("cd recipes/tools/tinyvideo && %s train.py --smoke --threads 1 %s > %s/run.log 2>&1;"
        .. " echo $? > %s/rc", py, args:gsub("OUT", out), out, out))
      local log = spec_slurp(out .. "/run.log")
      assert.are.equal(want or 0, tonumber(spec_slurp(out .. "/rc")), args .. "\n" .. log)
      return log
    end, py
  end

  it("exports the weights' average: one step's by hand, its count across a resume, refusals", function()
    local out, run = trainer()
    if not out then return end
    local function train(name, args, want)
      return run(string.format("--dtype f32 --out OUT/%s.safetensors %s", name, args), want)
    end
    local function load(name) return adaspa.safetensors.load(out .. "/" .. name .. ".safetensors") end
    local function losses(name)   -- the metadata's weight_ema and weight_ema_updates (nil when absent)
      local _, meta = adaspa.safetensors.info(out .. "/" .. name .. ".safetensors")
      local fl = meta.final_losses
      return {weight_ema = tonumber(fl:match('"weight_ema": ([%d.e-]+)')),
        weight_ema_updates = tonumber(fl:match('"weight_ema_updates": (%d+)'))}
    end

    -- the same seed three times: the initial weights (learning rate 0: the DiT's and text encoder's
    -- as initialized), one step, one step averaged
    train("i", "--steps 1 --lr 0")
    train("w", "--steps 1")
    local log = train("e", "--steps 1 --weight-ema 0.999")
    assert.truthy(log:find("dit  exporting the weight average: 1 updates, decay 0.999", 1, true), log)
    local i, w, e = load("i"), load("w"), load("e")
    local d = 2 / 11   -- the first update's decay: min(0.999, 2 / 11)
    local moved, checked = 0, 0
    for k, wk in pairs(w) do
      if k:find("^decoder%.") then   -- the autoencoder (stage 1, its own learning rate): not averaged
        assert.are.equal(0, adaspa.add(e[k]:reshape({-1}), adaspa.scale(wk:reshape({-1}), -1)):norm(), k)
        goto continue
      end
      local diff = adaspa.add(i[k]:reshape({-1}), adaspa.scale(wk:reshape({-1}), -1)):norm()
      if diff > 0 then moved = moved + 1 end
      -- e = d i + (1 - d) w, so e - w = d (i - w)
      local want = adaspa.scale(adaspa.add(i[k]:reshape({-1}), adaspa.scale(wk:reshape({-1}), -1)), d)
      local got = adaspa.add(e[k]:reshape({-1}), adaspa.scale(wk:reshape({-1}), -1))
      local err = adaspa.add(got, adaspa.scale(want, -1)):norm()
      assert.is_true(err <= 1e-5 * diff + 1e-7 * (wk:reshape({-1}):norm() + 1), k .. ": " .. err .. " against " .. diff)
      checked = checked + 1
      ::continue::
    end
    assert.is_true(moved > 50, "a step moved " .. moved .. " of " .. checked .. " tensors")
    assert.are.equal(0.999, losses("e").weight_ema)
    assert.are.equal(1, losses("e").weight_ema_updates)
    assert.is_nil(losses("w").weight_ema)

    -- stopped by the time limit and resumed: the average and its count come back from the state
    train("r", "--steps 3 --weight-ema 0.5 --time-limit 0", 3)
    train("r", "--steps 3 --weight-ema 0.5 --resume")
    assert.are.equal(3, losses("r").weight_ema_updates)

    -- refusals
    log = train("x", "--weight-ema 1", 2)
    assert.truthy(log:find("--weight-ema 1.0: must be in [0, 1)", 1, true), log)
    log = train("x", "--weight-ema -0.1", 2)
    assert.truthy(log:find("--weight-ema -0.1: must be in [0, 1)", 1, true), log)
  end)

  it("--latent-cache: trains on clips encoded once, passes over them, and a resumed run rebuilds the same", function()
    local out, run, py = trainer()
    if not out then return end
    local function train(args, want) return run("--out OUT/c.safetensors " .. args, want) end
    local pat = "latent cache: 5 clips from clip (%d+), [%d.]+ GB of latents, [%d.]+ s %(latent sum (%S+)%)"
    -- 3 steps of 2 clips over 5 cached ones (a second pass), the shape's weights from the cached masks
    local log = train("--steps 3 --latent-cache 5 --object-weight 4 --object-balance")
    local from, sum = log:match(pat)
    assert.truthy(from and tonumber(sum), log)
    assert.truthy(log:find("dit  done: 3 steps, 6 clips", 1, true), log)
    local _, meta = adaspa.safetensors.info(out .. "/c.safetensors")
    assert.are.equal(tonumber(from) + 5, tonumber(meta.final_losses:match('"data_next": (%d+)')), meta.final_losses)
    -- from its state: the same 5 clips again, the same latents
    log = train("--steps 2 --latent-cache 5 --object-weight 4 --object-balance --resume --restart-schedule")
    local from2, sum2 = log:match(pat)
    assert.are.same({from, sum}, {from2, sum2}, log)
    assert.truthy(log:find("dit  done: 5 steps, 10 clips", 1, true), log)
    -- the state keeps the optimizer's moments in bf16 (a grown DiT's state then fits a device call's
    -- return); the resumed run above loaded them back and trained on to a finite loss
    local probe = string.format("%s -c \"import torch, sys; s = torch.load(sys.argv[1], weights_only=False)['opt']['state'];"
      .. " d = sorted({str(v.dtype) for st in s.values() for n, v in st.items() if n != 'step'});"
      .. " print(len(s), ' '.join(d))\" %s/c.state.pt", py, out)
    local h = io.popen(probe)
    local got = h:read("*a")
    h:close()
    local n, dtypes = got:match("^(%d+) (.-)%s*$")
    assert.is_true(tonumber(n) > 50, got)
    assert.are.equal("torch.bfloat16", dtypes, got)
    assert.truthy(log:match("loss ([%d.]+)"), log)
    -- another size draws new clips after the cached ones
    log = train("--steps 1 --latent-cache 3 --resume --restart-schedule")
    assert.are.equal(tostring(tonumber(from) + 5), log:match("latent cache: 3 clips from clip (%d+)"), log)
    -- --new-clips: new clips at the state's size too (after the 3 above), and the log says when they are not
    log = train("--steps 1 --latent-cache 3 --resume --restart-schedule --new-clips")
    assert.are.equal(tostring(tonumber(from) + 8), log:match("latent cache: 3 clips from clip (%d+)"), log)
    assert.falsy(log:find("clips again", 1, true), log)
    log = train("--steps 1 --latent-cache 3 --resume --restart-schedule")
    assert.are.equal(tostring(tonumber(from) + 8), log:match("latent cache: 3 clips from clip (%d+)"), log)
    assert.truthy(log:find("the state's run's clips again", 1, true), log)
    -- --lean-state: the state leaves out the optimizer's moments; resuming it needs --restart-schedule,
    -- which starts them fresh
    local function size(f) return #spec_slurp(f) end
    local full = size(out .. "/c.state.pt")
    log = train("--steps 1 --latent-cache 3 --resume --restart-schedule --lean-state")
    local lean_steps = tonumber(log:match("dit  done: (%d+) steps"))
    assert.truthy(lean_steps, log)
    local lean = size(out .. "/c.state.pt")
    assert.is_true(lean < 0.8 * full, string.format("lean %d bytes, full %d", lean, full))
    h = io.popen(string.format("%s -c \"import torch, sys; print(torch.load(sys.argv[1], weights_only=False)['opt'])\" %s/c.state.pt",
      py, out))
    got = h:read("*a")
    h:close()
    assert.are.equal("None", got:match("^(%S+)"), got)
    log = train("--steps 1 --latent-cache 3 --resume", 2)
    assert.truthy(log:find("has no optimizer moments (saved with --lean-state): give --restart-schedule", 1, true), log)
    log = train("--steps 1 --latent-cache 3 --resume --restart-schedule")
    assert.truthy(log:find("no optimizer moments (--lean-state): fresh ones under the new warm-up", 1, true), log)
    assert.are.equal(lean_steps + 1, tonumber(log:match("dit  done: (%d+) steps")), log)
    assert.is_true(size(out .. "/c.state.pt") > 0.9 * full)   -- saved without --lean-state: the moments again
    log = train("--latent-cache -1", 2)
    assert.truthy(log:find("--latent-cache -1: must be >= 0", 1, true), log)
    log = train("--new-clips", 2)
    assert.truthy(log:find("--new-clips: needs --latent-cache N", 1, true), log)
    log = train("--small-share 0.5", 2)
    assert.truthy(log:find("--small-share 0.5: must be in (0.5, 1]", 1, true), log)
  end)

  it("a state that pickles code is refused by train.py --resume, check.py --ae and textgain.py, the code not run", function()
    local out, run, py = trainer()
    if not out then return end
    run("--out OUT/b.safetensors --steps 1")   -- an export for textgain.py
    local mark = out .. "/ran"
    os.execute(string.format("%s -c \"import torch, os\nclass E:\n    def __reduce__(self): return (os.system, ('touch %s',))"
      .. "\ntorch.save({'stage': 2, 'ae': E()}, '%s/e.state.pt')\"", py, mark, out))
    local log = run("--out OUT/e.safetensors --resume", 1)
    assert.truthy(log:find("train.py --resume: " .. out .. "/e.state.pt is not a training state of plain tensors", 1, true), log)
    for _, cmd in ipairs({ "check.py selftest --n 1 --size 32 --frames 3 --ae OUT/e.state.pt",
                           "textgain.py OUT/b.safetensors OUT/e.state.pt" }) do
      local f = io.popen(string.format("cd recipes/tools/tinyvideo && %s %s 2>&1; echo rc=$?", py, cmd:gsub("OUT", out)))
      log = f:read("*a"); f:close()
      assert.truthy(log:find("is not a training state of plain tensors (UnpicklingError", 1, true), log)
      assert.truthy(log:find("rc=1", 1, true), log)
    end
    assert.is_nil(io.open(mark))
  end)
end)
