-- Several processes (issue 16, CPU side): the communicator (adaspa.comm) against naive references,
-- adaspa launch, failures that end every rank, Ulysses sequence parallelism of Wan giving the
-- one-process latents, and the head-work balance.

local parallel = require "adaspa.parallel"

-- Runs `adaspa launch -n N ARGS` with env (a shell prefix); returns stdout, stderr, status, seconds.
local function launch(n, args, env)
  local t0 = adaspa.now()
  local out, err, code = spec_run_env(env or "", "launch -n " .. n .. " " .. args)
  return out, err, code, adaspa.now() - t0
end

function spec_run_env(env, cmdline)
  local o, e = os.tmpname(), os.tmpname()
  local ok, how, status = os.execute(env .. " " .. spec_bin .. " " .. cmdline .. " > " .. o .. " 2> " .. e)
  local code = type(ok) == "number" and math.floor(ok / 256) or (how == "exit" and status or 128 + (status or 0))
  local function slurp(p) local f = io.open(p); local s = f and f:read("*a") or ""; if f then f:close() end; os.remove(p); return s end
  return slurp(o), slurp(e), code
end

-- SPEC_COMM_DEV=cuda: the tensors live on the GPU (with ADASPA_COMM_DEVICE=nccl their collectives
-- go by NCCL and their results stay there: counted as "on the GPU").
local COMM_SCRIPT = [[
local c = adaspa.comm.world()
local r, n = c:rank(), c:size()
local checks, on_gpu = 0, 0
local DEV = os.getenv("SPEC_COMM_DEV") or "cpu"
local function T(t) if DEV == "cpu" then return t end return t:to(DEV) end
local function R(t) -- a tensor result: where it is
  if DEV ~= "cpu" then
    assert(t:device() == "cuda:0", "rank " .. r .. ": a result on " .. t:device())
    if c:device_transport() == "nccl" then on_gpu = on_gpu + 1 end
  end
  return t
end
local function close(a, b, what)
  assert(#a == #b, what .. ": sizes " .. #a .. " vs " .. #b)
  for i = 1, #a do
    if math.abs(a[i] - b[i]) > 1e-6 * math.max(1, math.abs(b[i])) then
      error(string.format("rank %d: %s: element %d is %g, expected %g", r, what, i, a[i], b[i]))
    end
  end
  checks = checks + 1
end
local function flat(t) return t:to("cpu"):contiguous():reshape({-1}):totable() end
local function data(rank, len) -- rank-dependent values, not zeros
  local t = {}
  for i = 1, len do t[i] = (rank + 1) * 1000 + i * 0.5 - 3 * ((i * 7 + rank) % 5) end
  return t
end
-- all_gather of an odd shape [5, 3]
local x = T(adaspa.tensor(data(r, 15)):reshape({5, 3}))
local g = R(c:all_gather(x))
assert(g:shape()[1] == n and g:shape()[2] == 5 and g:shape()[3] == 3)
local want = {}
for q = 0, n - 1 do for _, v in ipairs(data(q, 15)) do want[#want + 1] = v end end
close(flat(g), want, "all_gather")
-- all_reduce sum and max: a tensor (f32) and a list (f64), 13 values
local sum, mx = {}, {}
for i = 1, 13 do sum[i], mx[i] = 0, -math.huge end
for q = 0, n - 1 do
  local d = data(q, 13)
  for i = 1, 13 do d[i] = d[i] * (((i + q) % 2 == 0) and 1 or -1); sum[i] = sum[i] + d[i]; mx[i] = math.max(mx[i], d[i]) end
end
local mine = data(r, 13)
for i = 1, 13 do mine[i] = mine[i] * (((i + r) % 2 == 0) and 1 or -1) end
close(c:all_reduce(mine, "sum"), sum, "all_reduce sum (list)")
close(c:all_reduce(mine, "max"), mx, "all_reduce max (list)")
close(flat(R(c:all_reduce(T(adaspa.tensor(mine)), "sum"))), sum, "all_reduce sum (tensor)")
close(flat(R(c:all_reduce(T(adaspa.tensor(mine)), "max"))), mx, "all_reduce max (tensor)")
-- all_to_all with uneven rows: rank q sends q + d + 1 rows of 3 to rank d, row values name (q, d, row)
local function rows(q, d) local t = {} for k = 1, q + d + 1 do for j = 1, 3 do t[#t + 1] = q * 100 + d * 10 + k + j / 8 end end return t end
local send, sr, rr, expect = {}, {}, {}, {}
for d = 0, n - 1 do
  for _, v in ipairs(rows(r, d)) do send[#send + 1] = v end
  sr[d + 1], rr[d + 1] = r + d + 1, d + r + 1
  for _, v in ipairs(rows(d, r)) do expect[#expect + 1] = v end
end
close(flat(R(c:all_to_all(T(adaspa.tensor(send):reshape({#send / 3, 3})), sr, rr))), expect, "all_to_all")
-- Ulysses exchange: S = 7 tokens, H = 5 heads, D = 4; uneven tokens, a scattered head assignment
local S, H, D = 7, 5, 4
local X = T(adaspa.randn({S, H, D}, {seed = 11}))
local tokens = parallel.split(S, n)
local heads = n == 3 and {{5, 1}, {3}, {2, 4}} or (n == 2 and {{4, 1, 2}, {5, 3}} or {{1, 2, 3, 4, 5}})
local first = 1
for q = 1, r do first = first + tokens[q] end
local xr = X:narrow(1, first, tokens[r + 1])
local y = R(c:seq_to_heads(xr, tokens, heads))
local mineh = heads[r + 1]
assert(y:shape()[1] == S and y:shape()[2] == #mineh and y:shape()[3] == D)
local ok_heads = 0
for j, h in ipairs(mineh) do close(flat(y:narrow(2, j, 1)), flat(X:narrow(2, h, 1)), "seq_to_heads head " .. h); ok_heads = ok_heads + 1 end
checks = checks - ok_heads + 1
close(flat(R(c:heads_to_seq(y, tokens, heads))), flat(xr), "heads_to_seq")
c:barrier()
io.stderr:write(string.format("rank %d of %d: %d checks passed (%d on the GPU by %s)\n", r, n, checks, on_gpu,
  c:device_transport() or "host"))
]]

describe("adaspa.comm", function()
  it("is one rank without the environment, and its collectives are copies", function()
    local c = adaspa.comm.world()
    assert.equal(0, c:rank()); assert.equal(1, c:size()); assert.equal("single", c:transport())
    local x = adaspa.randn({3, 2}, {seed = 3})
    local g = c:all_gather(x)
    assert.same({1, 3, 2}, g:shape())
    assert.same(x:reshape({-1}):totable(), g:reshape({-1}):totable())
    assert.same({2.5, -1}, c:all_reduce({2.5, -1}, "max"))
  end)

  for _, n in ipairs({2, 3}) do
    it("all_gather, all_reduce, all_to_all and the Ulysses exchange match naive references on " .. n .. " processes", function()
      local p = spec_tmpfile("local parallel = require 'adaspa.parallel'\n" .. COMM_SCRIPT)
      local out, err, code = launch(n, p)
      os.remove(p)
      assert.equal(0, code, err)
      for r = 1, n - 1 do
        assert.truthy(err:find(string.format("[rank %d] rank %d of %d: 8 checks passed", r, r, n), 1, true), err)
      end
      assert.truthy(err:find(string.format("rank 0 of %d: 8 checks passed", n), 1, true), err)
      assert.equal("", out)
    end)
  end

  it("a peer that dies makes the others' calls fail naming it, at once (no hang)", function()
    local p = spec_tmpfile([[
      local c = adaspa.comm.world()
      if c:rank() == 1 then os.execute("kill -9 $PPID") end -- the shell's parent: rank 1 itself
      local ok, e = pcall(c.barrier, c)
      assert(not ok)
      io.stderr:write("caught: " .. tostring(e) .. "\n")
      error(e, 0)
    ]])
    local _, err, code, secs = launch(3, p, "ADASPA_COMM_TIMEOUT=60")
    os.remove(p)
    assert.equal(137, code, err) -- the first failing rank's status (128 + SIGKILL)
    assert.truthy(err:find("adaspa launch: rank 1 %(pid %d+%) was killed by signal 9"), err)
    assert.truthy(err:find("rank 1 %(pid %d+%) died"), err)
    assert.truthy(err:find("adaspa launch: rank 1 (pid", 1, true), err)
    assert.truthy(secs < 20, "took " .. secs .. " s")
  end)

  it("a peer that does not arrive within ADASPA_COMM_TIMEOUT is an error naming it", function()
    local p = spec_tmpfile([[
      local c = adaspa.comm.world()
      if c:rank() == 1 then local t = adaspa.now() while adaspa.now() - t < 1.5 do end end
      c:all_reduce({1}, "sum")
    ]])
    local _, err, code, secs = launch(2, p, "ADASPA_COMM_TIMEOUT=0.3")
    os.remove(p)
    assert.are_not.equal(0, code)
    assert.truthy(err:find("rank 0: rank 1 did not arrive within 0.3 s", 1, true), err)
    assert.truthy(secs < 20, "took " .. secs .. " s")
  end)

  it("forwards Ctrl-C to every rank and exits 130, removing the shared file", function()
    local p = spec_tmpfile([[
      local c = adaspa.comm.world()
      io.stderr:write(string.format("ready %d %s\n", c:rank(), os.getenv("ADASPA_COMM"))) -- one write: ranks share stderr
      while true do c:barrier() end
    ]])
    local log = os.tmpname()
    local f = io.popen(string.format("%s launch -n 2 %s 2> %s & P=$!; sleep 3; kill -INT $P; wait $P; echo rc=$?", spec_bin, p, log))
    local res = f:read("*a")
    f:close()
    local err = io.open(log):read("*a")
    os.remove(p); os.remove(log)
    assert.truthy(res:find("rc=130", 1, true), res .. err)
    assert.truthy(err:find("rank 1 %(pid %d+%) failed with status 130"), err) -- each rank got the SIGINT
    assert.truthy(err:find("rank 0 %(pid %d+%) failed with status 130"), err)
    local shm = err:match("ready 0 (%S+)")
    assert.truthy(shm, err)
    assert.is_nil(io.open(shm))
  end)

  it("refuses a world without its shared file, and bad sizes", function()
    local _, err, code = spec_run_env("ADASPA_WORLD_SIZE=2 ADASPA_RANK=0 ADASPA_COMM=", [[-e "adaspa.comm.world()"]])
    assert.equal(1, code)
    assert.truthy(err:find("world size 2 needs the shared file", 1, true), err)
    local help, _, hc = spec_run_env("", "help launch")
    assert.equal(0, hc)
    assert.truthy(help:find("adaspa launch -n N", 1, true), help)
    local _, err2, code2 = spec_run_env("", "launch -n 0 x.lua")
    assert.equal(2, code2)
    assert.truthy(err2:find("-n must be 1..64", 1, true), err2)
  end)
end)

-- The NCCL device transport (ADASPA_COMM_DEVICE=nccl, adaspa launch --nccl). Its collectives run
-- on a GPU (tagged gpu: the lead runs them on the GPU machine); what the CPU can check runs here.
local function gpu_count()
  local f = io.popen("nvidia-smi -L 2>/dev/null")
  local n = 0
  for line in f:lines() do if line:match("^GPU %d+") then n = n + 1 end end
  f:close()
  return n
end

describe("NCCL transport", function()
  it("is asked for by ADASPA_COMM_DEVICE=nccl, and without NCCL or a GPU that is an error naming why", function()
    local p = spec_tmpfile("local c = adaspa.comm.world() io.stderr:write('transport ', tostring(c:device_transport()), '\\n')")
    local _, err0, code0 = spec_run_env("", p)
    assert.equal(0, code0, err0)
    assert.truthy(err0:find("transport nil", 1, true), err0)           -- the default: host copies
    local _, errh, codeh = spec_run_env("ADASPA_COMM_DEVICE=host", p)
    assert.equal(0, codeh, errh)
    local _, errb, codeb = spec_run_env("ADASPA_COMM_DEVICE=mpi", p)
    assert.equal(1, codeb)
    assert.truthy(errb:find('ADASPA_COMM_DEVICE must be "host" or "nccl", got "mpi"', 1, true), errb)
    if not has_gpu then
      local _, err, code = spec_run_env("ADASPA_COMM_DEVICE=nccl", p)
      assert.equal(1, code)
      if adaspa.comm.device_built() == "nccl" then
        assert.truthy(err:find("ADASPA_COMM_DEVICE=nccl, but rank 0 sees no GPU", 1, true), err)
      else
        assert.truthy(err:find("this build has no NCCL transport", 1, true), err)
      end
      -- launched: every rank fails naming why, the launcher with the first failing rank's status
      local _, errl, codel = launch(2, "--nccl " .. p)
      assert.equal(1, codel)
      assert.truthy(errl:find("adaspa.comm.world", 1, true), errl)
    end
    os.remove(p)
    local _, errc, codec = spec_run_env("CUDA_VISIBLE_DEVICES=3", "launch -n 2 --nccl x.lua")
    assert.equal(2, codec)
    assert.truthy(errc:find("--nccl: 2 ranks need 2 GPUs, CUDA_VISIBLE_DEVICES=3 lists 1", 1, true), errc)
  end)

  local dev_script = "local parallel = require 'adaspa.parallel'\n" .. COMM_SCRIPT
  it_gpu("runs all_gather, all_reduce, all_to_all and the Ulysses exchange on GPU tensors, 1 rank (one GPU)", function()
    assert.equal("nccl", adaspa.comm.device_built(), "this GPU build has no NCCL transport (make printed why)")
    local p = spec_tmpfile(dev_script)
    local out, err, code = spec_run_env("SPEC_COMM_DEV=cuda ADASPA_COMM_DEVICE=nccl ADASPA_COMM_TIMEOUT=120", p)
    os.remove(p)
    assert.equal(0, code, err)
    assert.truthy(err:find("rank 0 of 1: 8 checks passed (6 on the GPU by nccl)", 1, true), err)
    assert.equal("", out)
  end)

  local ngpu = has_gpu and gpu_count() or 0
  if ngpu >= 2 then
    it_gpu("runs them on 2 ranks, one GPU each (adaspa launch -n 2 --nccl), as the host transport does", function()
      local p = spec_tmpfile(dev_script)
      local out, err, code = launch(2, "--nccl " .. p, "SPEC_COMM_DEV=cuda ADASPA_COMM_TIMEOUT=120")
      os.remove(p)
      assert.equal(0, code, err)
      assert.truthy(err:find("[rank 1] rank 1 of 2: 8 checks passed (6 on the GPU by nccl)", 1, true), err)
      assert.truthy(err:find("rank 0 of 2: 8 checks passed (6 on the GPU by nccl)", 1, true), err)
      assert.equal("", out)
    end)
    it_gpu("a rank killed during a stream of GPU collectives ends the other with an error naming it, bounded (2 GPUs)", function()
      local p = spec_tmpfile([[
local c = adaspa.comm.world()
local x = adaspa.randn({4096, 4096}, {seed = 1}):to("cuda") -- 64 MB
c:all_gather(x:narrow(1, 1, 8))
if c:rank() == 1 then os.execute("(sleep 1; kill -9 $PPID) &") end -- $PPID: this adaspa
for _ = 1, 100000 do c:all_to_all(x, {2048, 2048}, {2048, 2048}):free() end
]])
      local _, err, code, secs = launch(2, "--nccl " .. p, "ADASPA_COMM_TIMEOUT=60")
      os.remove(p)
      assert.truthy(code ~= 0, err)
      assert.truthy(err:find("adaspa launch: rank 1 %(pid %d+%) was killed by signal 9"), err)
      -- rank 0's error names rank 1: from its host-side size agreement ("rank 0: rank 1 (pid N) died
      -- before ..."), its NCCL wait ("died during the call") or NCCL's own error ("; rank 1 (pid N) is gone")
      assert.truthy(err:find("comm [%w_]+: rank 0: .*rank 1 %(pid %d+%)"), err)
      assert.truthy(secs < 30, "it ended in " .. secs .. " s")
    end)
  else
    pending("NCCL on 2 ranks #gpu (needs 2 GPUs; nvidia-smi -L lists " .. ngpu .. ")")
  end
end)

describe("adaspa.parallel head balance", function()
  it("greedy longest-first balances kept blocks better than contiguous ranges", function()
    local work = {0.9, 0.8, 0.7, 0.6, 0.1, 0.1, 0.1, 0.1}
    local plain = parallel.contiguous(8, 2)
    assert.same({{1, 2, 3, 4}, {5, 6, 7, 8}}, plain)
    local bal = parallel.balance(work, 2)
    -- 0.9 -> r1, 0.8 -> r2, 0.7 -> r2 (0.8 < 0.9), 0.6 -> r1, then the 0.1s alternate (ties: lower rank)
    assert.same({{1, 4, 5, 7}, {2, 3, 6, 8}}, bal)
    assert.near(3.0 / 1.7, parallel.imbalance(work, plain), 1e-12)
    assert.near(1.7 / 1.7, parallel.imbalance(work, bal), 1e-12)
    assert.same({{2}, {1}, {3}}, parallel.balance({0.5, 0.9, 0.1}, 3))
  end)
end)

-- Rows of per-head state moved between assignments (sp:move_layer) and gathered to rank 0
-- (sp:gather_cache), on 3 processes: every rank builds the same global cache (5 heads, masks and
-- LSE rows that name their head), keeps its heads of a scattered uneven assignment, moves them to
-- another and gathers them back.
local MOVE_SCRIPT = [[
local parallel = require "adaspa.parallel"
local c = adaspa.comm.world()
local sp = parallel.new(c)
local me = c:rank() + 1
local H, nqb, nkb, S = 5, 3, 3, 150
local function global_mask(h)
  local t = {}
  for q = 1, nqb do for k = 1, nkb do t[#t + 1] = (k == q or (k + q + h) % 3 == 0) and 1 or 0 end end
  return t
end
local function global_lse(h) local t = {} for i = 1, S do t[i] = h * 10 + i / 8 end return t end
local function cache_of(heads) -- the global cache's rows of heads (layer 2 of 2; layer 1 empty)
  local m, l, rec = {}, {}, {}
  for j, h in ipairs(heads) do
    for _, x in ipairs(global_mask(h)) do m[#m + 1] = x end
    for _, x in ipairs(global_lse(h)) do l[#l + 1] = x end
    rec[j] = 0.5 + h / 16
  end
  local cache = adaspa.Cache.new(2)
  local layout = adaspa.layout.from_mask(adaspa.tensor(m):reshape({#heads, nqb, nkb}):to("u8"), 64)
  cache:set(2, {layout = layout, step = 3, recall = rec})
  cache:set(2, {lse = adaspa.tensor(l):reshape({#heads, S}), step = 5})
  return cache
end
local function flat(t) return t:contiguous():reshape({-1}):totable() end
local function same(a, b, what)
  assert(#a == #b, what .. ": sizes " .. #a .. " vs " .. #b)
  for i = 1, #a do if a[i] ~= b[i] then error(string.format("rank %d: %s: element %d is %g, expected %g", me - 1, what, i, a[i], b[i])) end end
end
local function check(cache, heads, what)
  local want = cache_of(heads)
  same(flat(cache:layout(2):to_mask():to("f32")), flat(want:layout(2):to_mask():to("f32")), what .. " mask")
  same(flat(cache:lse(2)), flat(want:lse(2)), what .. " lse")
  same(cache:recall(2), want:recall(2), what .. " recall")
  assert(cache:step(2) == 3 and cache:lse_step(2) == 5, what .. ": steps")
  assert(cache:layout(1) == nil and cache:lse(1) == nil, what .. ": layer 1 stays empty")
end
local old = {{5, 1}, {3}, {2, 4}}
local new = {{2}, {4, 3, 1}, {5}}
local cache = cache_of(old[me])
sp.assignment["2:1"] = old
sp:move_layer(cache, 2, old, new, H)
check(cache, new[me], "moved")
sp.assignment["2:1"] = new
local full = sp:gather_cache(cache, 2, 1)
if me == 1 then check(full, {1, 2, 3, 4, 5}, "gathered") end
-- a rebalance without gain moves nothing: every head keeps the same blocks (equal work), so the
-- greedy split {1, 4}, {2, 5}, {3} is no better than the contiguous {1, 2}, {3, 4}, {5}
local eq = adaspa.Cache.new(2)
local plain = parallel.contiguous(H, 3)
local ones = {}
for _ = 1, #plain[me] do for q = 1, nqb do for k = 1, nkb do ones[#ones + 1] = k <= q and 1 or 0 end end end
eq:set(2, {layout = adaspa.layout.from_mask(adaspa.tensor(ones):reshape({#plain[me], nqb, nkb}):to("u8"), 64), step = 1})
sp:rebalance({cache = eq, step = 1}, H, {layer = 2}, "2:2")
assert(sp.assignment["2:2"] == nil and sp.last_balance["2:2"].moved == false, "an equal-work rebalance moved heads")
assert(math.abs(sp.last_balance["2:2"].after - sp.last_balance["2:2"].before) < 1e-12)
io.stderr:write(string.format("rank %d: moved and gathered\n", me - 1))
]]

-- Moves sparse heads at 720p size (1857 x 1857 blocks of 64) between 2 ranks: the layouts arrive
-- exactly, and the bytes sent are a fraction of the f16 masks of the same heads.
local MOVE_BIG_SCRIPT = [[
local parallel = require "adaspa.parallel"
local c = adaspa.comm.world()
local sp = parallel.new(c)
local me = c:rank() + 1
local n, H = 1857, 4
local mass = adaspa.softmax(adaspa.randn({H, n, n}, {seed = 5}))
local global = adaspa.layout.topk(mass, {density = {0.05, 0.1, 0.2, 0.1}})
mass:free()
local old, new = {{1, 2}, {3, 4}}, {{3, 1}, {4, 2}}
local cache = adaspa.Cache.new(1)
cache:set(1, {layout = global:select(old[me]), step = 2, recall = {0.5, 0.6}})
sp:move_layer(cache, 1, old, new, H)
assert(cache:layout(1):encode() == global:select(new[me]):encode(), "the moved layout differs")
assert(cache:step(1) == 2, "step kept")
local m = sp.moved
assert(m.heads == 1, "one head left each rank, got " .. m.heads)
assert(m.layout_bytes * 4 < m.mask_bytes, string.format("sent %d bytes, f16 masks %d", m.layout_bytes, m.mask_bytes))
io.stderr:write(string.format("rank %d: moved %d bytes for %d bytes of masks\n", me - 1, m.layout_bytes, m.mask_bytes))
]]

describe("adaspa.parallel per-head state", function()
  it("moves a layer's layout, recall and LSE rows with their heads and gathers every head to rank 0 (3 processes)", function()
    local p = spec_tmpfile(MOVE_SCRIPT)
    local out, err, code = launch(3, p)
    os.remove(p)
    assert.equal(0, code, err)
    for r = 1, 2 do assert.truthy(err:find(string.format("[rank %d] rank %d: moved and gathered", r, r), 1, true), err) end
    assert.truthy(err:find("rank 0: moved and gathered", 1, true), err)
    assert.equal("", out)
  end)

  it("moves sparse 720p layouts as compact messages, a fraction of their f16 masks (2 processes)", function()
    local p = spec_tmpfile(MOVE_BIG_SCRIPT)
    local out, err, code = launch(2, p)
    os.remove(p)
    assert.equal(0, code, err)
    -- rank 0 sends head 2 (density 0.1), rank 1 head 3 (0.2): 2-byte indices and 1858 offsets
    local mask = 1857 * 1857 * 2
    for r, d in ipairs({0.1, 0.2}) do
      local b, mb = err:match(string.format("rank %d: moved (%%d+) bytes for (%%d+) bytes of masks", r - 1))
      assert.truthy(b, err)
      assert.equal(mask, tonumber(mb))
      assert.equal(40 + 1858 * 8 + 1857 * math.floor(d * 1857 + 0.5) * 2, tonumber(b))
      assert.truthy(tonumber(b) * (r == 1 and 9 or 4) < mask, err) -- 9.8x and 4.9x smaller
    end
  end)
end)

-- Runs recipe (a command line) as 1 process and as each of ns processes; asserts the latents and
-- the saved caches are bit-identical to the 1-process run's; returns the folders' base (caller
-- removes base-*) .
local function same_as_one(recipe, ns, caches)
  local base = os.tmpname()
  os.remove(base)
  local tmp = base .. "-scratch"
  assert(os.execute("mkdir -p " .. tmp) == 0)
  local _, err, code = spec_run_env("", "recipe " .. recipe .. " output.dir=" .. base .. "-1")
  assert.equal(0, code, err)
  local ref = adaspa.safetensors.load(base .. "-1/latents.safetensors").latents:reshape({-1}):totable()
  local norm = 0
  for i = 1, #ref do norm = norm + ref[i] ^ 2 end
  assert.truthy(norm > 1, "latents are not zeros")
  local function slurp(path) local f = io.open(path, "rb"); if not f then return nil end local s = f:read("*a"); f:close(); return s end
  for _, n in ipairs(ns) do
    local out, err2, code2 = launch(n, "recipe " .. recipe .. " output.dir=" .. base .. "-" .. n, "TMPDIR=" .. tmp)
    assert.equal(0, code2, err2)
    assert.truthy(out:find(n .. " processes (shm), Ulysses", 1, true), out)
    local got = adaspa.safetensors.load(base .. "-" .. n .. "/latents.safetensors").latents:reshape({-1}):totable()
    assert.equal(#ref, #got)
    local differ, worst = 0, 0
    for i = 1, #ref do
      if ref[i] ~= got[i] then differ, worst = differ + 1, math.max(worst, math.abs(ref[i] - got[i])) end
    end
    assert.truthy(differ == 0, string.format("%d processes: %d of %d latent values differ (max %.3g)", n, differ, #ref, worst))
    for _, f in ipairs(caches or {}) do -- written once, by rank 0, holding every rank's heads
      local a, b = slurp(base .. "-1/" .. f), slurp(base .. "-" .. n .. "/" .. f)
      assert.truthy(a and #a > 1000, f .. " of the 1-process run")
      assert.truthy(a == b, string.format("%d processes: %s differs from the 1-process run's", n, f))
    end
    -- ranks other than 0 wrote to scratch folders that are gone
    local ls = io.popen("ls -A " .. tmp):read("*a")
    assert.equal("", ls)
  end
  os.execute("rm -rf " .. tmp)
  return base
end

describe("Ulysses sequence parallelism (Wan, CPU)", function()
  local recipe = "recipes/wan.lua output.previews=false output.pictures=false sampler.steps=4 model.heads=4 "
  for _, pol in ipairs({
      {"dense", "attention.policy=dense"},
      -- head-adaptive tiers that differ per head (no first-frame sink, every head ranked): the tiers
      -- must come from every rank's recalls
      {"adaspa", "attention.policy=adaspa attention.sparsity=0.6 attention.recall_cut=0 attention.first_frame_sink=false "
        .. "video.width=384 video.height=256"}}) do
    it("2 and 3 processes give the one-process latents and caches, bit for bit (" .. pol[1] .. ")", function()
      local sparse = pol[1] == "adaspa"
      local base = same_as_one(recipe .. pol[2], {2, 3}, sparse and {"cache.safetensors", "cache_branch2.safetensors"} or nil)
      if sparse then
        -- the per-head densities differ (the tiers are exercised), and the sparse steps ran on
        -- rebalanced heads (the layout and LSE rows moved with them: a wrong move changes the latents)
        local rep = io.open(base .. "-3/report.txt"):read("*a")
        local plain, applied = rep:match("([%d.]+) with contiguous heads, ([%d.]+) as run")
        assert.truthy(plain, rep)
        assert.truthy(tonumber(applied) < tonumber(plain) - 0.1, rep)
      end
      os.execute("rm -rf " .. base .. "-1 " .. base .. "-2 " .. base .. "-3")
    end)
  end

  it("image-to-video (small_i2v): 2 processes give the one-process latents, bit for bit", function()
    local base = same_as_one("recipes/wan_i2v.lua output.previews=false output.pictures=false sampler.steps=3 model.heads=4 "
      .. "attention.policy=dense", {2})
    local rep = io.open(base .. "-2/report.txt"):read("*a")
    assert.truthy(rep:find("image-to-video", 1, true) and rep:find("SYNTHETIC image states", 1, true), rep)
    os.execute("rm -rf " .. base .. "-1 " .. base .. "-2")
  end)

  it("names the limits: more ranks than heads, a model without sequence parallelism", function()
    local _, err, code = launch(3, "recipe recipes/wan.lua sampler.steps=1 output.previews=false output.dir=/tmp/adaspa-spec-noheads")
    assert.are_not.equal(0, code)
    assert.truthy(err:find("2 attention heads cannot be split over 3 ranks", 1, true), err)
    os.execute("rm -rf /tmp/adaspa-spec-noheads")
    local p = spec_tmpfile([[
      local pipeline = require "adaspa.jobs.pipeline"
      local entry = {name = "toy", attention_layers = function() return 1 end}
      local ok, e = pcall(pipeline.run_schedule, {}, {entry = entry}, {name = "dense", mode = function() return "dense" end}, print)
      assert(not ok)
      io.stderr:write(string.format("rank %d: %s\n", adaspa.comm.world():rank(), e))
    ]])
    local _, err2, code2 = launch(2, p)
    os.remove(p)
    assert.equal(0, code2, err2)
    assert.truthy(err2:find("model toy does not run sequence-parallel yet (2 processes)", 1, true), err2)
    assert.truthy(err2:find("use a model that does (hunyuan, wan)", 1, true), err2)
  end)
end)

-- The parallel lines of a run's report.txt: contiguous and as-run imbalance, and per search
-- {step, before, after}.
local function balance_lines(path)
  local f = assert(io.open(path))
  local rep = f:read("*a")
  f:close()
  local plain, applied = rep:match("([%d.]+) with contiguous heads, ([%d.]+) as run")
  local searches = {}
  for st, b, a in rep:gmatch("search at step (%d+): imbalance of its layouts ([%d.]+) on the heads it ran with, ([%d.]+) rebalanced") do
    searches[#searches + 1] = {step = tonumber(st), before = tonumber(b), after = tonumber(a)}
  end
  return {plain = tonumber(plain), applied = tonumber(applied), searches = searches, text = rep}
end

describe("Ulysses sequence parallelism (HunyuanVideo, CPU)", function()
  -- 5 heads: uneven splits on 2 (3 + 2) and 3 (2 + 2 + 1) processes; 768 video tokens sharded,
  -- 32 text tokens on every rank, split by heads in the joint attention
  local recipe = "recipes/hunyuan.lua output.previews=false output.pictures=false output.video=false sampler.steps=6 "
    .. "model.heads=5 video.width=256 video.height=256 video.frames=9 "
  it("2 and 3 processes give the one-process latents, bit for bit (dense)", function()
    local base = same_as_one(recipe .. "attention.policy=dense", {2, 3})
    os.execute("rm -rf " .. base .. "-1 " .. base .. "-2 " .. base .. "-3")
  end)

  it("2 and 3 processes give the one-process latents and cache (AdaSpa tiers, heads rebalanced from the first search)", function()
    local base = same_as_one(recipe .. "attention.policy=adaspa attention.sparsity=0.6 attention.recall_cut=0",
      {2, 3}, {"cache.safetensors"})
    for _, n in ipairs({2, 3}) do
      local r = balance_lines(base .. "-" .. n .. "/report.txt")
      assert.truthy(r.text:find(n .. " processes (shm)", 1, true), r.text)
      -- two searches (steps 1 and 4); the first one's layouts already moved heads
      assert.equal(2, #r.searches, r.text)
      assert.equal(1, r.searches[1].step)
      assert.truthy(r.searches[1].after < r.searches[1].before - 0.05, r.text)
      assert.truthy(r.applied < r.plain - 0.05, r.text)
    end
    os.execute("rm -rf " .. base .. "-1 " .. base .. "-2 " .. base .. "-3")
  end)
end)

describe("head balance at the first search", function()
  it("with a single search, the sparse steps after it run on balanced heads (3 processes, HunyuanVideo)", function()
    -- one search (step 1): no later search could balance; the rebalance right after it must
    local base = same_as_one("recipes/hunyuan.lua output.previews=false output.pictures=false output.video=false sampler.steps=4 "
      .. "model.heads=4 video.width=256 video.height=256 video.frames=9 attention.policy=adaspa attention.sparsity=0.6 "
      .. "attention.recall_cut=0 attention.warmup=1 attention.search={1}", {3}, {"cache.safetensors"})
    local r = balance_lines(base .. "-3/report.txt")
    assert.equal(1, #r.searches, r.text)
    assert.equal(1, r.searches[1].step)
    -- 4 heads of two tiers on 3 ranks: the contiguous split (2, 1, 1) has two heavy heads together
    assert.truthy(r.plain > 1.2, r.text)
    assert.truthy(r.applied < r.plain - 0.2, r.text)
    assert.near(r.searches[1].before, r.plain, 1e-3)
    assert.near(r.searches[1].after, r.applied, 1e-3)
    -- the sparse steps ran on them
    assert.truthy(r.text:find("steps      sparse   2 steps", 1, true), r.text)
    os.execute("rm -rf " .. base .. "-1 " .. base .. "-3")
  end)
end)
