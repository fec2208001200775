-- HunyuanVideo text-to-video: the main recipe.   adaspa recipe recipes/hunyuan.lua [field=value ...]
-- On a GPU whose backend runs the model: the real 720p, 129-frame configuration. Elsewhere the
-- `small` preset (same architecture, narrow, few layers) so the whole recipe runs on a CPU; the
-- run says which it chose. Without model.weights the weights are synthetic (see the README): they
-- stay for speed benchmarks at the real sizes; the frames are pictures of attention, not content.
-- For a real video on a CPU: recipes/tiny.lua (the small trained model; `adaspa run` and `make run`
-- pick it on a machine without a GPU when its weights are there).
-- Every field can be overridden from the command line (adaspa recipe hunyuan --help lists them), e.g.
--   adaspa recipe hunyuan sampler.steps=20 video.frames=9 model.layers.single=1
return {
  model = {
    name = "hunyuan",         -- a registered model (adaspa.models); --help lists its own model.* fields
    preset = "auto",          -- auto | 720p | small
    -- weights = "hunyuan-video-t2v-720p.safetensors",   -- original or diffusers keys; or a folder /
    --                        -- *.safetensors.index.json of shards, or a list of shard files
    -- weights_prefix = "model.diffusion_model.",       -- a key prefix to strip (all-in-one files)
    device = "auto",          -- auto | cpu | cuda
  },
  video = {},                 -- defaults from the preset: 1280x720x129 (720p), 320x256x17 (small)
  text = {
    prompt = "a red fox running through fresh snow at dawn",
    -- embeds = "fox.safetensors",   -- text_states [256, 4096], text_mask [256], text_pooled [768]
    --                               (+ negative_text_* for guidance_kind = "cfg")
    -- negative = "",                -- the unconditional prompt of guidance_kind = "cfg"
  },
  -- guidance_kind: auto (the model's: embedded for HunyuanVideo), "embedded" (one pass per step,
  -- guidance given to the model) or "cfg" (classifier-free: a conditional and an unconditional
  -- pass per step, guidance = its scale; each pass keeps its own AdaSpa cache)
  sampler = {steps = 50, shift = 7.0, guidance = 6.0, guidance_kind = "auto", seed = 42},
  attention = {
    policy = "adaspa",        -- adaspa | dense | window | spatial_temporal | estimate | a policy object
                              -- {mode = fn, select = fn or plan = fn} defined here (see the README)
    -- options = {},          -- the chosen policy's own options, e.g. {threshold = 0.8} for estimate
    sparsity = 0.8,           -- mean fraction of blocks dropped per head
    block = 64,               -- 64 or 128 tokens (Hopper runs blocks of 128 1.2-1.6x faster: README, Performance)
    -- warmup = 10,           -- dense steps 0..warmup-1 (steps count from 0, as in the paper);
                              -- default 20% of sampler.steps (10 of 50, 4 of 20)
    -- search = {10, 30},     -- fused search passes, the steps between reuse the layouts;
                              -- default at 20% and 60% of sampler.steps ({10, 30} of 50)
    head_adaptive = true,     -- tiers (1+s)/2, s, (3s-1)/2 by each head's recall
    text_sink = true,         -- text blocks always kept, as rows and columns
    first_frame_sink = false,
    -- recall = 0.95,         -- instead of tiers: keep blocks until each row's mass reaches it
  },
  output = {
    previews = true,          -- frame PNGs and a contact sheet; dir defaults to out/hunyuan-<time>
    video = true,             -- video.mp4 of the previews (ffmpeg; fps = 24, the model's, played at fps/4)
    pictures = true,          -- masks and mass heat maps at search steps, a layer x head density grid
    picture_layers = {1}, picture_heads = {1},
    compare_dense = false,    -- also run dense with the same seed and report PSNR/SSIM against it
    error_steps = {},         -- steps whose per-layer attention error against dense is reported
  },
}
