-- adaspa.video_out: the mp4 of a run's previews. The job (never the recipe: a recipe's library has
-- no adaspa.outdir) hands the preview frames to its output folder's encode_video, which runs
-- ffmpeg with a fixed argument vector and writes the bytes under the folder's rules
-- (runtime/io/video.h, runtime/io/outdir.h). Without ffmpeg the previews stay PNG frames and
-- the run says so once.
local adaspa = require "adaspa"

local video_out = {}

-- Frame rates of the models' videos (frames per second of the decoded video).
-- One latent frame stands for this many video frames (the VAEs' temporal compression), so the
-- preview video plays at fps / 4 and lasts as long as the decoded video.
video_out.TEMPORAL = 4
video_out.NAME = "video.mp4"
video_out.TIMEOUT = 600         -- seconds for ffmpeg
video_out.MAX_BYTES = 2 ^ 30    -- the largest mp4 kept

-- The frame rate of a registered model's video (its entry's fps; 24 when it names none).
function video_out.fps_of(model_name)
  local ok, M = pcall(require("adaspa.models").get, model_name)
  return ok and M.fps or 24
end

-- Whether ffmpeg is there: its path, or nil and the reason.
function video_out.ffmpeg()
  return adaspa.outdir.ffmpeg()
end

local function interrupt_module()
  local ok, m = pcall(require, "adaspa.interrupt")
  return ok and m or nil
end

-- Stacks frames (a list of u8 [H, W, 3] tensors of one size) into one u8 [T, H, W, 3].
function video_out.stack(frames)
  assert(#frames >= 1, "video_out.stack: no frames")
  local s = frames[1]:shape()
  local all = adaspa.zeros({#frames, s[1], s[2], s[3]}, {dtype = "u8"})
  for i, f in ipairs(frames) do
    local fs = f:shape()
    if fs[1] ~= s[1] or fs[2] ~= s[2] or fs[3] ~= s[3] then
      error(string.format("video_out.stack: frame %d is [%s], frame 1 [%s]", i, table.concat(fs, ", "),
        table.concat(s, ", ")), 2)
    end
    all:narrow(1, i, 1):copy(f:reshape({1, s[1], s[2], s[3]}))
  end
  return all
end

-- Writes the mp4 of frames (u8 [H, W, 3] tensors) into the output folder out (an adaspa.outdir
-- handle). opts: fps (the video's rate; the previews play at fps / TEMPORAL), name, timeout,
-- max_bytes. Returns {path =, bytes =, fps =} when written; else nil and a note saying why
-- (ffmpeg absent, its failure, or "interrupted": a Ctrl-C during the encoding stops ffmpeg and
-- is acknowledged here, so the caller writes its other outputs and reports the interruption;
-- the third result is then true).
function video_out.write(out, frames, opts)
  opts = opts or {}
  local name = opts.name or video_out.NAME
  local fps = opts.fps or 24
  local prog, why = video_out.ffmpeg()
  if not prog then
    return nil, string.format("no %s: %s; the previews are PNG frames only", name, why)
  end
  local stacked = video_out.stack(frames)
  -- a Ctrl-C makes encode_video return nil, "...interrupted"; the host's hook raises "interrupted"
  -- at the next instruction, which is still inside this pcall
  local ok, bytes = pcall(function()
    local n, err = out:encode_video(name, stacked,
      {fps = fps, fps_den = opts.per_frame or video_out.TEMPORAL, timeout = opts.timeout or video_out.TIMEOUT,
       max_bytes = opts.max_bytes or video_out.MAX_BYTES})
    if not n then error(err, 0) end
    return n
  end)
  stacked:free()
  if not ok then
    local intr = interrupt_module()
    if intr and intr.is(bytes) then
      intr.clear()
      return nil, string.format("no %s: interrupted (Ctrl-C) while ffmpeg encoded it", name), true
    end
    return nil, string.format("no %s: %s", name, tostring(bytes))
  end
  return {path = out:path() .. "/" .. name, bytes = bytes, fps = fps, rate = fps / (opts.per_frame or video_out.TEMPORAL)}
end

return video_out
