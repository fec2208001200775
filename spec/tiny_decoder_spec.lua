-- decoder_fit.py (recipes/tools/tinyvideo): a new decoder of another size fitted to a state's
-- frozen encoder and swapped into an export. The export's DiT and text encoder stay value for
-- value (the same latents in adaspa), its metadata carries the new sizes (adaspa builds the
-- decoder from them), and train.py trains the DiT on from the new state and export. Through
-- Python with torch ($ADASPA_PYTHON or python3); pending without it.
describe("decoder_fit.py", function()
  it("swaps a larger decoder into an export: the same latents, the new sizes in adaspa; train.py goes on from it", function()
    local py, out = spec_torch_workdir()
    if not py then return end
    local function sh(cmd, want)
      os.execute(string.format("cd recipes/tools/tinyvideo && %s > %s/run.log 2>&1; echo $? > %s/rc", cmd, out, out))
      local log = spec_slurp(out .. "/run.log")
      assert.are.equal(want or 0, tonumber(spec_slurp(out .. "/rc")), cmd .. "\n" .. log)
      return log
    end
    local function train(args, want) return sh(py .. " train.py --smoke --threads 1 " .. args, want) end
    local function fit(args, want) return sh(py .. " decoder_fit.py --log-every 1 " .. args, want) end
    local function meta(name) return select(2, adaspa.safetensors.info(out .. "/" .. name .. ".safetensors")) end
    local function run(name)   -- a dense 2-step run: (latents, report, the first frame's pixels)
      local dir = spec_tmpdir()
      local _, se, code = spec_run(string.format("recipe recipes/tiny.lua model.weights=%s/%s.safetensors "
        .. "'prompt=a red square moving left' sampler.steps=2 output.quiet=true output.dir=%s attention.policy=dense",
        out, name, dir))
      assert.are.equal(0, code, se)
      return adaspa.safetensors.load(dir .. "/latents.safetensors").latents, spec_slurp(dir .. "/report.txt"),
        spec_slurp(dir .. "/frame_000.png")
    end

    train("--out " .. out .. "/b.safetensors --steps 2")   -- smoke: decoder 32 wide, 1 mixing and 1 MLP block
    local log = fit(string.format("--state %s/b.state.pt --export %s/b.safetensors --out %s/d.safetensors"
      .. " --out-state %s/d.state.pt --size 48,2,3 --steps 3 --batch 1 --heldout 2", out, out, out, out))
    assert.truthy(log:find("a fresh decoder 48,2,3", 1, true), log)
    assert.truthy(log:find("done: 3 steps, 3 clips", 1, true), log)
    assert.truthy(log:find("held-out clips (2) round-tripped with the new decoder: colour", 1, true), log)
    local m, mb = meta("d"), meta("b")
    assert.are.equal("48", m["tiny.ae.dec_dim"])
    assert.are.equal("2", m["tiny.ae.dec_mix"])
    assert.are.equal("3", m["tiny.ae.dec_mlp"])
    assert.are.equal("32", mb["tiny.ae.dec_dim"])
    assert.truthy(m.config:find('"dec_dim": 48', 1, true), m.config)
    assert.truthy(m.final_losses:find('"decoder_refit": {"command": "python decoder_fit.py', 1, true), m.final_losses)
    -- every tensor but the decoder's is the export's; the decoder's are new
    local tb, td = adaspa.safetensors.load(out .. "/b.safetensors"), adaspa.safetensors.load(out .. "/d.safetensors")
    local same, new = 0, 0
    for k, v in pairs(td) do
      if k:find("^decoder%.") then
        new = new + 1
      else
        assert.are.same(tb[k]:shape(), v:shape(), k)
        assert.are.equal(0, adaspa.add(tb[k]:reshape({-1}), adaspa.scale(v:reshape({-1}), -1)):norm(), k)
        same = same + 1
      end
    end
    assert.truthy(same > 20 and new > 10, same .. " " .. new)
    assert.are.same(tb["decoder.lin_in.weight"]:shape()[2], td["decoder.lin_in.weight"]:shape()[2])
    assert.are.equal(48, td["decoder.lin_in.weight"]:shape()[1])
    -- adaspa builds the new decoder from the metadata: the same latents, other frames
    local lb, _, fb = run("b")
    local ld, report, fd = run("d")
    assert.truthy(report:find("; decoder 48 wide, 2 mixing + 3 MLP blocks", 1, true), report)
    assert.truthy(report:find(" %+ decoder refit %d+ s, DiT "), report)   -- the refit's time in the model line
    assert.are.equal(0, adaspa.add(lb:reshape({-1}), adaspa.scale(ld:reshape({-1}), -1)):norm())
    assert.are_not.equal(fb, fd)
    -- the new state and export again at the state's own size: its decoder fine-tuned, not a fresh one
    log = fit(string.format("--state %s/d.state.pt --export %s/d.safetensors --out %s/f.safetensors --size 48,2,3"
      .. " --out-state %s/f.state.pt --steps 1 --batch 1 --heldout 0", out, out, out, out))
    assert.truthy(log:find("the state's decoder, fine-tuned, 48,2,3", 1, true), log)
    assert.truthy(log:find("learning rate 0.0003", 1, true), log)
    -- it went on from d's refit: that fit's time and command carry over
    local fl = meta("f").final_losses
    assert.truthy(fl:find('"before": "python decoder_fit.py', 1, true) and fl:find('"before_seconds": ', 1, true), fl)
    assert.is_nil(m.final_losses:find('"before', 1, true))   -- d's was a fresh decoder
    -- a second fine-tune names both fits before it and counts both's seconds
    fit(string.format("--state %s/f.state.pt --export %s/f.safetensors --out %s/g.safetensors --size 48,2,3"
      .. " --steps 1 --batch 1 --heldout 0", out, out, out))
    local gl = meta("g").final_losses
    local last, first = (gl:match('"before": "(.-)", "before_seconds"') or ""):match("^(.-); before it: (.*)$")
    assert.truthy(last and last:find("--out " .. out .. "/f.safetensors", 1, true), gl)
    assert.truthy(first and first:find("--out " .. out .. "/d.safetensors", 1, true), gl)
    local secs = function(s, k) return tonumber(s:match('"decoder_refit".-"' .. k .. '": ([%d.]+)')) end
    assert.is_true(math.abs(secs(gl, "before_seconds") - secs(fl, "seconds") - secs(fl, "before_seconds")) < 0.15, gl)
    -- train.py trains the DiT on from the new state and export; its export keeps the new decoder
    os.execute(string.format("cp %s/d.state.pt %s/e.state.pt", out, out))
    log = train(string.format("--out %s/e.safetensors --resume --init-from %s/d.safetensors --steps 1", out, out))
    assert.truthy(log:find("dit  from " .. out .. "/d.safetensors: 2 steps", 1, true), log)
    assert.are.equal("48", meta("e")["tiny.ae.dec_dim"])
    assert.are.equal("3", meta("e")["tiny.ae.dec_mlp"])
    local le = run("e")
    assert.are.same(ld:shape(), le:shape())

    -- refused: a state whose decoder is not the export's (another latent space), a bad size, a non-export
    train("--out " .. out .. "/x.safetensors --steps 1 --seed 1")
    local msg = fit(string.format("--state %s/x.state.pt --export %s/b.safetensors --out %s/y.safetensors --steps 1",
      out, out, out), 2)
    assert.truthy(msg:find("its decoder is not " .. out .. "/b.safetensors's", 1, true), msg)
    msg = fit(string.format("--state %s/b.state.pt --export %s/b.safetensors --out %s/y.safetensors --size 50,1",
      out, out, out), 2)
    assert.truthy(msg:find("--size 50,1: DIM,MIX,MLP", 1, true), msg)
    msg = fit(string.format("--state %s/b.state.pt --export %s/b.state.pt --out %s/y.safetensors", out, out, out), 2)
    assert.truthy(msg:find("not a train.py export", 1, true), msg)
    assert.is_nil(io.open(out .. "/y.safetensors"))
  end)
end)
