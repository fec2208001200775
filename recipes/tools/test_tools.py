#!/usr/bin/env python3
"""test_tools.py [--keep] [--fixture FILE]: end-to-end test of encode_text.py and decode_latents.py
on tiny randomly initialised models (tiny_models.py), without real weights. Needs torch,
transformers, diffusers, safetensors and Pillow (not part of make test: CI has no torch); run it
through test_tools.sh. Each tool runs as a user runs it (its command line, in a subprocess), and
its output is compared with an independent computation from the same tiny models:

  encode_text hunyuan  the Llama hidden states (third from last layer) of the templated prompt
                       with the first 95 tokens cropped, the CLIP pooled vector, the mask; a
                       tokenizer configured to pad on the left gives the same file;
                       adaspa's own loader (text.load, run in build/adaspa) accepts the file
  encode_text wan      UMT5's last hidden states, zeros after the valid tokens, the mask, the
                       negative prompt ("" -> one valid token, </s>)
  encode_text wan --image  CLIP vision's penultimate hidden states of the image, and the
                       condition latents: the first-frame mask and the VAE latents (mode,
                       normalized) of the resized image followed by zero frames; adaspa's
                       wan.conditioning takes the file and an image-to-video forward runs on it
  decode_latents       latents from a real adaspa run (build/adaspa, tiny configuration) decoded
                       by each VAE: 4 (T - 1) + 1 PNG frames of 8H x 8W equal to the VAE's output
                       as the pipelines post-process it; video.mp4 with that many frames (ffprobe)

--fixture FILE also writes the hunyuan embeddings file the busted spec reads
(spec/fixtures/text_hunyuan_tiny.safetensors).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable
PROMPT = "a red fox running through fresh snow at dawn"
NEG = "blurry, low quality"
HY_LEN, WAN_LEN = 32, 64
FAILS = []


def check(cond, what):
    print(("  ok    " if cond else "  FAIL  ") + what)
    if not cond:
        FAILS.append(what)


def run(args, **kw):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        print(r.stdout)
        raise SystemExit(f"test_tools: {' '.join(args)} failed ({r.returncode})")
    return r.stdout


def adaspa_bin():
    b = os.environ.get("ADASPA_BIN") or os.path.join(ROOT, "build", "adaspa")
    return b if os.access(b, os.X_OK) else None


def load(path):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def ref_hunyuan(weights, prompt, L):
    """Independent of the tool: states [L, D] (cropped, as the tokenizer pads), mask [L], pooled [P]."""
    import torch
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from transformers import AutoTokenizer, CLIPTextModel, LlamaModel

    tok = AutoTokenizer.from_pretrained(weights, subfolder="tokenizer")
    llama = LlamaModel.from_pretrained(weights, subfolder="text_encoder").eval()
    crop = DEFAULT_PROMPT_TEMPLATE["crop_start"]
    t = tok(DEFAULT_PROMPT_TEMPLATE["template"].format(prompt), max_length=L + crop, padding="max_length",
            truncation=True, return_tensors="pt")
    with torch.no_grad():
        hs = llama(input_ids=t.input_ids, attention_mask=t.attention_mask, output_hidden_states=True).hidden_states
    states, mask = hs[-3][0, crop:], t.attention_mask[0, crop:]
    tok2 = AutoTokenizer.from_pretrained(weights, subfolder="tokenizer_2")
    clip = CLIPTextModel.from_pretrained(weights, subfolder="text_encoder_2").eval()
    ids = tok2([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        pooled = clip(ids).pooler_output[0]
    return states, mask, pooled


def ref_wan(weights, prompt, L):
    import torch
    from transformers import AutoTokenizer, UMT5EncoderModel

    tok = AutoTokenizer.from_pretrained(weights, subfolder="tokenizer")
    t5 = UMT5EncoderModel.from_pretrained(weights, subfolder="text_encoder").eval()
    t = tok([" ".join(prompt.split())], padding="max_length", max_length=L, truncation=True, return_tensors="pt")
    with torch.no_grad():
        s = t5(t.input_ids, t.attention_mask).last_hidden_state[0]
    n = int(t.attention_mask.sum())
    out = torch.zeros_like(s)
    out[:n] = s[:n]
    return out, t.attention_mask[0]


def right_padded(mask):
    m = [int(v) for v in mask.tolist()]
    n = sum(m)
    return n > 0 and m == [1] * n + [0] * (len(m) - n)


def test_hunyuan_text(tmp, tiny, fixture):
    import torch

    print("encode_text.py --model hunyuan")
    w = os.path.join(tiny, "hunyuan")
    out = os.path.join(tmp, "hy_text.safetensors")
    log = run([PY, os.path.join(HERE, "encode_text.py"), "--model", "hunyuan", "--weights", w, "--prompt", PROMPT,
               "--negative", NEG, "--out", out, "--max-length", str(HY_LEN)])
    check("wrote " + out in log and "text_states" in log, "prints what it wrote")
    t, meta = load(out)
    check(sorted(t) == sorted(["text_states", "text_mask", "text_pooled", "negative_text_states",
                               "negative_text_mask", "negative_text_pooled"]), "the six tensors: " + ", ".join(sorted(t)))
    check(meta.get("model") == "hunyuan" and meta.get("prompt") == PROMPT and meta.get("negative_prompt") == NEG,
          "metadata: model, prompt, negative prompt")
    for prefix, prompt in (("", PROMPT), ("negative_", NEG)):
        s, m, p = t[prefix + "text_states"], t[prefix + "text_mask"], t[prefix + "text_pooled"]
        rs, rm, rp = ref_hunyuan(w, prompt, HY_LEN)
        check(list(s.shape) == [HY_LEN, rs.shape[1]] and list(m.shape) == [HY_LEN] and list(p.shape) == [rp.shape[0]],
              f"{prefix}text shapes [L, D] [L] [P] = {list(s.shape)} {list(m.shape)} {list(p.shape)}")
        check(s.dtype == torch.float32 and m.dtype == torch.float32, f"{prefix}text tensors float32")
        check(right_padded(m) and torch.equal(m, rm.float()), f"{prefix}mask right-padded, {int(m.sum())} valid, as the tokenizer's")
        n = int(m.sum())
        check(n > 1 and float((s[:n] - rs[:n]).abs().max()) < 1e-5, f"{prefix}states = Llama's third-from-last layer, cropped")
        check(float((p - rp).abs().max()) < 1e-5 and float(p.abs().max()) > 0, f"{prefix}pooled = CLIP's pooler output")
    if fixture:
        shutil.copyfile(out, fixture)
        print(f"  wrote the fixture {fixture} ({os.path.getsize(fixture)} bytes)")
    b = adaspa_bin()
    if b:
        lua = ("local text = require 'adaspa.text'; local c = text.load(arg[1], {text_len = %d, text_dim = %d, "
               "pooled_dim = %d}); print('valid', c.valid, table.concat(c.states:shape(), 'x'), "
               "table.concat(c.pooled:shape(), 'x'))" % (HY_LEN, t["text_states"].shape[1], t["text_pooled"].shape[0]))
        script = os.path.join(tmp, "load.lua")
        with open(script, "w") as f:
            f.write(lua)
        r = run([b, script, out], cwd=ROOT)
        want = "valid\t%d\t%dx%d\t1x%d" % (int(t["text_mask"].sum()), HY_LEN, t["text_states"].shape[1],
                                           t["text_pooled"].shape[0])
        check(want in r, "adaspa's text.load accepts it: " + r.strip())
    else:
        print("  skip  adaspa's text.load (no build/adaspa: make first)")
    # a tokenizer configured to pad on the left: switched to the right, the same file
    wl = os.path.join(tmp, "hunyuan_left")
    shutil.copytree(w, wl)
    cfg_path = os.path.join(wl, "tokenizer", "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["padding_side"] = "left"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    out_l = os.path.join(tmp, "hy_left.safetensors")
    log = run([PY, os.path.join(HERE, "encode_text.py"), "--model", "hunyuan", "--weights", wl, "--prompt", PROMPT,
               "--out", out_l, "--max-length", str(HY_LEN)])
    tl, _ = load(out_l)
    check(all(torch.equal(tl[k], t[k]) for k in ("text_states", "text_mask", "text_pooled")),
          "a tokenizer padding on the left: switched to the right, the same tensors")
    check("switched to the right" in log, "says it switched")
    check("negative_text_states" not in tl, "hunyuan without --negative: no negative tensors")


def test_wan_text(tmp, tiny):
    import torch

    print("encode_text.py --model wan")
    w = os.path.join(tiny, "wan")
    out = os.path.join(tmp, "wan_text.safetensors")
    run([PY, os.path.join(HERE, "encode_text.py"), "--model", "wan", "--weights", w, "--prompt", PROMPT,
         "--out", out, "--max-length", str(WAN_LEN)])
    t, meta = load(out)
    check(sorted(t) == sorted(["text_states", "text_mask", "negative_text_states", "negative_text_mask"]),
          "four tensors, no pooled: " + ", ".join(sorted(t)))
    for prefix, prompt in (("", PROMPT), ("negative_", "")):
        rs, rm = ref_wan(w, prompt, WAN_LEN)
        s, m = t[prefix + "text_states"], t[prefix + "text_mask"]
        check(list(s.shape) == [WAN_LEN, rs.shape[1]], f"{prefix}text_states [L, D] = {list(s.shape)}")
        check(right_padded(m) and torch.equal(m, rm.float()), f"{prefix}mask right-padded, {int(m.sum())} valid")
        check(float((s - rs).abs().max()) < 1e-5 and float(s[: int(m.sum())].abs().max()) > 0,
              f"{prefix}states = UMT5's last hidden states, zeros after the valid tokens")
    check(int(t["negative_text_mask"].sum()) == 1, "the empty negative prompt: one valid token (</s>)")
    check(meta.get("negative_prompt") == "" and meta.get("text_len") == str(WAN_LEN), "metadata")


def test_wan_image(tmp, tiny):
    import numpy as np
    import torch
    from diffusers import AutoencoderKLWan
    from diffusers.video_processor import VideoProcessor
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionModel

    print("encode_text.py --model wan --image")
    w = os.path.join(tiny, "wan")
    img_path = os.path.join(tmp, "first_frame.png")
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)).save(img_path)
    W, H, F = 64, 48, 5
    out = os.path.join(tmp, "wan_i2v.safetensors")
    log = run([PY, os.path.join(HERE, "encode_text.py"), "--model", "wan", "--weights", w, "--prompt", PROMPT,
               "--out", out, "--max-length", str(WAN_LEN), "--image", img_path, "--width", str(W), "--height", str(H),
               "--frames", str(F), "--device", "cpu"])
    check("recipes/wan_i2v.lua" in log and "video.frames=5" in log, "prints the I2V recipe command")
    t, meta = load(out)
    check(sorted(t) == sorted(["text_states", "text_mask", "negative_text_states", "negative_text_mask", "image_embeds",
                               "image_latents"]), "text and image tensors: " + ", ".join(sorted(t)))
    img = Image.open(img_path).convert("RGB")
    enc = CLIPVisionModel.from_pretrained(w, subfolder="image_encoder").eval()
    proc = CLIPImageProcessor.from_pretrained(w, subfolder="image_processor")
    with torch.no_grad():
        ref_e = enc(**proc(images=img, return_tensors="pt"), output_hidden_states=True).hidden_states[-2][0]
    e = t["image_embeds"]
    check(list(e.shape) == list(ref_e.shape) and float((e - ref_e).abs().max()) < 1e-5,
          f"image_embeds {list(e.shape)} = CLIP vision's penultimate hidden states")
    vae = AutoencoderKLWan.from_pretrained(w, subfolder="vae").eval()
    pix = VideoProcessor(vae_scale_factor=8).preprocess(img, height=H, width=W).float()   # [1, 3, H, W]
    video = torch.cat([pix[:, :, None], torch.zeros(1, 3, F - 1, H, W)], dim=2)
    with torch.no_grad():
        z = vae.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    z = ((z - mean) / std)[0]
    T = (F - 1) // 4 + 1
    lat = t["image_latents"]
    check(list(lat.shape) == [4 + z.shape[0], T, H // 8, W // 8], f"image_latents {list(lat.shape)} = [4 + 16, T, H/8, W/8]")
    mask = lat[:4]
    check(bool((mask[:, 0] == 1).all()) and bool((mask[:, 1:] == 0).all()), "the mask: 1 on the first latent frame, 0 after")
    diff = float((lat[4:] - z).abs().max())
    check(diff < 1e-4 * max(1.0, float(z.abs().max())), f"the latents: the VAE's of the image then zero frames (max diff {diff:.2e})")
    check(meta.get("video") == f"{W}x{H}x{F}" and meta.get("image") == img_path, "metadata: image, video size")
    b = adaspa_bin()
    if b:
        lua = ("local wan = require 'adaspa.models.wan'; "
               "local cfg = wan.config('small_i2v', {layers = 1, text_dim = %d, text_len = %d, image_dim = %d}); "
               "local c = wan.conditioning(cfg, {embeds = arg[1], guidance = 5}); "
               "local m = wan.new(cfg, wan.synthetic_weights(cfg, {seed = 1})); "
               "local _, lat = wan.grid({width = %d, height = %d, frames = %d}, cfg); "
               "local v = m:forward(adaspa.randn(lat, {seed = 1}), 900, c.uncond); "
               "print('i2v', table.concat(v:shape(), 'x'), c.source)"
               % (t["text_states"].shape[1], WAN_LEN, e.shape[1], W, H, F))
        script = os.path.join(tmp, "i2v.lua")
        with open(script, "w") as f:
            f.write(lua)
        r = run([b, script, out], cwd=ROOT)
        want = "i2v\t16x%dx%dx%d" % (T, H // 8, W // 8)
        check(want in r and "image_embeds [%d, %d], image_latents [20, %d, %d, %d]" % (e.shape[0], e.shape[1], T, H // 8, W // 8)
              in r and "SYNTHETIC" not in r, "adaspa's wan.conditioning takes it, an I2V forward runs: " + r.strip())
    else:
        print("  skip  adaspa's wan.conditioning (no build/adaspa: make first)")


def make_latents(tmp):
    """latents.safetensors from a real adaspa run (tiny configuration), else written here."""
    b = adaspa_bin()
    d = os.path.join(tmp, "run")
    if b:
        run([b, "recipe", "recipes/hunyuan.lua", "model.preset=small", "model.layers.double=1", "model.layers.single=1",
             "model.layers.refiner=1", "video.width=64", "video.height=48", "video.frames=9", "sampler.steps=2",
             "output.quiet=true", "output.pictures=false", "output.video=false", "output.dir=" + d], cwd=ROOT)
        return os.path.join(d, "latents.safetensors"), "an adaspa run"
    import torch
    from safetensors.torch import save_file

    os.makedirs(d)
    p = os.path.join(d, "latents.safetensors")
    save_file({"latents": torch.randn(16, 3, 6, 8, generator=torch.Generator().manual_seed(0))}, p)
    return p, "random (no build/adaspa)"


def test_decode(tmp, tiny):
    import numpy as np
    import torch
    from PIL import Image

    lat, src = make_latents(tmp)
    t, _ = load(lat)
    x = t["latents"].float()
    T, H, W = x.shape[1:]
    F = 4 * (T - 1) + 1
    for model in ("hunyuan", "wan"):
        print(f"decode_latents.py --model {model} (latents [16, {T}, {H}, {W}] from {src})")
        w = os.path.join(tiny, model)
        out = os.path.join(tmp, "dec_" + model)
        log = run([PY, os.path.join(HERE, "decode_latents.py"), "--model", model, "--weights", w, "--latents", lat,
                   "--out", out, "--device", "cpu"])
        pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
        check(len(pngs) == F, f"{len(pngs)} PNG frames (4 (T - 1) + 1 = {F})")
        got = np.stack([np.asarray(Image.open(os.path.join(out, p)).convert("RGB")) for p in pngs])
        check(got.shape == (F, 8 * H, 8 * W, 3), f"frames {got.shape[1]}x{got.shape[2]} = 8H x 8W")
        import diffusers

        if model == "hunyuan":
            vae = diffusers.AutoencoderKLHunyuanVideo.from_pretrained(w, subfolder="vae").eval()
            z = x[None] / vae.config.scaling_factor
        else:
            vae = diffusers.AutoencoderKLWan.from_pretrained(w, subfolder="vae").eval()
            mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
            std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
            z = x[None] * std + mean
        with torch.no_grad():
            v = vae.decode(z).sample[0]  # [3, F, H, W] in [-1, 1]
        ref = ((v / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
        diff = int(np.abs(ref.astype(int) - got.astype(int)).max())
        check(diff <= 1 and got.std() > 1, f"frames = the VAE's decode, post-processed (max difference {diff})")
        mp4 = os.path.join(out, "video.mp4")
        if shutil.which("ffprobe") and os.path.exists(mp4):
            r = run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                     "stream=codec_name,nb_read_frames,width,height,r_frame_rate", "-of", "json", mp4])
            s = json.loads(r)["streams"][0]
            fps = "24/1" if model == "hunyuan" else "16/1"
            check(s["codec_name"] == "h264" and int(s["nb_read_frames"]) == F and s["width"] == 8 * W
                  and s["height"] == 8 * H and s["r_frame_rate"] == fps, f"video.mp4: {s}")
        else:
            check("video.mp4" in log or "no video.mp4" in log, "says whether it wrote video.mp4: " + log.strip().splitlines()[-1])


def main(argv):
    keep = "--keep" in argv
    fixture = argv[argv.index("--fixture") + 1] if "--fixture" in argv else None
    tmp = tempfile.mkdtemp(prefix="adaspa-tools-")
    try:
        tiny = os.path.join(tmp, "tiny")
        print(run([PY, os.path.join(HERE, "tiny_models.py"), tiny]).strip().splitlines()[-1])
        test_hunyuan_text(tmp, tiny, fixture)
        test_wan_text(tmp, tiny)
        test_wan_image(tmp, tiny)
        test_decode(tmp, tiny)
    finally:
        if keep:
            print("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_tools: {len(FAILS)} failed" + ("" if not FAILS else ": " + "; ".join(FAILS)))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
