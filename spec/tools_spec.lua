-- recipes/tools/encode_text.py and decode_latents.py. Their end-to-end test needs torch
-- (recipes/tools/test_tools.sh, not part of make test); here: the embeddings file encode_text.py
-- wrote from tiny random HunyuanVideo text encoders (spec/fixtures/text_hunyuan_tiny.safetensors,
-- written by `test_tools.sh --fixture`) is what adaspa's loader takes, and the tools' command
-- lines parse without torch.

local text = require "adaspa.text"
local fixture = "spec/fixtures/text_hunyuan_tiny.safetensors"

describe("encode_text.py's embeddings file (hunyuan, tiny encoders)", function()
  local t, meta
  setup(function() t, meta = adaspa.safetensors.load(fixture) end)

  it("says what wrote it and from what", function()
    assert.equal("adaspa.text", meta.format)
    assert.equal("hunyuan", meta.model)
    assert.equal("a red fox running through fresh snow at dawn", meta.prompt)
    assert.equal("blurry, low quality", meta.negative_prompt)
    assert.equal("32", meta.text_len)
  end)

  it("text.load accepts it: states [L, D], pooled [1, P], the valid count from the mask", function()
    local L, D, P = tonumber(meta.text_len), tonumber(meta.text_dim), tonumber(meta.pooled_dim)
    local c = text.load(fixture, {text_len = L, text_dim = D, pooled_dim = P})
    assert.same({L, D}, c.states:shape())
    assert.same({1, P}, c.pooled:shape())
    local mask = spec_flat(t.text_mask)
    local n = 0
    for _, v in ipairs(mask) do n = n + v end
    assert.equal(n, c.valid)
    assert.is_true(c.valid > 1 and c.valid < L) -- 9 words and <|eot_id|>, then padding
    assert.equal(0, spec_maxdiff(c.states, t.text_states))
    assert.is_true(c.states:narrow(1, 1, c.valid):norm() > 0)
  end)

  it("the negative prompt's tensors follow the same rules", function()
    local L, D, P = tonumber(meta.text_len), tonumber(meta.text_dim), tonumber(meta.pooled_dim)
    assert.same({L, D}, t.negative_text_states:shape())
    assert.same({L}, t.negative_text_mask:shape())
    assert.same({P}, t.negative_text_pooled:shape())
    local m = spec_flat(t.negative_text_mask)
    local n = 0
    for i, v in ipairs(m) do
      if v ~= 0 then assert.equal(n, i - 1, "1s then 0s"); n = i end
    end
    assert.is_true(n >= 1)
    assert.is_true(spec_maxdiff(t.negative_text_states, t.text_states) > 1e-3)
  end)

  it("a recipe expecting other sizes gets the loader's error naming the tensor and both shapes", function()
    spec_error(function() text.load(fixture, {text_len = 256, text_dim = 4096, pooled_dim = 768}) end,
      "text_states has shape [32, 64], expected [256, 4096]")
  end)
end)

describe("the tools' command lines (no torch needed)", function()
  local has_py = os.execute("command -v python3 > /dev/null 2>&1") == 0
  local function py(args)
    local f = io.popen("python3 " .. args .. " 2>&1; echo rc=$?")
    local s = f:read("*a")
    f:close()
    return s
  end

  it("encode_text.py --help names every option; a wrong model or length is refused", function()
    if not has_py then return pending("needs python3") end
    local s = py("recipes/tools/encode_text.py --help")
    assert.truthy(s:find("rc=0", 1, true), s)
    for _, o in ipairs({"--model", "--weights", "--prompt", "--negative", "--out", "--max-length", "--device", "--dtype"}) do
      assert.truthy(s:find(o, 1, true), o)
    end
    s = py("recipes/tools/encode_text.py --model sd --weights x --prompt p --out o.safetensors")
    assert.truthy(s:find("invalid choice", 1, true) and s:find("rc=2", 1, true), s)
    s = py("recipes/tools/encode_text.py --model wan --weights x --prompt p --out o.safetensors --max-length 0")
    assert.truthy(s:find("--max-length must be in 1..4096", 1, true) and s:find("rc=2", 1, true), s)
    s = py("recipes/tools/encode_text.py --model wan --weights x --prompt p --out o.pt")
    assert.truthy(s:find("--out must end in .safetensors", 1, true), s)
  end)

  it("decode_latents.py --help names every option; a bad fps is refused", function()
    if not has_py then return pending("needs python3") end
    local s = py("recipes/tools/decode_latents.py --help")
    assert.truthy(s:find("rc=0", 1, true), s)
    for _, o in ipairs({"--model", "--weights", "--latents", "--out", "--fps", "--no-tiling", "--no-mp4"}) do
      assert.truthy(s:find(o, 1, true), o)
    end
    s = py("recipes/tools/decode_latents.py --model wan --weights x --latents l --out d --fps 0")
    assert.truthy(s:find("--fps must be in 1..240", 1, true) and s:find("rc=2", 1, true), s)
  end)
end)
