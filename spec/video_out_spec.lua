-- The mp4 of the previews: outdir:encode_video (runtime/io/video.c: ffmpeg as a child process
-- with a fixed argument vector, pipes, a timeout, a size cap, Ctrl-C, always reaped),
-- adaspa.video_out and the main job's video.mp4. Specs that need the real ffmpeg are pending
-- (saying so) only when it is absent; the process handling is checked with stand-in programs.

local has_ffmpeg = adaspa.outdir.ffmpeg() ~= nil

-- Runs the binary with environment assignments before it ("A=1 B=2"): stdout, stderr, status.
local function spec_run_env(env, cmdline)
  local o, e = os.tmpname(), os.tmpname()
  local code = os.execute(env .. " " .. spec_bin .. " " .. cmdline .. " < /dev/null > " .. o .. " 2> " .. e)
  if type(code) == "number" and code > 255 then code = math.floor(code / 256) end
  local so, se = spec_slurp(o), spec_slurp(e)
  os.remove(o); os.remove(e)
  return so, se, code
end

-- Mean of the bytes of a tensor (any dtype).
local function mean(t)
  local v = spec_flat(t)
  local s = 0
  for i = 1, #v do s = s + v[i] end
  return s / #v
end
local function need_ffmpeg()
  if has_ffmpeg then return true end
  local _, why = adaspa.outdir.ffmpeg()
  pending("needs ffmpeg (make deps installs Debian's ffmpeg): " .. tostring(why))
  return false
end

local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1"))
  local s = f:read("*a")
  f:close()
  return s
end

-- ffprobe's view of the first video stream: codec, width, height, frames (decoded), rate.
local function probe(path)
  local s = sh("ffprobe -v error -count_frames -select_streams v:0 -show_entries " ..
    "stream=codec_name,width,height,nb_read_frames,r_frame_rate,pix_fmt -of default=noprint_wrappers=1 " .. path)
  local r = {}
  for k, v in s:gmatch("([%w_]+)=([^\n]*)") do r[k] = tonumber(v) or v end
  return r, s
end

