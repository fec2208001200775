-- Wan2.1 image-to-video with classifier-free guidance.   adaspa recipe recipes/wan_i2v.lua [field=value ...]
-- model.task = i2v picks the image-to-video variant of the preset: on a GPU whose backend runs the
-- model I2V-14B-720P (1280x720, 81 frames; model.preset=I2V-14B-480P for 832x480, shift 3),
-- elsewhere small_i2v (same architecture, narrow, two blocks, 256x192x9) so the whole recipe runs
-- on a CPU. The image enters twice: its CLIP states (text.embeds' image_embeds [257, 1280]) through
-- the added key/value of every cross-attention, and its VAE latents with the first-frame mask
-- (image_latents [20, T, H, W]) concatenated to the noisy latent. Without them (or without
-- text.embeds) both are synthetic, seeded by the prompt, and the run says so; without model.weights
-- the weights are synthetic too (see the README, "Wan2.1").
--   adaspa recipe recipes/wan_i2v.lua sampler.steps=10
return {
  model = {
    name = "wan",
    task = "i2v",
    preset = "auto",          -- auto (I2V-14B-720P on a GPU, small_i2v on the CPU) | I2V-14B-480P | I2V-14B-720P | small_i2v
    -- weights = "Wan2.1-I2V-14B-720P-Diffusers/transformer",   -- diffusers' or the original release's keys
    device = "auto",
  },
  video = {},                 -- defaults from the preset
  text = {
    prompt = "a red fox running through fresh snow at dawn",
    negative = "",
    -- embeds = "fox_i2v.safetensors",  -- text_states, negative_text_states (umT5-XXL) and image_embeds
                                        -- [257, 1280] (CLIP ViT-H/14 penultimate states), image_latents
                                        -- [20, T, H, W] (mask + VAE latents of the first frame)
  },
  sampler = {steps = 50, shift = 5.0, guidance = 5.0, guidance_kind = "cfg", seed = 42},
  attention = {
    policy = "adaspa",
    sparsity = 0.8,
    block = 64,
    head_adaptive = true,
    text_sink = false,        -- no text tokens in the self-attention (text and image enter by cross-attention)
    first_frame_sink = true,  -- the first latent frame (the conditioning image's) always kept as columns
  },
  output = {
    previews = true,
    pictures = true,
    picture_layers = {1}, picture_heads = {1},
    compare_dense = false,
    error_steps = {},
  },
}
