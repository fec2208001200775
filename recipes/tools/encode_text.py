#!/usr/bin/env python3
"""encode_text.py: run a model's real text encoders once and write the embeddings file an adaspa
recipe reads (text.embeds=FILE).

Runs in your PyTorch environment (torch, transformers, diffusers, safetensors) with the model's
weights in the diffusers layout (a local folder or a Hugging Face id): only the text encoders and
tokenizers are loaded, never the transformer or the VAE.

    python3 encode_text.py --model hunyuan --weights hunyuanvideo-community/HunyuanVideo \\
        --prompt "a red fox running through fresh snow at dawn" --out fox_text.safetensors
    python3 encode_text.py --model wan --weights Wan-AI/Wan2.1-T2V-1.3B-Diffusers \\
        --prompt "a red fox running through fresh snow at dawn" --negative "blurry, low quality" \\
        --out fox_text_wan.safetensors

What it writes (safetensors, float32; the mask 1.0 for the leading valid tokens, then 0.0):

  hunyuan  text_states [L, 4096], text_mask [L], text_pooled [768]: diffusers'
           HunyuanVideoPipeline.encode_prompt: llava-llama-3's hidden states (third from last
           layer) of the prompt in its video template, the template's 95 system tokens cropped,
           L = 256 by default (--max-length; adaspa's 720p preset takes 256, small 32); and CLIP
           ViT-L's pooled vector. With --negative also negative_text_states [L, 4096],
           negative_text_mask [L], negative_text_pooled [768] (true classifier-free guidance;
           HunyuanVideo itself uses embedded guidance and needs no negative prompt).
  wan      text_states [L, 4096], text_mask [L] (no pooled vector): diffusers'
           WanPipeline.encode_prompt: UMT5-XXL's last hidden states, L = 512, zeros after the
           valid tokens; and always negative_text_states / negative_text_mask for the negative
           prompt (--negative, default empty: Wan samples with classifier-free guidance).

  wan --image PATH (Wan2.1 image-to-video; needs the I2V release: image_encoder, image_processor,
           vae): also image_embeds [257, 1280] (CLIP ViT-H/14's penultimate hidden states of the
           image, WanImageToVideoPipeline.encode_image) and image_latents [20, T, H/8, W/8] (the
           pipeline's prepare_latents: 4 mask channels, 1 on the first latent frame, and the VAE
           latents of the image resized to --width x --height followed by zero frames,
           normalized), for a video of --width x --height x --frames (default 832x480x81; adaspa
           checks they match the recipe's video size).

adaspa's loader (lua/adaspa/text.lua) wants exactly L = the model's text length, D = its text
width, the mask right-padded (1s then 0s) with at least one valid token. Both pipelines assume a
tokenizer that pads on the right (HunyuanVideo crops the template's first 95 tokens, Wan keeps
the leading valid rows); a tokenizer configured to pad on the left is switched to the right (the
tool says so), and a mask that is not 1s then 0s is an error.

Options: --device (cuda when available, else cpu), --dtype of the encoders (bf16 on cuda, f32 on
cpu), --max-length. The metadata records the model, weights, prompts and sizes. It prints what it
wrote.
"""

import argparse
import json
import os
import sys

DEFAULT_LEN = {"hunyuan": 256, "wan": 512}


def _dtype(torch, name):
    return {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]


def _from_pretrained(cls, weights, subfolder, dtype):
    try:
        return cls.from_pretrained(weights, subfolder=subfolder, dtype=dtype)
    except TypeError:  # older transformers: torch_dtype
        return cls.from_pretrained(weights, subfolder=subfolder, torch_dtype=dtype)


def check_right_padded(mask, what):
    """The mask as float32, after checking it is 1s then 0s with at least one 1."""
    import torch

    m = (mask != 0).to(torch.int64)
    n = int(m.sum())
    if n == 0:
        raise SystemExit(f"encode_text: {what}: no valid token")
    if not bool(m[:n].all()):
        raise SystemExit(f"encode_text: {what}: the mask is not 1s then 0s")
    return m.to(torch.float32)


def right_padding(tok):
    """Both pipelines assume right padding (HunyuanVideo crops the template's first tokens, Wan keeps
    the first valid rows): a tokenizer configured to pad on the left is switched."""
    if getattr(tok, "padding_side", "right") != "right":
        tok.padding_side = "right"
        return True
    return False


