-- The CUDA backend: devices, the caching allocator, copies, fill, arange, randn, conversions,
-- each checked against the CPU. Skipped (and counted as skipped) without a GPU.

describe("cuda backend", function()
  it_gpu("lists devices with name, memory and capability", function()
    local devs = adaspa.cuda.devices()
    assert.is_true(#devs >= 1)
    assert.is_string(devs[1].name)
    assert.is_true(devs[1].memory > 2 ^ 30)
    assert.truthy(devs[1].capability:match("^%d+%.%d+$"))
    assert.is_true(devs[1].sms > 0)
  end)

  it_gpu("randn gives the same bits on the GPU as on the CPU", function()
    for _, dt in ipairs({"f32", "bf16", "f16"}) do
      for _, shape in ipairs({{1}, {7}, {257, 129}, {3, 5, 1000}}) do
        local c = adaspa.randn(shape, {seed = 1234, dtype = dt})
        local g = adaspa.randn(shape, {seed = 1234, dtype = dt, device = "cuda"})
        assert.equal("cuda:0", g:device())
        assert.equal(0, spec_maxdiff(c, g), dt)
        assert.equal(c:sum(), g:sum())
      end
    end
  end)

  it_gpu("copies between devices round trip exactly, strided views included", function()
    local c = adaspa.randn({33, 3, 5, 17}, {seed = 5})
    local g = c:to("cuda")
    assert.equal(0, spec_maxdiff(c, g:to("cpu")))
    -- a strided view of a GPU tensor, made contiguous on the GPU and copied back
    local gv = g:narrow(2, 2, 1):reshape({33, 5, 17}):transpose(1, 3)
    local cv = c:narrow(2, 2, 1):reshape({33, 5, 17}):transpose(1, 3)
    assert.is_false(gv:is_contiguous())
    assert.equal(0, spec_maxdiff(cv:contiguous(), gv:contiguous()))
    -- a strided CPU view straight to the GPU
    assert.equal(0, spec_maxdiff(cv, cv:to("cuda")))
  end)

  it_gpu("dtype conversions on the GPU match the CPU bit for bit", function()
    local src = adaspa.randn({1001}, {seed = 6})
    local special = adaspa.tensor({0 / 0, math.huge, -math.huge, 3.4e38, 1 + 2 ^ -8, 1 + 3 * 2 ^ -8,
      2 ^ -24, 2 ^ -26, 65504, 70000, -300.7, 300.7, 1e10, -1e10})
    for _, s in ipairs({src, special}) do
      local g = s:to("cuda")
      for _, dt in ipairs({"bf16", "f16", "i32", "i16", "u8"}) do
        local a = s:to(dt):to("f32"):totable()
        local b = g:to(dt):to("cpu"):to("f32"):totable()
        for i = 1, #a do
          local same = (a[i] == b[i]) or (a[i] ~= a[i] and b[i] ~= b[i])
          assert.is_true(same, string.format("%s element %d: cpu %s gpu %s", dt, i, tostring(a[i]), tostring(b[i])))
        end
      end
    end
  end)

  it_gpu("fill, full, zeros, arange and set/get work on the GPU", function()
    local z = adaspa.zeros({5, 7}, {device = "cuda", dtype = "bf16"})
    assert.equal(0, z:sum())
    z:narrow(2, 3, 2):fill(1.5)
    assert.equal(1.5 * 10, z:sum())
    local a = adaspa.arange(2, 50, 3, {device = "cuda", dtype = "i32"})
    assert.same(adaspa.arange(2, 50, 3, {dtype = "i32"}):totable(), a:totable())
    local f = adaspa.full({300, 301}, -0.25, {device = "cuda"})
    assert.equal(-0.25 * 300 * 301, f:sum())
    f:set(7, 300, 301)
    assert.equal(7, f:get(300, 301))
    assert.equal(7, f:max())
    local s = tostring(f)
    assert.truthy(s:find("cuda:0", 1, true), s)
    assert.truthy(s:find("-0.25", 1, true), s)
  end)

  it_gpu("copy writes into a strided GPU destination from the CPU", function()
    local dst = adaspa.zeros({6, 8}, {device = "cuda"})
    local src = adaspa.randn({6, 3}, {seed = 9})
    dst:narrow(2, 5, 3):copy(src)
    assert.equal(0, spec_maxdiff(dst:narrow(2, 5, 3), src))
    assert.equal(0, dst:narrow(2, 1, 4):norm())
  end)

  it_gpu("the caching allocator reuses freed blocks and keeps statistics", function()
    collectgarbage()
    adaspa.cuda.empty_cache()
    local m0 = adaspa.cuda.memory()
    local t = adaspa.empty({1024, 1024}, {device = "cuda"}) -- 4 MiB
    local m1 = adaspa.cuda.memory()
    assert.is_true(m1.allocated - m0.allocated >= 4 * 2 ^ 20)
    assert.is_true(m1.peak >= m1.allocated)
    t:free()
    local m2 = adaspa.cuda.memory()
    assert.equal(m0.allocated, m2.allocated)
    assert.is_true(m2.cached >= 4 * 2 ^ 20)
    local u = adaspa.empty({1024, 1024}, {device = "cuda"})
    local m3 = adaspa.cuda.memory()
    assert.equal(m2.mallocs, m3.mallocs) -- served from the cache
    assert.is_true(m3.reuses > m2.reuses)
    u:free()
    adaspa.cuda.empty_cache()
    assert.equal(0, adaspa.cuda.memory().cached)
  end)

  it_gpu("garbage tensors are collected under allocation pressure, so the peak stays bounded", function()
    collectgarbage()
    adaspa.cuda.synchronize()
    local step = adaspa.cuda.devices()[1].memory / 16 -- the allocator's pressure step
    local base = adaspa.cuda.memory().allocated
    adaspa.cuda.reset_peak()
    local chunk = 256 * 2 ^ 20
    local n = math.ceil(3 * step / chunk) -- three steps' worth of garbage, never freed by hand
    for i = 1, n do
      local t = adaspa.empty({chunk / 4}, {device = "cuda"})
      t:fill(i)
    end
    local peak = adaspa.cuda.memory().peak - base
    assert.is_true(peak <= step + 2 * chunk, string.format("peak %.2f GiB over the base, step %.2f GiB", peak / 2 ^ 30, step / 2 ^ 30))
  end)

  it_gpu("out of memory is an error naming the size and the memory free", function()
    local msg = spec_error(function() adaspa.empty({1024, 1024, 1024, 1024}, {device = "cuda", dtype = "u8"}) end,
      "adaspa.empty", "out of memory")
    assert.truthy(msg:find("free", 1, true), msg)
    -- and the device still works afterwards
    assert.equal(6, adaspa.full({2, 3}, 1, {device = "cuda"}):sum())
  end)

  it_gpu("a GPU that does not exist is a clear error", function()
    local n = #adaspa.cuda.devices()
    spec_error(function() adaspa.zeros({2}, {device = "cuda:" .. n}) end, "adaspa.zeros", "does not exist")
  end)
end)
