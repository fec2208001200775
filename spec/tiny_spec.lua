-- The tiny trained model (recipes/tools/tinyvideo) run by adaspa: the text encoder, the latent
-- decoder and the DiT of an export against PyTorch's outputs on the same export. The fixtures in
-- spec/fixtures/tiny were written by `python train.py --smoke` then `python fixtures.py` (f16
-- weights; PyTorch computed in f32 from the same f16 values).

local tiny = require "adaspa.models.tiny"
local tt = require "adaspa.models.tiny_text"

local flat, rel_l2 = spec_flat, spec_rel_l2
local DIR = "spec/fixtures/tiny/"
local M = tiny.load(DIR .. "tiny_model.safetensors")
local IO, META = adaspa.safetensors.load(DIR .. "tiny_io.safetensors")

local function shape(t) return table.concat(t:shape(), ",") end

describe("tiny model export", function()
  it("reads the configuration and vocabulary from the metadata", function()
    assert.are.equal(32, M.cfg.hidden)
    assert.are.equal(16, M.cfg.head_dim)
    assert.are.same({4, 6, 6}, M.cfg.rope_axes)
    assert.are.same({double = 1, single = 1, refiner = 1}, M.cfg.layers)
    assert.are.equal(32, M.cfg.text_dim)
    assert.are.equal("<blank>", M.vocab[1])
    assert.is_true(#M.vocab > 20)
    assert.truthy(M.meta.command:find("--smoke", 1, true))
    assert.truthy(M.meta.final_losses:find("flow", 1, true))
  end)

  it("refuses a file that is not a tiny export", function()
    local ok, err = pcall(tiny.load, DIR .. "tiny_io.safetensors")
    assert.is_false(ok)
    assert.truthy(err:find("not a tiny model export", 1, true))
  end)

  -- an export is a file from anyone: its sizes are checked before they are used (spec/fuzz/tiny_fuzz.lua
  -- fuzzes the same reader)
  it("refuses hostile metadata and tensors with a message naming the file and the entry", function()
    local tensors, meta = adaspa.safetensors.load(DIR .. "tiny_model.safetensors")
    local path = os.tmpname() .. ".safetensors"
    local function refused(md_edits, tensor_edit)
      local md, named = {}, {}
      for k, v in pairs(meta) do md[k] = v end
      for k, v in pairs(md_edits) do md[k] = v ~= false and v or nil end
      for n, t in pairs(tensors) do named[n] = t end
      if tensor_edit then tensor_edit(named) end
      adaspa.safetensors.save(path, named, md)
      local ok, err = pcall(tiny.load, path)
      local ok2, err2 = pcall(tiny.overrides, {weights = path})
      assert.is_false(ok)
      assert.is_false(ok2)
      assert.are.equal(err, err2)   -- the run's path (tiny.overrides) says the same
      assert.are.equal("tiny: " .. path .. ": ", err:sub(1, #path + 8))
      return err
    end
    local cases = {
      {{["tiny.video.width"] = "1000000"}, "tiny.video.width = \"1000000\" must be a whole number from 16 to 4096"},
      {{["tiny.video.frames"] = "10"}, "video 64x64, 10 frames: width and height must be multiples of 16 and frames 4k + 1"},
      {{["tiny.dit.layers.double"] = "100000000"}, "tiny.dit.layers.double = \"100000000\" must be a whole number from 0 to 1024"},
      {{["tiny.dit.layers.single"] = "500"}, "tiny.dit.layers.single = 500 blocks, but the file holds"},
      {{["tiny.dit.eps"] = "nan"}, "tiny.dit.eps = \"nan\" must be a number above 0 and below 1"},
      {{["tiny.dit.hidden"] = "48"}, "tiny.dit.hidden (48) must equal tiny.dit.heads (2) x tiny.dit.head_dim (16)"},
      {{["tiny.dit.rope_axes"] = "4,6"}, "tiny.dit.rope_axes = \"4,6\" must be three even whole numbers"},
      {{["tiny.dit"] = "5"}, "clashes with another tiny.* entry"},
      {{["tiny.text.heads"] = false}, "the metadata has no tiny.text.heads"},
      {{["tiny.vocab"] = meta["tiny.vocab"] .. " Red"}, "the word \"Red\" could never match"},
      {{["tiny.vocab"] = meta["tiny.vocab"] .. " red"}, "the word \"red\" appears twice"},
      {{["tiny.vocab"] = meta["tiny.vocab"] .. " extra"}, "tensor text_encoder.embed.weight has shape [32, 32], the metadata's configuration gives [33, 32]"},
      {{}, "missing tensor decoder.mix.0.taps.3.weight", function(t) t["decoder.mix.0.taps.3.weight"] = nil end},
      {{}, "unexpected tensor decoder.extra", function(t) t["decoder.extra"] = t["decoder.norm.bias"] end},
      {{}, "tensor text_encoder.pos has shape [48, 16]", function(t) t["text_encoder.pos"] = t["text_encoder.pos"]:reshape({48, 16}) end},
    }
    for _, c in ipairs(cases) do
      local err = refused(c[1], c[3])
      assert.truthy(err:find(c[2], 1, true), err)
    end
    -- the DiT's tensors: tiny.load checks them too (the run's path in adaspa.weights.load)
    adaspa.safetensors.save(path, (function()
      local named = {}
      for n, t in pairs(tensors) do named[n] = t end
      named["final_layer.linear.bias"] = nil
      return named
    end)(), meta)
    local ok, err = pcall(tiny.load, path)
    assert.is_false(ok)
    assert.are.equal("tiny: " .. path .. ": missing tensor final_layer.linear.bias (and 0 more)", err)
    os.remove(path)
  end)
end)

describe("tiny text encoder", function()
  local text = M.text:encode(META.prompt)

  it("matches PyTorch's states and pooled vector", function()
    assert.are.equal(shape(IO.text_states), shape(text.states))
    assert.is_true(rel_l2(flat(text.states), flat(IO.text_states)) < 1e-4)
    assert.is_true(rel_l2(flat(text.pooled), flat(IO.text_pooled)) < 1e-4)
  end)

  it("pads the states with zero rows past the prompt's words", function()
    local n = #tt.words(META.prompt)
    assert.are.equal(n, text.valid)
    local pad = text.states:narrow(1, n + 1, M.cfg.text_len - n)
    assert.are.equal(0, pad:norm())
    assert.is_true(text.states:narrow(1, n, 1):norm() > 0.1)
  end)

  it("depends on the words and their order", function()
    local a = M.text:encode("a red square moving left over a plain blue background")
    local b = M.text:encode("a blue square moving left over a plain red background")
    assert.is_true(rel_l2(flat(a.pooled), flat(b.pooled)) > 1e-3)
  end)

  it("names an unknown word and points at the vocabulary", function()
    local ok, err = pcall(M.text.encode, M.text, "a purple square moving left")
    assert.is_false(ok)
    assert.truthy(err:find("unknown word 'purple'", 1, true))
    assert.truthy(err:find("recipes/tools/tinyvideo/vocab.txt", 1, true))
    assert.truthy(err:find("red", 1, true))
  end)

  it("encodes the empty prompt as the blank word and refuses too long a prompt", function()
    local e = M.text:encode("")
    assert.are.equal(1, e.valid)
    local long = string.rep("a ", M.cfg.text_len + 1)
    local ok, err = pcall(M.text.encode, M.text, long)
    assert.is_false(ok)
    assert.truthy(err:find("at most " .. M.cfg.text_len, 1, true))
  end)
end)

describe("tiny decoder", function()
  it("matches PyTorch's frames", function()
    local frames = M.decoder:decode(IO.dec_latent)
    assert.are.equal("5,16,24,3", shape(frames))
    assert.are.equal(shape(IO.dec_frames), shape(frames))
    assert.is_true(rel_l2(flat(frames), flat(IO.dec_frames)) < 1e-4)
  end)

  it("is local: a latent token changes only the pixels of its own and its neighbours' patches", function()
    local base = M.decoder:decode(IO.dec_latent)
    local z = IO.dec_latent:clone()
    -- latent [16, 2, 2, 3]; token (t=2, h=1, w=1) (1-based) is decoded into frames 2-5, rows and
    -- columns 1-8; its neighbours are t=1, h=2, w=2; the column w=3 (pixels 17-24) is two away
    for c = 1, 16 do z:set(z:get(c, 2, 1, 1) + 3.0, c, 2, 1, 1) end
    local moved = M.decoder:decode(z)
    local function diff(f0, f1, y0, ny, x0, nx)
      local a = base:narrow(1, f0, f1 - f0 + 1):narrow(2, y0, ny):narrow(3, x0, nx)
      local b = moved:narrow(1, f0, f1 - f0 + 1):narrow(2, y0, ny):narrow(3, x0, nx)
      return rel_l2(flat(b), flat(a))
    end
    assert.is_true(diff(2, 5, 1, 8, 1, 8) > 1e-3)        -- its own patch (frames 2-5, latent t=2)
    assert.are.equal(0, diff(1, 5, 1, 16, 17, 8))         -- the patch column w=3, two away
  end)

  it("checks the latent's shape", function()
    local ok, err = pcall(M.decoder.decode, M.decoder, adaspa.randn({8, 2, 2, 2}))
    assert.is_false(ok)
    assert.truthy(err:find("latent must be [16, T, h, w], got [8, 2, 2, 2]", 1, true))
  end)
end)

describe("tiny DiT", function()
  it("matches PyTorch's velocity through adaspa.models.hunyuan", function()
    local text = M.text:encode(META.prompt)
    local v = M.dit:forward(IO.dit_x, tonumber(META.dit_t), text, tonumber(META.dit_guidance))
    assert.are.equal(shape(IO.dit_velocity), shape(v))
    assert.is_true(rel_l2(flat(v), flat(IO.dit_velocity)) < 1e-4)
  end)
end)
