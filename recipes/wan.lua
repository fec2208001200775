-- Wan2.1 text-to-video with classifier-free guidance.   adaspa recipe recipes/wan.lua [field=value ...]
-- On a GPU whose backend runs the model: the 14B configuration at 1280x720, 81 frames (75,600
-- tokens). Elsewhere the `small` preset (same architecture, narrow, two blocks, 256x192x9) so the
-- whole recipe runs on a CPU; the run says which it chose. model.preset=1.3B is the 480p model
-- (832x480x81, sampling with shift 3 as Wan recommends there). Without model.weights the weights are
-- synthetic (see the README, "Wan2.1"). Every field can be overridden from the command line, e.g.
--   adaspa recipe wan sampler.steps=20 video.frames=5 model.layers=1
return {
  model = {
    name = "wan",
    preset = "auto",          -- auto | 14B | 1.3B | small
    -- weights = "Wan2.1-T2V-14B-Diffusers/transformer",   -- a folder, index json, file or list of shards;
                              -- diffusers' or the original release's keys
    device = "auto",          -- auto | cpu | cuda
  },
  video = {},                 -- defaults from the preset: 1280x720x81 (14B), 832x480x81 (1.3B), 256x192x9 (small)
  text = {
    prompt = "a red fox running through fresh snow at dawn",
    negative = "",            -- the unconditional prompt (Wan's pipeline default: empty)
    -- embeds = "fox.safetensors",   -- text_states [L <= 512, 4096], text_mask [L],
                                     -- negative_text_states [L, 4096], negative_text_mask [L] (umT5-XXL)
  },
  sampler = {steps = 50, shift = 5.0, guidance = 5.0, guidance_kind = "cfg", seed = 42},
  attention = {
    policy = "adaspa",        -- adaspa | dense | window | spatial_temporal | estimate | a policy object
    sparsity = 0.8,           -- mean fraction of blocks dropped per head
    block = 64,               -- 64 or 128 tokens
    -- warmup = 10,           -- dense steps 0..warmup-1; default 20% of sampler.steps
    -- search = {10, 30},     -- fused search passes; default at 20% and 60% of sampler.steps
    head_adaptive = true,
    text_sink = false,        -- Wan's self-attention has no text tokens (text enters by cross-attention)
    first_frame_sink = true,  -- the first latent frame's blocks always kept as columns
  },
  output = {
    previews = true,
    pictures = true,
    picture_layers = {1}, picture_heads = {1},
    compare_dense = false,
    error_steps = {},
  },
}
