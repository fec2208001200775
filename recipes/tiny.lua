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
  -- one pass a step (the model's embedded guidance acts on nothing). sampler.guidance_kind=cfg
  -- sampler.guidance=3 (a blank-prompt pass per step) reads better on colour, shape and motion but
  -- draws the object two or three times: one object in 9 of 25 held-out prompts against 20 of 25
  -- here, and all three right with one object 6 / 25 against 10 / 25 (README, "Running it")
  sampler = {steps = 50, seed = 42},          -- shift and guidance: the model's (3; embedded)
  attention = {
    policy = "adaspa",        -- adaspa | dense | window | spatial_temporal | estimate
    -- per head and query row, the blocks kept until their exact mass reaches 0.9 (searched, then
    -- reused): dense's caption reading (49 / 50 at seeds 42 and 43) at 57% of its attention FLOPs;
    -- the tiers at sparsity 0.7 (recall = nil) draw small triangles as circles (44 / 50 at 49%,
    -- read with the decoder before; README, "A small trained model")
    recall = 0.9,
    sparsity = 0.7,           -- the tiers' mean sparsity: in force only with recall = nil
    block = 64,
  },
  output = {
    previews = true,          -- the decoded frames as PNGs and a contact sheet
    video = true,             -- video.mp4 of the decoded frames (ffmpeg), 8 frames a second
    pictures = true,          -- masks and mass heat maps at search steps
    compare_dense = false,    -- also run dense and report PSNR/SSIM of latents and frames against it
  },
}
