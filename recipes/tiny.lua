-- The small video model trained here (recipes/tools/tinyvideo): text to a real 256x256, 33-frame
-- video on a CPU.   adaspa recipe tiny prompt="a red square moving left over a striped blue background"
-- The prompt uses the model's 32 words (recipes/tools/tinyvideo/vocab.txt): a [small | big]
-- COLOUR SHAPE (moving left | right | up | down | bouncing | growing | shrinking) over a
-- (striped | checkered | gradient | plain) COLOUR background [as the camera pans DIRECTION];
-- colours red green blue yellow cyan magenta white, shapes square circle triangle. An unknown
-- word is an error that lists them. Weights: models/tiny/tiny.safetensors (the trained export;
-- model.weights=FILE for another). Writes the decoded frames (frame_NNN.png), contact_sheet.png,
-- video.mp4, latents.safetensors and the report under out/tiny-<time>/.
return {
  model = {name = "tiny", device = "auto"},   -- sizes from the export's metadata
  video = {},                                 -- default: the export's (256x256, 33 frames)
  text = {prompt = "a red square moving left over a striped blue background"},
  -- classifier-free guidance against the blank prompt at scale 3 (a second pass per step: twice
  -- the time per step); with sparsity 0.7 the caption check reads 38 / 50 against 30 / 50 with one
  -- pass at 0.8 (README, "Running it"); sampler.guidance_kind=embedded: one pass, no guidance (the
  -- model's embedded scale acts on nothing)
  sampler = {steps = 50, seed = 42, guidance_kind = "cfg", guidance = 3.0},   -- shift: the model's (3)
  attention = {
    policy = "adaspa",        -- adaspa | dense | window | spatial_temporal | estimate
    sparsity = 0.7,           -- with CFG 3 (0.8, the paper's: 35 / 50 with CFG 3, 30 with one pass)
    block = 64,
  },
  output = {
    previews = true,          -- the decoded frames as PNGs and a contact sheet
    video = true,             -- video.mp4 of the decoded frames (ffmpeg), 8 frames a second
    pictures = true,          -- masks and mass heat maps at search steps
    compare_dense = false,    -- also run dense and report PSNR/SSIM of latents and frames against it
  },
}