def load_hunyuan(weights, device, dtype):
    from diffusers import HunyuanVideoPipeline
    from transformers import AutoTokenizer, CLIPTextModel, LlamaModel

    tok = AutoTokenizer.from_pretrained(weights, subfolder="tokenizer")
    switched = right_padding(tok)
    te = _from_pretrained(LlamaModel, weights, "text_encoder", dtype).to(device).eval()
    tok2 = AutoTokenizer.from_pretrained(weights, subfolder="tokenizer_2")
    te2 = _from_pretrained(CLIPTextModel, weights, "text_encoder_2", dtype).to(device).eval()
    return HunyuanVideoPipeline(text_encoder=te, tokenizer=tok, transformer=None, vae=None, scheduler=None,
                                text_encoder_2=te2, tokenizer_2=tok2), switched


def encode_hunyuan(pipe, prompt, max_length, device):
    """-> states [L, D], mask [L], pooled [P] (float32, cpu)."""
    import torch

    with torch.no_grad():
        states, pooled, mask = pipe.encode_prompt(prompt=[prompt], device=device, dtype=torch.float32,
                                                  max_sequence_length=max_length)
    return states[0].float().cpu(), mask[0].cpu(), pooled[0].float().cpu()


def load_wan(weights, device, dtype):
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    tok = AutoTokenizer.from_pretrained(weights, subfolder="tokenizer")
    switched = right_padding(tok)
    te = _from_pretrained(UMT5EncoderModel, weights, "text_encoder", dtype).to(device).eval()
    return WanPipeline(tokenizer=tok, text_encoder=te, vae=None, scheduler=None, transformer=None), switched


def load_wan_image(weights, device, dtype):
    """The image-to-video pipeline's image parts: its own encode_image and prepare_latents (the text
    is encoded by WanPipeline above: the same encode_prompt); the VAE in float32, as the pipelines
    load it."""
    import torch
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionModel

    enc = _from_pretrained(CLIPVisionModel, weights, "image_encoder", dtype).to(device).eval()
    proc = CLIPImageProcessor.from_pretrained(weights, subfolder="image_processor")
    vae = _from_pretrained(AutoencoderKLWan, weights, "vae", torch.float32).to(device).eval()
    return WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=None, image_processor=proc,
                                   image_encoder=enc, transformer=None)


def encode_wan_image(pipe, path, width, height, frames, device):
    """-> image_embeds [N, D] and image_latents [4 + z, T, H/8, W/8] (float32, cpu), as
    WanImageToVideoPipeline computes them for a video of width x height x frames."""
    import torch
    from diffusers.utils import load_image

    img = load_image(path)
    with torch.no_grad():
        embeds = pipe.encode_image(img, device)
        pix = pipe.video_processor.preprocess(img, height=height, width=width).to(device, dtype=torch.float32)
        _, cond = pipe.prepare_latents(pix, 1, pipe.vae.config.z_dim, height, width, frames, torch.float32, device)
    return embeds[0].float().cpu(), cond[0].float().cpu()