-- Frames [T, H, W, 3]: frame t is a horizontal ramp plus a level of 40 + 40 t (smooth, so the
-- encoder keeps it closely), different in every frame.
local function ramp_frames(T, H, W)
  local v = {}
  for t = 0, T - 1 do
    for y = 0, H - 1 do
      for x = 0, W - 1 do
        local base = 40 + 40 * t + math.floor(60 * x / W)
        v[#v + 1] = math.min(255, base)
        v[#v + 1] = math.min(255, base + 10)
        v[#v + 1] = math.min(255, 255 - base)
      end
    end
  end
  return adaspa.tensor(v, {dtype = "u8"}):reshape({T, H, W, 3})
end

-- The decoded frames of an mp4 as one byte string (rgb24).
local function decode(path)
  return sh("ffmpeg -v error -i " .. path .. " -f rawvideo -pix_fmt rgb24 pipe:1")
end

-- Children of this adaspa process whose command is name (none after a call: nothing left running).
local function children_named(name)
  return sh("ps -o comm= --ppid $PPID | grep -c '^" .. name .. "$' || true"):match("%d+")
end

describe("outdir:encode_video", function()
  local dir, out
  before_each(function()
    dir = spec_tmpdir()
    out = adaspa.outdir.open(dir, "fresh")
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("writes an H.264 mp4 that ffprobe reads: codec, frame count, size (odd sides padded), rate", function()
    if not need_ffmpeg() then return end
    local frames = ramp_frames(5, 33, 47)
    local n = out:encode_video("clip.mp4", frames, {fps = 24, fps_den = 4})
    local st = io.open(dir .. "/clip.mp4", "rb")
    local bytes = st:read("*a")
    st:close()
    assert.equal(#bytes, n)
    assert.equal("ftyp", bytes:sub(5, 8))
    local p, raw = probe(dir .. "/clip.mp4")
    assert.equal("h264", p.codec_name, raw)
    assert.equal(5, p.nb_read_frames, raw)
    assert.equal(48, p.width, raw)
    assert.equal(34, p.height, raw)
    assert.equal("6/1", p.r_frame_rate, raw)
    assert.equal("yuv420p", p.pix_fmt, raw)
    assert.equal("0", children_named("ffmpeg"))
  end)

  it("holds the frames given: decoded, each frame's mean matches the input's within 2 levels", function()
    if not need_ffmpeg() then return end
    local T, H, W = 4, 32, 48
    local frames = ramp_frames(T, H, W)
    out:encode_video("clip.mp4", frames, {fps = 16})
    local raw = decode(dir .. "/clip.mp4")
    assert.equal(T * H * W * 3, #raw)
    local bytes = {}
    for i = 1, #raw do bytes[i] = raw:byte(i) end
    local got = adaspa.tensor(bytes, {dtype = "u8"}):reshape({T, H, W, 3})
    for t = 1, T do
      local ma, mb = mean(frames:narrow(1, t, 1)), mean(got:narrow(1, t, 1))
      assert.is_true(math.abs(ma - mb) < 2, string.format("frame %d: mean %.2f in, %.2f out", t, ma, mb))
    end
    -- and the frames differ from each other (the level rises 40 per frame)
    local m1 = got:narrow(1, 1, 1):to("f32"):reshape({-1}):totable()
    local m4 = got:narrow(1, 4, 1):to("f32"):reshape({-1}):totable()
    assert.is_true(m4[1] - m1[1] > 60)
  end)

  it("refuses names, tensors, sizes and rates outside its bounds before starting ffmpeg", function()
    local f = adaspa.zeros({2, 4, 4, 3}, {dtype = "u8"})
    spec_error(function() out:encode_video("clip.png", f) end, "must end in .mp4")
    spec_error(function() out:encode_video("../clip.mp4", f) end, "not allowed")
    spec_error(function() out:encode_video(".clip.mp4", f) end, "no hidden files")
    spec_error(function() out:encode_video("/tmp/clip.mp4", f) end, "absolute path")
    spec_error(function() out:encode_video("clip.mp4", adaspa.zeros({2, 4, 4, 3})) end, "u8 tensor [T, H, W, 3]")
    spec_error(function() out:encode_video("clip.mp4", adaspa.zeros({4, 4, 3}, {dtype = "u8"})) end, "[T, H, W, 3]")
    spec_error(function() out:encode_video("clip.mp4", adaspa.zeros({2, 4, 4, 4}, {dtype = "u8"})) end, "[T, H, W, 3]")
    spec_error(function() out:encode_video("clip.mp4", adaspa.zeros({1, 8193, 2, 3}, {dtype = "u8"})) end, "each side 2..8192")
    spec_error(function() out:encode_video("clip.mp4", adaspa.zeros({1, 1, 4, 3}, {dtype = "u8"})) end, "each side 2..8192")
    spec_error(function() out:encode_video("clip.mp4", adaspa.zeros({100001, 2, 2, 3}, {dtype = "u8"})) end, "100001 frames (1..100000)")
    spec_error(function() out:encode_video("clip.mp4", f, {fps = 0}) end, "fps must be an integer in 1..1000")
    spec_error(function() out:encode_video("clip.mp4", f, {fps = 1e9}) end, "fps must be an integer in 1..1000")
    spec_error(function() out:encode_video("clip.mp4", f, {fps_den = 2.5}) end, "fps_den must be an integer")
    spec_error(function() out:encode_video("clip.mp4", f, {timeout = 0}) end, "timeout must be in (0, 86400]")
    spec_error(function() out:encode_video("clip.mp4", f, {timeout = 0 / 0}) end, "timeout must be in")
    spec_error(function() out:encode_video("clip.mp4", f, {max_bytes = 0}) end, "max_bytes must be an integer")
    spec_error(function() out:encode_video("clip.mp4", f, {program = "/bin/sh"}) end, "program")
    assert.equal(0, out:count())
  end)

  it("stops ffmpeg when the mp4 grows past max_bytes: nothing written, nothing left running", function()
    if not need_ffmpeg() then return end
    local noise = adaspa.randn({6, 64, 64, 3}, {seed = 3})
    local f = adaspa.add(adaspa.scale(noise, 80), adaspa.full({6, 64, 64, 3}, 128)):to("u8")
    spec_error(function() out:encode_video("clip.mp4", f, {max_bytes = 200}) end, "grew past 200 bytes (ffmpeg killed)")
    assert.equal(0, out:count())
    assert.equal("0", children_named("ffmpeg"))
  end)
end)

describe("encode_video's child process (stand-in programs through ADASPA_FFMPEG)", function()
  local fake, script, dir
  before_each(function()
    fake = os.tmpname()
    dir = spec_tmpdir()
    script = spec_tmpfile(string.format([[
      local out = adaspa.outdir.open(%q, "fresh")
      local intr = require "adaspa.interrupt"
      local t0 = adaspa.now()
      local ok, err = pcall(function()
        local n, why = out:encode_video("clip.mp4", adaspa.zeros({4, 128, 128, 3}, {dtype = "u8"}), {timeout = 2})
        if not n then print("returned", why) end
        return n
      end)
      print(ok, err)
      print("interrupt", intr.is(err), intr.clear())
      print(string.format("seconds %%.2f", adaspa.now() - t0))
      local p = io.popen("ps -o comm= --ppid $PPID | grep -cv '^ps$' || true"); local kids = p:read("*a"); p:close()
      print("children", kids:match("%%d+") - 1, "files", out:count())
    ]], dir))
  end)
  after_each(function()
    os.remove(fake)
    os.remove(script)
    os.execute("rm -rf " .. dir)
  end)

  local function stand_in(body)
    local f = assert(io.open(fake, "w"))
    f:write("#!/bin/sh\n" .. body .. "\n")
    f:close()
    assert(os.execute("chmod 755 " .. fake) == 0)
  end

  it("kills and reaps a program that does not finish within the timeout", function()
    stand_in("exec /bin/sleep 30")
    local o, e, code = spec_run_env("ADASPA_FFMPEG=" .. fake, script)
    assert.equal(0, code, e)
    assert.truthy(o:find("did not finish within 2 s (killed)", 1, true), o)
    local s = tonumber(o:match("seconds ([%d.]+)"))
    assert.is_true(s >= 1.9 and s < 6, o)
    assert.truthy(o:find("children\t0\tfiles\t0", 1, true), o)
  end)

  it("reports a failing program's exit status and its stderr, one line", function()
    stand_in("echo 'Unknown encoder libx264' >&2; echo 'second line' >&2; exit 3")
    local o, e, code = spec_run_env("ADASPA_FFMPEG=" .. fake, script)
    assert.equal(0, code, e)
    assert.truthy(o:find("ffmpeg failed (exit status 3): Unknown encoder libx264 | second line", 1, true), o)
    assert.truthy(o:find("children\t0\tfiles\t0", 1, true), o)
  end)

  it("refuses an empty result, and a program that stops reading its input", function()
    stand_in("cat > /dev/null; exit 0")
    local o = spec_run_env("ADASPA_FFMPEG=" .. fake, script)
    assert.truthy(o:find("ffmpeg wrote nothing", 1, true), o)
    stand_in("echo partial; exit 0")
    o = spec_run_env("ADASPA_FFMPEG=" .. fake, script)
    assert.truthy(o:find("exited before reading all frames", 1, true), o)
    assert.truthy(o:find("children\t0\tfiles\t0", 1, true), o)
  end)

  it("runs the program with an empty environment, in /, with only stdin, stdout and stderr open", function()
    local log = os.tmpname()
    stand_in("{ /usr/bin/env; echo cwd=$(/bin/pwd); /bin/ls /proc/self/fd; } > " .. log .. "; cat > /dev/null; echo x")
    local o = spec_run_env("ADASPA_FFMPEG=" .. fake .. " SECRET_TOKEN=1", script)
    local got = spec_slurp(log)
    os.remove(log)
    assert.truthy(o:find("true\t2", 1, true), o) -- "x\n": two bytes written as clip.mp4
    assert.falsy(got:find("SECRET_TOKEN", 1, true), got)
    assert.truthy(got:find("cwd=/\n", 1, true), got)
    -- the shell's own fds: 0, 1 (redirected to the log), 2 and the one ls opens to list them
    local fds = {}
    for fd in got:gmatch("\n(%d+)") do fds[#fds + 1] = tonumber(fd) end
    assert.is_true(#fds <= 4, got)
    for _, fd in ipairs(fds) do assert.is_true(fd <= 3, got) end
  end)

  it("on Ctrl-C stops and reaps the program and fails with an interrupt the caller can clear", function()
    local mark = os.tmpname()
    os.remove(mark)
    stand_in("echo started > " .. mark .. "; exec /bin/sleep 30")
    -- Ctrl-C once the stand-in runs (it writes the mark first)
    local sh_cmd = string.format("ADASPA_FFMPEG=%s %s %s > %s.out 2>&1 & p=$!; i=0; " ..
      "while [ ! -f %s ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; kill -INT $p; wait $p; echo rc=$?",
      fake, spec_bin, script, script, mark)
    local f = io.popen(sh_cmd)
    local rc = f:read("*a")
    f:close()
    local o = spec_slurp(script .. ".out")
    os.remove(script .. ".out")
    assert.truthy(os.remove(mark), "the stand-in ran")
    assert.truthy(rc:find("rc=0", 1, true), rc .. o)
    -- encode_video returned nil, "...: interrupted"; the host's hook raised at the next instruction
    assert.truthy(o:find("false\tinterrupted", 1, true), o)
    assert.falsy(o:find("returned", 1, true), o)
    assert.truthy(o:find("interrupt\ttrue\ttrue", 1, true), o) -- an interrupt, pending until cleared
    assert.is_true(tonumber(o:match("seconds ([%d.]+)")) < 1.9, o)
    assert.truthy(o:find("children\t0\tfiles\t0", 1, true), o)
  end)

  it("says why there is no ffmpeg: a relative or missing ADASPA_FFMPEG", function()
    local o = spec_run_env("ADASPA_FFMPEG=bin/ffmpeg", "-e 'print(adaspa.outdir.ffmpeg())'")
    assert.truthy(o:find("nil\tffmpeg: ADASPA_FFMPEG=bin/ffmpeg is not an absolute path", 1, true), o)
    o = spec_run_env("ADASPA_FFMPEG=/nonexistent/ffmpeg", "-e 'print(adaspa.outdir.ffmpeg())'")
    assert.truthy(o:find("is not an executable file", 1, true), o)
  end)
end)

describe("video.mp4 of a run", function()
  local tiny = "recipes/hunyuan.lua model.preset=small model.layers.double=1 model.layers.single=1 " ..
    "model.layers.refiner=1 video.width=64 video.height=32 video.frames=9 sampler.steps=1 output.quiet=true " ..
    "attention.policy=dense output.pictures=false"

  it("the job writes video.mp4 of its previews: h264, one frame per latent frame, the previews' size, fps/4", function()
    if not need_ffmpeg() then return end
    local dir = spec_tmpdir()
    local _, e, code = spec_run("recipe " .. tiny .. " output.dir=" .. dir)
    assert.equal(0, code, e)
    local p, raw = probe(dir .. "/video.mp4")
    assert.equal("h264", p.codec_name, raw)
    assert.equal(3, p.nb_read_frames, raw) -- 9 frames -> 3 latent frames
    assert.equal(64, p.width, raw)
    assert.equal(32, p.height, raw)
    assert.equal("6/1", p.r_frame_rate, raw) -- HunyuanVideo's 24 fps / 4
    assert.truthy(spec_slurp(dir .. "/report.txt"):find("video.mp4", 1, true))
    assert.truthy(spec_slurp(dir .. "/report.json"):find('"video"', 1, true))
    -- the first decoded frame is the first preview (its yellow banner included)
    local png = spec_flat(adaspa.png.read(dir .. "/frame_000.png"))
    local raw_frames = decode(dir .. "/video.mp4")
    local diff = 0
    for i = 1, #png do diff = diff + math.abs(png[i] - raw_frames:byte(i)) / #png end
    assert.is_true(diff < 12, "mean abs difference " .. diff)
    os.execute("rm -rf " .. dir)
    -- output.fps sets the rate
    dir = spec_tmpdir()
    _, e, code = spec_run("recipe " .. tiny .. " output.fps=16 output.dir=" .. dir)
    assert.equal(0, code, e)
    assert.equal("4/1", (probe(dir .. "/video.mp4")).r_frame_rate)
    os.execute("rm -rf " .. dir)
  end)

  it("output.video=false writes no mp4; without ffmpeg one notice, PNGs, exit 0", function()
    local dir = spec_tmpdir()
    local _, e, code = spec_run("recipe " .. tiny .. " output.video=false output.dir=" .. dir)
    assert.equal(0, code, e)
    assert.is_nil(io.open(dir .. "/video.mp4"))
    assert.truthy(io.open(dir .. "/frame_000.png"))
    os.execute("rm -rf " .. dir)
    dir = spec_tmpdir()
    local o
    o, e, code = spec_run_env("ADASPA_FFMPEG=/nonexistent/ffmpeg",
      "recipe " .. tiny:gsub("output.quiet=true ", "") .. " output.dir=" .. dir)
    assert.equal(0, code, e)
    assert.is_nil(io.open(dir .. "/video.mp4"))
    assert.truthy(io.open(dir .. "/frame_002.png"))
    local notice = "adaspa: no video.mp4: ffmpeg: ADASPA_FFMPEG=/nonexistent/ffmpeg is not an executable file; the previews are PNG frames only"
    local _, count = o:gsub(notice:gsub("%p", "%%%0"), "")
    assert.equal(1, count, o)
    assert.truthy(spec_slurp(dir .. "/report.txt"):find("note       no video.mp4: ffmpeg", 1, true))
    os.execute("rm -rf " .. dir)
  end)

  it("Ctrl-C while ffmpeg encodes: ffmpeg stopped and reaped, the report written, a note, exit status 130", function()
    local fake = os.tmpname()
    local f = assert(io.open(fake, "w"))
    local mark = os.tmpname()
    os.remove(mark)
    f:write("#!/bin/sh\necho started > " .. mark .. "\nexec /bin/sleep 31.25\n")
    f:close()
    assert(os.execute("chmod 755 " .. fake) == 0)
    local dir = spec_tmpdir()
    local log = os.tmpname()
    local cmd = string.format("ADASPA_FFMPEG=%s %s recipe %s output.dir=%s > %s 2>&1 & p=$!; " ..
      "i=0; while [ ! -f %s ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; " ..
      "kill -INT $p; wait $p; echo rc=$?; pgrep -cfx '/bin/sleep 31.25' || true", fake, spec_bin, tiny, dir, log, mark)
    local p = io.popen(cmd)
    local res = p:read("*a")
    p:close()
    local o = spec_slurp(log)
    os.remove(log)
    os.remove(fake)
    assert.truthy(os.remove(mark), "the stand-in ran")
    assert.truthy(res:find("rc=130\n0\n", 1, true), res .. o)
    local txt = spec_slurp(dir .. "/report.txt")
    assert.truthy(txt and txt:find("note       no video.mp4: interrupted (Ctrl-C) while ffmpeg encoded it", 1, true), o)
    assert.is_nil(io.open(dir .. "/video.mp4"))
    assert.truthy(io.open(dir .. "/latents.safetensors"))
    os.execute("rm -rf " .. dir)
  end)

  it("a recipe cannot reach the encoder: no adaspa.outdir, adaspa.video_out refused", function()
    local r = spec_tmpfile([[
      local ok1, e1 = pcall(function() return adaspa.outdir.ffmpeg() end)
      local ok2, e2 = pcall(require, "adaspa.video_out")
      print("R", ok1, ok2, e2)
      return {job = "video", model = {preset = "small"}}
    ]])
    local o = spec_run("recipe " .. r .. " model.layers.double=1 model.layers.single=1 model.layers.refiner=1 " ..
      "video.width=32 video.height=32 video.frames=1 sampler.steps=1 output.quiet=true output.video=false " ..
      "output.dir=" .. spec_tmpdir())
    os.remove(r)
    assert.truthy(o:find("R\tfalse\tfalse\trecipe sandbox: module adaspa.video_out is not available to recipes", 1, true), o)
  end)
end)