def wan_mask(pipe, prompt, max_length):
    """The attention mask WanPipeline's _get_t5_prompt_embeds computes (it returns the states only)."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    t = pipe.tokenizer([prompt_clean(prompt)], padding="max_length", max_length=max_length, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    return t.attention_mask[0]


def encode_wan(pipe, prompt, negative, max_length, device):
    """-> (states [L, D], mask [L]) for the prompt and for the negative prompt."""
    import torch

    with torch.no_grad():
        pos, neg = pipe.encode_prompt(prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=True,
                                      max_sequence_length=max_length, device=device, dtype=torch.float32)
    return (pos[0].float().cpu(), wan_mask(pipe, prompt, max_length)), \
           (neg[0].float().cpu(), wan_mask(pipe, negative, max_length))


def encode(args):
    """-> ordered dict name -> tensor, metadata dict, notes."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _dtype(torch, args.dtype or ("bf16" if device.startswith("cuda") else "f32"))
    L = args.max_length or DEFAULT_LEN[args.model]
    tensors, notes = {}, []

    def put(prefix, states, mask, pooled=None):
        mask = check_right_padded(mask, prefix + "text_mask")
        tensors[prefix + "text_states"] = states.contiguous()
        tensors[prefix + "text_mask"] = mask.contiguous()
        if pooled is not None:
            tensors[prefix + "text_pooled"] = pooled.contiguous()

    if args.model == "hunyuan":
        pipe, switched = load_hunyuan(args.weights, device, dtype)
        put("", *encode_hunyuan(pipe, args.prompt, L, device))
        if args.negative is not None:
            put("negative_", *encode_hunyuan(pipe, args.negative, L, device))
    else:
        pipe, switched = load_wan(args.weights, device, dtype)
        (ps, pm), (ns, nm) = encode_wan(pipe, args.prompt, args.negative or "", L, device)
        put("", ps, pm)
        put("negative_", ns, nm)
        if args.image is not None:
            e, lat = encode_wan_image(load_wan_image(args.weights, device, dtype), args.image, args.width, args.height, args.frames, device)
            tensors["image_embeds"] = e.contiguous()
            tensors["image_latents"] = lat.contiguous()
    if switched:
        notes.append("the tokenizer was configured to pad on the left: switched to the right, as the pipeline assumes")
    meta = {"format": "adaspa.text", "version": "1", "model": args.model, "weights": str(args.weights),
            "prompt": args.prompt, "text_len": str(L), "text_dim": str(tensors["text_states"].shape[1]),
            "encoder_dtype": str(dtype).replace("torch.", ""), "device": device}
    if "text_pooled" in tensors:
        meta["pooled_dim"] = str(tensors["text_pooled"].shape[0])
    if "negative_text_states" in tensors:
        meta["negative_prompt"] = args.negative or ""
    if args.image is not None:
        meta.update(image=str(args.image), video=f"{args.width}x{args.height}x{args.frames}")
    return tensors, meta, notes


def parse(argv):
    p = argparse.ArgumentParser(description="Write the text embeddings an adaspa recipe reads (text.embeds=FILE).")
    p.add_argument("--model", required=True, choices=["hunyuan", "wan"])
    p.add_argument("--weights", required=True, help="the model in the diffusers layout: a folder or a Hugging Face id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default=None,
                   help="negative prompt (classifier-free guidance); wan: default empty, hunyuan: none unless given")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--max-length", type=int, default=None, help="text tokens L (hunyuan 256, wan 512)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["f32", "bf16", "f16"], help="of the text encoders")
    p.add_argument("--image", default=None,
                   help="wan image-to-video: the first frame (a file or URL); also writes image_embeds and image_latents")
    p.add_argument("--width", type=int, default=832, help="with --image: the video's width (a multiple of 16)")
    p.add_argument("--height", type=int, default=480, help="with --image: the video's height (a multiple of 16)")
    p.add_argument("--frames", type=int, default=81, help="with --image: the video's frames (4k + 1)")
    a = p.parse_args(argv)
    if a.image is not None:
        if a.model != "wan":
            p.error("--image is for --model wan (Wan2.1 image-to-video)")
        if a.width % 16 or a.height % 16 or a.width < 16 or a.height < 16:
            p.error("--width and --height must be positive multiples of 16")
        if a.frames < 1 or (a.frames - 1) % 4:
            p.error("--frames must be 4k + 1")
    if a.max_length is not None and not 1 <= a.max_length <= 4096:
        p.error("--max-length must be in 1..4096 (adaspa's model.text_len)")
    if not a.out.endswith(".safetensors"):
        p.error("--out must end in .safetensors")
    return a


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    from safetensors.torch import save_file

    tensors, meta, notes = encode(args)
    tmp = args.out + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, args.out)
    print(f"encode_text: wrote {args.out} ({os.path.getsize(args.out)} bytes; {args.model}, {meta['weights']})")
    for name, t in tensors.items():
        extra = f", {int(t.sum())} valid tokens" if name.endswith("text_mask") else ""
        print(f"  {name:22s} {str(t.dtype).replace('torch.', '')} [{', '.join(str(s) for s in t.shape)}]{extra}")
    for n in notes:
        print("  note: " + n)
    hint = "model.text_len=%s " % meta["text_len"] if int(meta["text_len"]) != DEFAULT_LEN[args.model] else ""
    recipe = args.model
    if args.image is not None:
        recipe = "recipes/wan_i2v.lua"
        hint += f"video.width={args.width} video.height={args.height} video.frames={args.frames} "
    print(f"  use: adaspa recipe {recipe} model.weights=... {hint}text.embeds={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
